/** The page's loader from bytes, in Node on the CPU backend: the same parameters as the file, and clear errors. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configToHf, disposeParams, initParams, makeConfig, namedParameters, saveCheckpoint } from "@lightning-ts/tnl";
import { afterAll, describe, expect, it } from "vitest";
import { loadModelFromBytes, parseConfig } from "../src/load.js";

describe("loadModelFromBytes", () => {
  const dir = mkdtempSync(join(tmpdir(), "lightning-web-load-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const seed = Date.now() % 10_000;
  // Odd sizes, fresh each run.
  const config = makeConfig({ vocabSize: 37 + (seed % 11), dModel: 12, numLayers: 2, numHeads: 3, gluDim: 21 + (seed % 5) });

  it("reads a saved checkpoint: f32 bit for bit, bf16 rounded to nearest", async () => {
    const params = initParams(config, { seed });
    for (const dtype of ["f32", "bf16"] as const) {
      const sub = join(dir, dtype);
      await saveCheckpoint(sub, { config, params }, { dtype });
      const model = loadModelFromBytes(readFileSync(join(sub, "config.json"), "utf8"), readFileSync(join(sub, "model.safetensors")));
      expect(model.config).toEqual(parseConfig(readFileSync(join(sub, "config.json"), "utf8")));
      const want = namedParameters(config, params);
      const got = namedParameters(model.config, model.params);
      expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
      for (const [name, t] of Object.entries(got)) {
        expect(t.dtype, name).toBe("f32");
        const w = await want[name].data();
        // bf16 keeps 8 significant bits: rounding to nearest is within half a unit of the last.
        if (dtype === "f32") expect(await t.data(), name).toEqual(w);
        else for (const [i, x] of (await t.data()).entries()) expect(Math.abs(x - w[i]), name).toBeLessThanOrEqual(Math.abs(w[i]) * 2 ** -8);
      }
      disposeParams(model.params);
    }
    disposeParams(params);
  });

  it("names the file and what was wrong", async () => {
    const params = initParams(config, { seed });
    await saveCheckpoint(dir, { config, params });
    disposeParams(params);
    const configText = readFileSync(join(dir, "config.json"), "utf8");
    const weights = readFileSync(join(dir, "model.safetensors"));
    expect(() => loadModelFromBytes("{ nope", weights)).toThrow(/config\.json: expected JSON/);
    expect(() => loadModelFromBytes(configText, weights.subarray(0, 5))).toThrow(/model\.safetensors: expected a safetensors file/);
    const wider = JSON.stringify(configToHf({ ...config, vocabSize: config.vocabSize + 3 }));
    expect(() => loadModelFromBytes(wider, weights)).toThrow(new RegExp(`model\\.safetensors: expected "[a-z_.]+" of shape \\[${config.vocabSize + 3}, 12\\]`));
  });
});
