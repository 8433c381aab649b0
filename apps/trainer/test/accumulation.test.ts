/**
 * Gradient accumulation: k micro-batches of n rows give the update of one batch of k·n rows (f32,
 * CPU, ≤ 1e-5 relative), with ignored targets spread unevenly over the micro-batches.
 */
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { disposeTree, flattenTree, mapTree, valueAndGrad } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { add, mul, scope, tensor } from "@lightning-ts/tensor";
import { accumulateGradients, IGNORE_INDEX, initParams, loss, makeConfig, splitBatch, targetCount, trainStep, type TnlParams } from "@lightning-ts/tnl";
import { describe, expect, it } from "vitest";
import { resolveConfig, sequencesPerStep } from "../src/config.js";
import { train } from "../src/train.js";
import { corpus, quiet, small, tempRoot } from "./helpers.js";

// Odd sizes: 6 rows of 14 tokens, vocabulary 37, 3 heads of 5.
const config = makeConfig({ vocabSize: 37, dModel: 15, numLayers: 2, numHeads: 3, gluDim: 22 });
const ROWS = 6;
const SPAN = 14;
const ids = Int32Array.from({ length: ROWS * SPAN }, (_, i) => (i * 7919 + 13) % 37);
// Ignored targets: none in row 0, most of row 1, some in rows 3 and 4, all but one in row 5.
const labels = ids.map((id, i) => {
  const [r, t] = [Math.floor(i / SPAN), i % SPAN];
  const ignored = (r === 1 && t > 2) || (r === 3 && t % 3 === 0) || (r === 4 && t > 10) || (r === 5 && t !== 7);
  return ignored ? IGNORE_INDEX : id;
});

/** ‖a − b‖ / ‖b‖ over every tensor of two trees with the same paths. */
async function relativeDifference(a: unknown, b: unknown): Promise<number> {
  const fa = flattenTree(a);
  let diff = 0;
  let norm = 0;
  for (const [path, tb] of flattenTree(b)) {
    const [x, y] = [await fa.get(path)!.data(), await tb.data()];
    for (let i = 0; i < y.length; i++) {
      diff += (x[i] - y[i]) ** 2;
      norm += y[i] ** 2;
    }
  }
  return Math.sqrt(diff / norm);
}

const fresh = () => initParams(config, { seed: 5 });
const optimizer = () => new AdamW({ lr: 1e-3, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.1 });

describe("gradient accumulation", () => {
  it("counts the targets of a micro-batch, less the ignored ones", () => {
    const [whole] = splitBatch(ids, ROWS, SPAN, ROWS, labels);
    const parts = splitBatch(ids, ROWS, SPAN, 4, labels);
    expect(parts.map((b) => b.rows)).toEqual([4, 2]);
    expect(targetCount(whole)).toBe(parts.map(targetCount).reduce((a, b) => a + b));
    expect(targetCount({ ids, rows: ROWS, span: SPAN })).toBe(ROWS * (SPAN - 1));
  });

  it("gives the gradient and loss of the whole batch for micro-batches of 1, 2, 3 and 4 rows", async () => {
    const params = fresh();
    const whole = accumulateGradients(params, config, splitBatch(ids, ROWS, SPAN, ROWS, labels));
    for (const micro of [1, 2, 3, 4]) {
      const parts = accumulateGradients(params, config, splitBatch(ids, ROWS, SPAN, micro, labels));
      expect(await relativeDifference(parts.grads, whole.grads), `micro-batch ${micro}`).toBeLessThan(1e-5);
      expect(Math.abs((await parts.loss.item()) / (await whole.loss.item()) - 1)).toBeLessThan(1e-6);
      parts.loss.dispose();
      disposeTree(parts.grads);
    }
    // The mean of per-micro-batch means is another gradient, which the test tells apart.
    const naive = scope(() => {
      const grads = splitBatch(ids, ROWS, SPAN, 2, labels).map((b) => {
        const x = tensor(b.ids, [b.rows, SPAN], { dtype: "i32" });
        const y = tensor(b.labels!, [b.rows, SPAN], { dtype: "i32" });
        return flattenTree(valueAndGrad((p: TnlParams) => loss(p, config, x, { labels: y }))(params).grads);
      });
      return mapTree(whole.grads, (_, path) => mul(grads.map((g) => g.get(path)!).reduce((a, b) => add(a, b)), 1 / grads.length));
    });
    expect(await relativeDifference(naive, whole.grads)).toBeGreaterThan(1e-2);
    disposeTree(naive);
    whole.loss.dispose();
    disposeTree(whole.grads);
    disposeTree(params);
  });

  it("makes the same AdamW update: parameters within 1e-5 after one step", async () => {
    const one = await trainStep(fresh(), config, optimizer(), splitBatch(ids, ROWS, SPAN, ROWS, labels), { gradClip: 1 });
    for (const micro of [1, 4]) {
      const many = await trainStep(fresh(), config, optimizer(), splitBatch(ids, ROWS, SPAN, micro, labels), { gradClip: 1 });
      expect(many.skipped).toBe(false);
      expect(Math.abs(many.gradNorm / one.gradNorm - 1)).toBeLessThan(1e-5);
      expect(await relativeDifference(many.params, one.params), `micro-batch ${micro}`).toBeLessThan(1e-5);
      disposeTree(many.params);
    }
    disposeTree(one.params);
  });

  it("skips a step whose loss is not finite, leaving the parameters and optimizer as they were", async () => {
    const params = fresh();
    const opt = optimizer();
    const out = await trainStep(params, config, opt, splitBatch(ids, ROWS, SPAN, 2), { gradClip: 1, lossFactor: NaN });
    expect(out.skipped).toBe(true);
    expect(out.params).toBe(params);
    expect(Number.isNaN(out.loss)).toBe(true);
    expect(opt.stepCount).toBe(0);
    disposeTree(params);
  });
});

describe("tokens per step", () => {
  const root = tempRoot("trainer-accumulation");
  const data = join(root, "corpus.txt");
  writeFileSync(data, corpus);

  it("sets the sequences per step, and rejects sizes that do not fit", () => {
    const c = resolveConfig({ overrides: { tokensPerStep: 96, seqLen: 24, microBatch: 3 } });
    expect(sequencesPerStep(c)).toBe(4);
    expect(() => resolveConfig({ overrides: { tokensPerStep: 100, seqLen: 24 } })).toThrow(/--tokens-per-step 100 must be a multiple of --seq-len 24/);
    expect(() => resolveConfig({ overrides: { tokensPerStep: 96, seqLen: 24, batchSize: 2 } })).toThrow(/--batch-size 2 and --tokens-per-step 96 disagree/);
    expect(() => resolveConfig({ overrides: { microBatch: 9 } })).toThrow(/--micro-batch 9 exceeds the 8 sequences of a step/);
  });

  it("trains to the same losses with micro-batches of 1 as with the whole batch", async () => {
    const cacheDir = join(root, "cache");
    const run = (microBatch: number, out: string) =>
      train({ ...quiet(cacheDir), config: small(data, join(root, out), { tokensPerStep: 72, batchSize: 3, microBatch, steps: 3, sampleCount: 0 }) });
    const [whole, micro] = [await run(0, "whole"), await run(1, "micro")];
    expect(whole.summary!.tokens_per_step).toBe(72);
    expect(micro.summary!.micro_batch).toBe(1);
    expect(micro.losses.map((l) => l.step)).toEqual([1, 2, 3]);
    micro.losses.forEach((l, i) => expect(Math.abs(l.loss / whole.losses[i].loss - 1)).toBeLessThan(1e-5));
  });
});
