/**
 * The dtype checkpoints load in: by backend and stored dtype when the caller names none (judged
 * on fake backends that only report a name and capabilities), the caller's choice otherwise, and a
 * clear error for a dtype the backend lacks. On the CPU, loadCheckpoint and `tnl info` follow it;
 * packages/webgpu/test/tnl-load-dtype.test.ts loads f16 on a real WebGPU adapter.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Backend } from "@lightning-ts/tensor";
import { collectTensors } from "@lightning-ts/tensor";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../src/cli-main.js";
import { defaultLoadDType, disposeParams, initParams, loadCheckpoint, loadDType, makeConfig, saveCheckpoint, TnlInputError } from "../src/index.js";

type FakeBackend = Pick<Backend, "name" | "capabilities">;

function fake(name: string, dtypes: string[], features: string[] = []): FakeBackend {
  return { name, capabilities: { device: `fake ${name}`, dtypes, syncRead: false, features, limits: {} } } as unknown as FakeBackend;
}

const ALL = ["f32", "f16", "bf16", "i32", "u8"];
const cuda = fake("cuda", ALL);
const webgpuF16 = fake("webgpu", ALL, ["subgroups", "shader-f16"]);
const webgpuPlain = fake("webgpu", ALL, ["subgroups"]);
const cpu = fake("cpu", [...ALL, "f64"]);

describe("defaultLoadDType", () => {
  it("cuda: bf16 for checkpoints with bf16 or f16 weights, f32 for f32 ones", () => {
    expect(defaultLoadDType(cuda, ["BF16"])).toBe("bf16");
    expect(defaultLoadDType(cuda, ["F16"])).toBe("bf16");
    expect(defaultLoadDType(cuda, ["BF16", "F32"])).toBe("bf16");
    expect(defaultLoadDType(cuda, ["F32"])).toBe("f32");
    // A device without bf16 falls back to f32 rather than failing.
    expect(defaultLoadDType(fake("cuda", ["f32", "f16", "i32"]), ["BF16"])).toBe("f32");
  });

  it("webgpu: f16 where the adapter has shader-f16, whatever the file stores; else f32", () => {
    for (const stored of [["F32"], ["BF16"], ["F16"]]) {
      expect(defaultLoadDType(webgpuF16, stored)).toBe("f16");
      expect(defaultLoadDType(webgpuPlain, stored)).toBe("f32");
    }
  });

  it("the CPU and other backends: f32", () => {
    for (const stored of [["F32"], ["BF16"], ["F16"]]) {
      expect(defaultLoadDType(cpu, stored)).toBe("f32");
      expect(defaultLoadDType(fake("metal", ALL, ["shader-f16"]), stored)).toBe("f32");
    }
  });
});

describe("loadDType", () => {
  it("a dtype the caller names wins on every backend", () => {
    expect(loadDType(cuda, ["BF16"], "f32")).toBe("f32");
    expect(loadDType(webgpuF16, ["F32"], "bf16")).toBe("bf16");
    expect(loadDType(webgpuPlain, ["F32"], "f16")).toBe("f16");
    expect(loadDType(cpu, ["F32"], "bf16")).toBe("bf16");
    expect(loadDType(cpu, ["BF16"], undefined)).toBe("f32");
    expect(loadDType(cuda, ["BF16"], null)).toBe("bf16");
  });

  it("a dtype the backend lacks, or no model dtype at all, is an error naming the flag and the backend", () => {
    const tiny = fake("tinygpu", ["f32", "i32"]);
    expect(() => loadDType(tiny, ["BF16"], "bf16", "--dtype")).toThrow(TnlInputError);
    expect(() => loadDType(tiny, ["BF16"], "bf16", "--dtype")).toThrow(/--dtype bf16: the tinygpu backend has no bf16 \(it has f32, i32; usable here: f32\)/);
    expect(() => loadDType(cpu, ["F32"], "f64")).toThrow(/dtype must be one of bf16, f16, f32, got "f64"/);
  });
});

describe("loadCheckpoint and tnl on the CPU", () => {
  const tmp = mkdtempSync(join(tmpdir(), "tnl-load-dtype-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  // Odd sizes: vocabulary 37, width 18 over 3 heads of 6, channel mixer 29.
  const config = makeConfig({ vocabSize: 37, dModel: 18, numLayers: 2, numHeads: 3, gluDim: 29 });

  it("a bf16 checkpoint loads as f32 by default and as bf16 when asked; a dtype the CPU cannot run is refused", async () => {
    const params = initParams(config, { seed: 91, dtype: "bf16" });
    const dir = join(tmp, "bf16");
    await saveCheckpoint(dir, { config, params });
    disposeParams(params);
    const byDefault = await loadCheckpoint(dir);
    expect(new Set(collectTensors(byDefault.params).map((t) => t.dtype))).toEqual(new Set(["f32"]));
    disposeParams(byDefault.params);
    const asked = await loadCheckpoint(dir, { dtype: "bf16" });
    expect(new Set(collectTensors(asked.params).map((t) => t.dtype))).toEqual(new Set(["bf16"]));
    disposeParams(asked.params);
    await expect(loadCheckpoint(dir, { dtype: "f64" as "f32" })).rejects.toThrow(/loadCheckpoint dtype must be one of bf16, f16, f32, got "f64"/);
    const out: string[] = [];
    await main(["info", "--model", dir, "--json"], { stdout: (t) => out.push(t), stderr: () => {} });
    expect(JSON.parse(out.join("")) as unknown).toMatchObject({ storedDtypes: ["BF16"], loadDtype: "f32" });
  });
});
