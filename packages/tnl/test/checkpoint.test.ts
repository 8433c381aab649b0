import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { roundTo } from "@lightning-ts/tensor";
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from "@lightning-ts/tensor/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  disposeParams,
  forward,
  initParams,
  inspectCheckpoint,
  loadCheckpoint,
  namedParameters,
  preset,
  saveCheckpoint,
  TnlCheckpointError,
  type TnlModel,
} from "../src/index.js";
import { FIXTURE_DIR, fixture, maxAbsDiff } from "./fixture.js";

const tmp = mkdtempSync(join(tmpdir(), "tnl-ckpt-"));
const dir = (name: string) => join(tmp, name);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let model: TnlModel;
beforeAll(async () => {
  model = await loadCheckpoint(FIXTURE_DIR);
});
afterAll(() => disposeParams(model.params));

async function values(m: TnlModel): Promise<Record<string, Float32Array>> {
  const out: Record<string, Float32Array> = {};
  for (const [name, t] of Object.entries(namedParameters(m.config, m.params))) out[name] = (await t.data()) as Float32Array;
  return out;
}

describe("checkpoints", () => {
  it("f32 round trip is exact, keeps HF names and writes a loadable config", async () => {
    await saveCheckpoint(dir("f32"), model);
    const back = await loadCheckpoint(dir("f32"));
    expect(back.config).toEqual({ ...model.config, torchDtype: "float32", extra: expect.any(Object) as unknown });
    expect(await values(back)).toEqual(await values(model));
    const header = await readSafetensorsHeader(join(dir("f32"), "model.safetensors"));
    expect(header.metadata.format).toBe("pt"); // transformers refuses safetensors without it
    expect(header.entries.map((e) => e.name).sort()).toEqual(Object.keys(namedParameters(model.config, model.params)).sort());
    const json: unknown = JSON.parse(readFileSync(join(dir("f32"), "config.json"), "utf8"));
    expect(json).toMatchObject({ model_type: "transnormer", torch_dtype: "float32", architectures: ["TransnormerForCausalLM"] });
    disposeParams(back.params);
  });

  for (const [dtype, stored] of [["bf16", "BF16"], ["f16", "F16"]] as const) {
    it(`${dtype} round trip stores ${stored} and loads the rounded values`, async () => {
      await saveCheckpoint(dir(dtype), model, { dtype });
      const info = await inspectCheckpoint(dir(dtype));
      expect(info.dtypes).toEqual([stored]);
      const back = await loadCheckpoint(dir(dtype));
      const [want, got] = [await values(model), await values(back)];
      for (const name of Object.keys(want)) {
        expect(Array.from(got[name]), name).toEqual(Array.from(want[name], (x) => roundTo(dtype, x)));
      }
      // Still the same model, to bf16/f16 precision.
      const a = forward(model.params, model.config, fixture.prompt_ids);
      const b = forward(back.params, back.config, fixture.prompt_ids);
      expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBeLessThan(dtype === "bf16" ? 0.5 : 0.05);
      a.dispose();
      b.dispose();
      disposeParams(back.params);
    });
  }

  it("sharded round trip, and a re-save replaces the old layout", async () => {
    await saveCheckpoint(dir("sharded"), model);
    await saveCheckpoint(dir("sharded"), model, { maxShardBytes: 100_000 });
    const files = readdirSync(dir("sharded")).sort();
    expect(files).not.toContain("model.safetensors");
    expect(files).toContain("model.safetensors.index.json");
    expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(3);
    const back = await loadCheckpoint(dir("sharded"));
    expect(await values(back)).toEqual(await values(model));
    disposeParams(back.params);
  });

  it("a tied model omits lm_head and loads back tied", async () => {
    const config = preset("tnl-micro");
    const tied = { config, params: initParams(config, { seed: 3 }) };
    await saveCheckpoint(dir("tied"), tied);
    const header = await readSafetensorsHeader(join(dir("tied"), "model.safetensors"));
    expect(header.entries.map((e) => e.name)).not.toContain("lm_head.weight");
    const back = await loadCheckpoint(dir("tied"));
    expect(back.params.lmHead).toBeUndefined();
    expect(await values(back)).toEqual(await values(tied));
    disposeParams(tied.params);
    disposeParams(back.params);
  });
});

describe("checkpoint errors", () => {
  /** A fresh copy of the fixture's config.json and model.safetensors. */
  function copyFixture(name: string): string {
    const d = dir(name);
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
    for (const f of ["config.json", "model.safetensors"]) copyFileSync(join(FIXTURE_DIR, f), join(d, f));
    return d;
  }

  /** A copy of the fixture with `edit` applied to its config.json. */
  function variant(name: string, edit: (json: Record<string, unknown>) => void): string {
    const d = copyFixture(name);
    const json = JSON.parse(readFileSync(join(d, "config.json"), "utf8")) as Record<string, unknown>;
    edit(json);
    writeFileSync(join(d, "config.json"), JSON.stringify(json));
    return d;
  }

  it("missing directory, config or weights", async () => {
    await expect(loadCheckpoint(dir("nope"))).rejects.toThrow(/model directory .*nope does not exist/);
    const noConfig = copyFixture("noconfig");
    rmSync(join(noConfig, "config.json"));
    await expect(loadCheckpoint(noConfig)).rejects.toThrow(/config.json is missing/);
    const noWeights = copyFixture("noweights");
    rmSync(join(noWeights, "model.safetensors"));
    await expect(loadCheckpoint(noWeights)).rejects.toThrow(/has no model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json/);
    writeFileSync(join(noWeights, "pytorch_model.bin"), "");
    await expect(loadCheckpoint(noWeights)).rejects.toThrow(/pytorch_model.bin: not a ZIP archive, or truncated/);
  });

  it("tensor shapes that do not match the config", async () => {
    const d = variant("glu", (j) => (j.glu_dim = 128));
    await expect(loadCheckpoint(d)).rejects.toThrow(/"model.layers.0.channel_mixer.l1.weight" is \[176, 64\] but config.json implies \[128, 64\]/);
    await expect(inspectCheckpoint(d)).rejects.toThrow(TnlCheckpointError);
  });

  it("missing and unexpected tensors", async () => {
    // lm_head in a tied checkpoint is ignored, as HF does.
    const tied = await loadCheckpoint(variant("tied", (j) => (j.tie_word_embeddings = true)));
    expect(tied.params.lmHead).toBeUndefined();
    disposeParams(tied.params);
    const extra = variant("extra", (j) => (j.linear_use_lrpe_list = [0, 0]));
    await expect(loadCheckpoint(extra)).rejects.toThrow(/tensors this config does not use: model.layers.0.token_mixer.lrpe.theta/);
    const d = copyFixture("nohead");
    const { tensors } = await readSafetensors(join(d, "model.safetensors"));
    delete tensors["lm_head.weight"];
    await writeSafetensors(join(d, "model.safetensors"), tensors, { format: "pt" });
    Object.values(tensors).forEach((t) => t.dispose());
    await expect(loadCheckpoint(d)).rejects.toThrow(/lacks "lm_head.weight" \(config.json says tie_word_embeddings: false\)/);
  });

  it("a config it cannot honour", async () => {
    const d = variant("gate", (j) => (j.gate_dim = 16));
    await expect(loadCheckpoint(d)).rejects.toThrow(/gate_dim/);
    expect(existsSync(d)).toBe(true);
  });
});
