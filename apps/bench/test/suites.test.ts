import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("decode --segments: the plain step and steps with prompt segments, each checked against the CPU kernel before it is timed", async () => {
    const results = await decodeSuite.run(context, { batches: [3], heads: 2, dim: 8, segments: [1, 5] });
    expect(results.map((r) => [r.impl, r.B, r.ok])).toEqual([
      ["lightningStep", 3, true],
      ["lightningStep, queued", 3, true],
      ["lightningStep+1 segments, queued", 3, true],
      ["lightningStep+5 segments, queued", 3, true],
    ]);
    for (const r of results) expect(r.gbps).toBeGreaterThan(0);
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

  it("model --preset: accumulated bf16 training steps with the PERFORMANCE.md fields, a profile per T", async () => {
    const profile = join(mkdtempSync(join(tmpdir(), "bench-model-")), "profile.json");
    const tiny = { preset: "tnl-385m-bench", dModel: 32, layers: 2, heads: 2, vocab: 128, gluDim: 48, contexts: [], genTokens: 1 };
    const results = await modelSuite.run(context, { ...tiny, tokens: 64, t: [16, 64], microBatchTokens: 32, steps: 2, dtype: "bf16", peakTflops: 1, profile });
    expect(results.map((r) => [r.impl, r.T, r.B, r.micro_batch_tokens, r.dtype, r.ok])).toEqual([
      ["train step", 16, 4, 32, "bf16", true],
      ["train step", 64, 1, 64, "bf16", true], // a micro-batch holds at least one row
    ]);
    for (const r of results) {
      expect(r.params).toBe(2 * 128 * 32 + 2 * (5 * 32 * 32 + 3 * 32 * 48) + 32); // untied head, LRPE on layer 0
      expect(r.tokens_per_step).toBe(64);
      expect(r.tokens_per_s).toBeGreaterThan(0);
      expect(r.mfu).toBeCloseTo((6 * (r.params as number) * r.tokens_per_s!) / 1e12, 12);
      expect(r.mfu_basis).toBe("--peak-tflops 1");
      expect(r.peak_gib).toBeGreaterThan(0);
      expect(Math.abs((r.first_loss as number) - Math.log(128))).toBeLessThan(0.1 * Math.log(128));
      expect(Number.isFinite(r.loss)).toBe(true);
    }
    const written = JSON.parse(readFileSync(profile, "utf8")) as { profiles: { T: number; profile: { rows: { op: string; calls: number }[] } }[] };
    expect(written.profiles.map((p) => p.T)).toEqual([16, 64]);
    const ops = (i: number) => Object.fromEntries(written.profiles[i].profile.rows.map((r) => [r.op, r.calls]));
    // Two micro-batches at T = 16, one at T = 64: one embedding backward each.
    expect(ops(0).embeddingBackward).toBe(2);
    expect(ops(1).embeddingBackward).toBe(1);
    expect(ops(0).lightningAttention).toBeGreaterThan(0);
  });

  it("model --preset: a case that fails is a row with its error, and the next case runs", async () => {
    const tiny = { preset: "tnl-385m-bench", dModel: 32, layers: 1, heads: 2, vocab: 64, gluDim: 48, contexts: [], genTokens: 1 };
    // T = 1 has no target to predict: the training step refuses it.
    const results = await modelSuite.run(context, { ...tiny, tokens: 32, t: [1, 32], steps: 1 });
    expect(results.map((r) => [r.T, r.ok])).toEqual([[1, false], [32, true]]);
    expect(results[0].error).toMatch(/no targets: 1 micro-batch\(es\) of rows of 1 token/);
    expect(results[1].mfu).toBeNull();
    expect(results[1].dtype).toBe("f32");
  });

  it("model: the --preset options are refused without --preset", async () => {
    await expect(modelSuite.run(context, { dtype: "bf16", microBatchTokens: 16, contexts: [], genTokens: 1 })).rejects.toThrow(/--dtype, --micro-batch-tokens apply only with --preset/);
  });
});
