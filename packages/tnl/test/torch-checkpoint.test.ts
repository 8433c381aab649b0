/**
 * The tnl-tiny fixture as torch.save checkpoints (single and sharded, f32 and bf16, tied, strided,
 * ZIP64), written by tools/fixtures/make-torch-pickles.py from the fixture's safetensors with the
 * Python standard library: loaded directly and converted, they give the safetensors model's logits
 * to the bit. tools/fixtures/make-torch-checkpoints.py writes the same files with real torch; set
 * TNL_TORCH_CHECKPOINTS to its output directory to run these tests on those instead.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readSafetensorsHeader } from "@lightning-ts/tensor/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../src/cli-main.js";
import {
  convertCheckpoint,
  disposeParams,
  forward,
  loadCheckpoint,
  namedParameters,
  saveCheckpoint,
  TorchCheckpoint,
  type TnlModel,
} from "../src/index.js";
import { FIXTURE_DIR, fixture, maxAbsDiff, readF32 } from "./fixture.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const SCRIPT = join(ROOT, "tools", "fixtures", "make-torch-pickles.py");
const python = spawnSync("python3", ["--version"]);
const given = process.env.TNL_TORCH_CHECKPOINTS;
const reason = given ? "" : python.status === 0 ? "" : "python3 is not available to write the .bin checkpoints";
if (reason) console.log(`skipping the tnl-tiny .bin tests: ${reason}`);

/** Variant → arguments of make-torch-pickles.py convert (the same names make-torch-checkpoints.py writes). */
const VARIANTS: Record<string, string[]> = {
  "f32": [],
  "f32-sharded": ["--shards", "3"],
  "f32-tied": ["--tied"],
  "f32-transposed": ["--transposed"],
  "bf16": ["--dtype", "bf16"],
  "bf16-sharded": ["--dtype", "bf16", "--shards", "2", "--zip64"],
  "bf16-tied": ["--dtype", "bf16", "--tied"],
};

const tmp = mkdtempSync(join(tmpdir(), "tnl-torch-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const bin = (variant: string) => join(given ?? tmp, variant);

let reference: TnlModel;
beforeAll(async () => {
  if (reason) return;
  if (!given) {
    for (const [variant, args] of Object.entries(VARIANTS)) {
      const r = spawnSync("python3", [SCRIPT, "convert", "--safetensors", join(FIXTURE_DIR, "model.safetensors"), "--config", join(FIXTURE_DIR, "config.json"), "--out", bin(variant), ...args], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`make-torch-pickles.py ${variant} failed: ${r.stderr}`);
    }
  }
  reference = await loadCheckpoint(FIXTURE_DIR);
  // Seven Python runs of well under a second each alone; `pnpm test` runs every package's tests at
  // once, and on a 2-core machine they have taken over a minute together.
}, 300_000);
afterAll(() => reference && disposeParams(reference.params));

/** The reference model as the variant stores it: tied (lm_head = embedding) and/or rounded to bf16 through a safetensors file. */
async function referenceFor(variant: string): Promise<TnlModel> {
  const dir = join(tmp, `ref-${variant}`);
  const tied = { config: { ...reference.config, tieWordEmbeddings: true }, params: { embed: reference.params.embed, layers: reference.params.layers } };
  await saveCheckpoint(dir, variant.includes("tied") ? tied : reference, { dtype: variant.startsWith("bf16") ? "bf16" : "f32" });
  return loadCheckpoint(dir);
}

async function bytesOf(m: TnlModel): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const [name, t] of Object.entries(namedParameters(m.config, m.params))) out[name] = await t.bytes();
  return out;
}

function logits(m: TnlModel): Float32Array {
  const out = forward(m.params, m.config, fixture.input_ids);
  const data = out.dataSync() as Float32Array;
  out.dispose();
  return data;
}

describe.skipIf(Boolean(reason))("tnl-tiny from torch.save checkpoints", () => {
  for (const variant of Object.keys(VARIANTS)) {
    it(`${variant}: loads directly, with the safetensors model's parameters and logits to the bit`, async () => {
      const want = await referenceFor(variant);
      const got = await loadCheckpoint(bin(variant));
      expect(got.config.tieWordEmbeddings).toBe(variant.includes("tied"));
      expect(got.params.lmHead === undefined).toBe(variant.includes("tied"));
      expect(await bytesOf(got)).toEqual(await bytesOf(want));
      expect(logits(got)).toEqual(logits(want));
      if (variant === "f32") expect(maxAbsDiff(logits(got), readF32("logits.bin"))).toBeLessThanOrEqual(1e-4);
      disposeParams(got.params);
      disposeParams(want.params);
    });
  }

  it("bf16 stays bf16: loaded as bf16 the parameters are the stored bits", async () => {
    const got = await loadCheckpoint(bin("bf16"), { dtype: "bf16" });
    const ckpt = await TorchCheckpoint.open(join(bin("bf16"), "pytorch_model.bin"));
    for (const [name, t] of Object.entries(namedParameters(got.config, got.params))) {
      expect(t.dtype).toBe("bf16");
      expect(await t.bytes(), name).toEqual((await ckpt.readRaw(name)).bytes);
    }
    await ckpt.close();
    disposeParams(got.params);
  });

  it("a weight file or an index may be named instead of the directory", async () => {
    const a = await loadCheckpoint(join(bin("f32"), "pytorch_model.bin"));
    const b = await loadCheckpoint(join(bin("f32-sharded"), "pytorch_model.bin.index.json"));
    expect(logits(a)).toEqual(logits(b));
    disposeParams(a.params);
    disposeParams(b.params);
  });

  it("convert: single → model.safetensors, sharded → as many shards and an index, dtypes kept, tied head dropped", async () => {
    for (const variant of ["f32-sharded", "bf16", "bf16-tied"]) {
      const out = join(tmp, `converted-${variant}`);
      const r = await convertCheckpoint(bin(variant), out);
      const files = readdirSync(out).sort();
      if (variant === "f32-sharded") {
        expect(r.files).toEqual(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"]);
      } else {
        expect(r.files).toEqual(["model.safetensors"]);
        const header = await readSafetensorsHeader(join(out, "model.safetensors"));
        expect(new Set(header.entries.map((e) => e.dtype))).toEqual(new Set(["BF16"]));
        expect(header.metadata.format).toBe("pt");
        expect(header.entries.some((e) => e.name === "lm_head.weight")).toBe(variant !== "bf16-tied");
      }
      expect(files).toContain("config.json");
      expect(readFileSync(join(out, "config.json"), "utf8")).toBe(readFileSync(join(bin(variant), "config.json"), "utf8"));
      expect(files.some((f) => f.endsWith(".bin"))).toBe(false);
      const [a, b] = [await loadCheckpoint(out, { dtype: "bf16" }), await loadCheckpoint(bin(variant), { dtype: "bf16" })];
      expect(await bytesOf(a)).toEqual(await bytesOf(b));
      disposeParams(a.params);
      disposeParams(b.params);
    }
  });

  it("convert refuses a directory that is already safetensors", async () => {
    await expect(convertCheckpoint(FIXTURE_DIR, join(tmp, "nothing"))).rejects.toThrow(/is already safetensors \(model.safetensors\); nothing to convert/);
  });
});

async function tnl(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
  return { code, out, err };
}

describe.skipIf(Boolean(reason))("tnl with .bin checkpoints", () => {
  it("info, logits and convert", async () => {
    const info = await tnl("info", "--model", bin("bf16-sharded"));
    expect(info).toMatchObject({ code: 0, err: "" });
    expect(info.out).toMatch(/weights +2 file\(s\), .* stored as BF16/);
    const ids = join(tmp, "ids.json");
    writeFileSync(ids, JSON.stringify(fixture.input_ids));
    const out = join(tmp, "logits.bin");
    expect((await tnl("logits", "--model", bin("f32-transposed"), "--ids", ids, "--out", out)).code).toBe(0);
    const buf = readFileSync(out);
    expect(maxAbsDiff(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4), readF32("logits.bin"))).toBeLessThanOrEqual(1e-4);
    const converted = join(tmp, "cli-converted");
    const r = await tnl("convert", bin("f32-sharded"), converted);
    expect(r).toMatchObject({ code: 0, err: "" });
    expect(r.out).toMatch(/^wrote model-00001-of-00003.safetensors, .*model.safetensors.index.json to .*: 13 tensors, 552.3 KiB of F32; copied config.json\n$/);
    expect(existsSync(join(converted, "model.safetensors.index.json"))).toBe(true);
  });
});

describe("tnl presets and bad .bin input", () => {
  it("presets lists the published shapes with parameters, bf16 memory and state per sequence", async () => {
    const r = await tnl("presets");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^preset +shape +params +bf16 +state\/seq +published as\n/);
    expect(r.out).toMatch(/tnl-1b +2048×16L×16H, glu 5632, vocab 64000 +1\.02B +1\.90 GiB +17\.00 MiB +TransNormerLLM-1B; one bf16 pytorch_model.bin/);
    expect(r.out).toMatch(/tnl3-15b +5120×42L×40H, glu 15360, vocab 100280 +14\.83B .*cannot be loaded/);
    const json = JSON.parse((await tnl("presets", "--json")).out) as { name: string }[];
    expect(json.map((m) => m.name)).toContain("tnl3-15b");
  });

  it("a malicious or truncated .bin is one clear line", async () => {
    const dir = join(tmp, "evil");
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(FIXTURE_DIR, "config.json"), join(dir, "config.json"));
    const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "torch");
    copyFileSync(join(fixtures, "evil-posix-system.bin"), join(dir, "pytorch_model.bin"));
    const r = await tnl("info", "--model", dir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^tnl: .*pytorch_model.bin: data.pkl: global posix.system is not allowed .*nothing in it was executed\n$/);
    copyFileSync(join(fixtures, "truncated.bin"), join(dir, "pytorch_model.bin"));
    expect((await tnl("convert", dir, join(tmp, "x"))).err).toMatch(/^tnl: .*pytorch_model.bin: not a ZIP archive, or truncated/);
  });
});
