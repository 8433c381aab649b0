/**
 * Gradient accumulation under `dataParallel(...).valueAndGrad`: the earlier micro-batches summed
 * locally and passed as `accumulated` give the plain twin's result bit for bit (local sum, then
 * `syncGradients`) with the bucket all-reduces started inside the last backward pass, and the f64
 * sum of every rank's micro-batch gradients within rounding.
 */
import { valueAndGrad } from "@lightning-ts/autograd";
import { CpuCollective, createCpuGroup, getBackend, mul, sum, type Tensor, zeros } from "@lightning-ts/tensor";
import { assertClose, seeded } from "@lightning-ts/tensor/testing";
import { describe, expect, it } from "vitest";
import { dataParallel } from "../src/index.js";
import { runGroup } from "./group.js";
import type { DpAccumulateArgs, DpAccumulateResult } from "./workers/dp-accumulate.js";

describe("dataParallel.valueAndGrad with accumulated micro-batches", () => {
  for (const { n, microBatches } of [
    { n: 2, microBatches: 3 },
    { n: 3, microBatches: 2 },
    { n: 2, microBatches: 1 },
  ]) {
    it(`${n} ranks, ${microBatches} micro-batch(es): the plain twin's sums bit for bit, all-reduced during the last backward pass`, async () => {
      // 16-byte buckets: each of h, w, u in a bucket of its own (h first: the backward finishes it first).
      const ranks = await runGroup<DpAccumulateResult, DpAccumulateArgs>("dp-accumulate", n, { microBatches, bucketBytes: 16 });
      for (const [r, got] of ranks.entries()) {
        expect(got.overlapped, `rank ${r}`).toEqual(got.plain);
        // Half-precision gradients add up in f32; a lone micro-batch keeps the parameter's dtype.
        expect(got.overlapped.h.dtype).toBe(microBatches > 1 ? "f32" : "bf16");
        expect(Object.keys(got.overlapped).sort()).toEqual(["h", "u", "w"]);
        // One all-reduce per bucket per step; the first starts before the pass reaches w's first use.
        expect(got.events.filter((e) => e === "async")).toHaveLength(3);
        expect(got.events.indexOf("async"), got.events.join(" ")).toBeLessThan(got.events.indexOf("marker"));
        expect(got.plainEvents, "the plain twin all-reduces after the backward pass").toEqual(["marker", "async", "async", "async"]);
        // The oracle: every rank's every micro-batch, summed in f64.
        for (const [path, { dtype, values }] of Object.entries(got.overlapped)) {
          const want = values.map((_, i) => ranks.reduce((s, other) => s + other.local.reduce((t, m) => t + m[path][i], 0), 0));
          const tol = dtype === "bf16" ? 1e-2 : 1e-5;
          assertClose(values, want, { rtol: tol, atol: tol, label: `rank ${r}: summed gradient of ${path}` });
        }
      }
      // u has no gradient from the last micro-batch: only the accumulated part (zeros for one micro-batch).
      expect(ranks[0].overlapped.u.values.some((v) => v !== 0)).toBe(microBatches > 1);
    });
  }

  it("refuses accumulated gradients that do not match the parameters, naming the path", () => {
    const c = new CpuCollective(createCpuGroup(1), 0, getBackend());
    const rng = seeded(11);
    const params = { w: rng.tensor([3, 4]), h: rng.tensor([5], { dtype: "bf16" }) };
    const fn = (p: { w: Tensor; h: Tensor }) => sum(mul(p.w, p.w));
    const run = (accumulated: unknown) => dataParallel(c).valueAndGrad(fn, { accumulated: accumulated as never })(params);
    expect(() => run({ w: zeros([3, 4]) })).toThrow(/options\.accumulated has no gradient at 'h': expected bf16 or f32\[5\] like the parameter/);
    expect(() => run({ w: zeros([4, 3]), h: zeros([5]) })).toThrow(/options\.accumulated at 'w': expected f32\[3, 4\] like the parameter, got f32\[4, 3\]/);
    expect(() => run({ w: zeros([3, 4]), h: zeros([5], { dtype: "f16" }) })).toThrow(/at 'h': expected bf16 or f32\[5\] like the parameter, got f16\[5\]/);
    expect(() => run({ w: zeros([3, 4]), h: zeros([5]), b: zeros([2]) })).toThrow(/has a tensor at 'b', where the differentiated arguments have no float parameter/);
    // A matching tree works; the sum of a plain valueAndGrad and the accumulated part.
    const { value, grads } = dataParallel(c).valueAndGrad(fn, { accumulated: { w: params.w, h: zeros([5], { dtype: "bf16" }) } })(params);
    const plain = valueAndGrad(fn)(params);
    const w = params.w.dataSync();
    assertClose(Array.from(grads.w!.dataSync()), Array.from(plain.grads.w!.dataSync(), (g, i) => g + w[i]), { rtol: 1e-6, atol: 1e-6, label: "w" });
    expect(grads.h!.dtype).toBe("f32");
    expect(value.dataSync()[0]).toBe(plain.value.dataSync()[0]);
    c.dispose();
  });
});
