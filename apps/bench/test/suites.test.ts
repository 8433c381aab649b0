import { describe, expect, it } from "vitest";
import { decodeSuite } from "../src/suites/decode.js";
import { modelSuite } from "../src/suites/model.js";

const context = { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 1 }, log: () => {} };

describe("decode and model suites", () => {
  it("decode: checks each batch size against float64, then reports time and bandwidth", async () => {
    const results = await decodeSuite.run(context, { batches: [1, 3], heads: 2, dim: 8 });
    expect(results.map((r) => [r.B, r.ok])).toEqual([[1, true], [3, true]]);
    for (const r of results) {
      expect(r.rel_err).toBeLessThan(1e-6);
      expect(r.gbps).toBeGreaterThan(0);
    }
  });

  it("model: training steps and generation, each checked against the same model in float64", async () => {
    const results = await modelSuite.run(context, { dModel: 16, layers: 2, heads: 2, vocab: 64, tokens: 64, t: [16, 64], contexts: [8, 40], genTokens: 3 });
    expect(results.map((r) => [r.impl, r.T, r.ok])).toEqual([
      ["train step", 16, true],
      ["train step", 64, true],
      ["generate", 8, true],
      ["generate", 40, true],
    ]);
    for (const r of results) expect(r.tokens_per_s).toBeGreaterThan(0);
  });
});
