import { type DType, roundTo } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/tensor/testing";
import { describe, expect, it } from "vitest";
import { runGroup } from "./group.js";
import type { CollectivesArgs } from "./workers/collectives.js";

/** The reduction the CPU collective promises: rank order, each step rounded to the dtype. */
function reduce(values: number[][], dtype: DType, f: (a: number, b: number) => number): number[] {
  return values[0].map((_, i) => values.reduce((acc, v, r) => (r === 0 ? roundTo(dtype, v[i]) : roundTo(dtype, f(acc, roundTo(dtype, v[i])))), 0));
}

describe("CpuCollective (worker threads)", () => {
  const cases: { n: number; dtype: DType; shape: number[]; slotBytes?: number }[] = [
    { n: 2, dtype: "f32", shape: [6, 5] },
    { n: 3, dtype: "f32", shape: [9, 7], slotBytes: 40 }, // many chunks, one of them short
    { n: 4, dtype: "bf16", shape: [4, 3] },
    { n: 3, dtype: "f64", shape: [3] },
    { n: 3, dtype: "i32", shape: [3, 2] },
  ];
  for (const { n, dtype, shape, slotBytes } of cases) {
    it(`every call, ${n} ranks, ${dtype}[${shape.join(", ")}]${slotBytes ? `, ${slotBytes}-byte slots` : ""}`, async () => {
      const rng = seeded(1000 * n + shape[0]);
      const size = shape.reduce((a, b) => a * b, 1);
      const values = Array.from({ length: n }, () =>
        Array.from({ length: size }, () => (dtype === "i32" ? rng.int(2001) - 1000 : roundTo(dtype, rng.normal() * 3))),
      );
      const results = await runGroup<Record<string, number[]>, CollectivesArgs>("collectives", n, { values, shape, dtype }, { slotBytes });
      const sum = reduce(values, dtype, (a, b) => a + b);
      const rows = shape[0] / n;
      const per = size / shape[0];
      results.forEach((got, rank) => {
        expect(got.sum).toEqual(sum);
        expect(got.async).toEqual(sum);
        expect(got.max).toEqual(values[0].map((_, i) => Math.max(...values.map((v) => v[i]))));
        expect(got.min).toEqual(values[0].map((_, i) => Math.min(...values.map((v) => v[i]))));
        if (dtype !== "i32") expect(got.avg).toEqual(sum.map((s) => roundTo(dtype, s / n)));
        expect(got.gather).toEqual(values.flat());
        expect(got.scatter).toEqual(sum.slice(rank * rows * per, (rank + 1) * rows * per));
        expect(got.bcast).toEqual(values[n - 1]);
        expect(got.ring).toEqual(values[(rank + n - 1) % n]);
        const max = values[0].map((_, i) => Math.max(...values.map((v) => v[i])));
        expect(got.maxInPlace).toEqual(max);
        expect(got.maxInPlaceInput).toEqual(max);
        expect(got.asyncInPlace).toEqual(sum);
        expect(got.asyncInPlaceInput).toEqual(sum);
        expect(got.inputAfter).toEqual(values[rank]);
      });
    });
  }

  it("a rank that throws brings the group down with an error naming it", async () => {
    const t0 = performance.now();
    await expect(runGroup("failing", 3, { mode: "throw", bad: 1 })).rejects.toThrow(/rank 1 of 3 failed: Error: rank 1 broke on purpose/);
    expect(performance.now() - t0).toBeLessThan(20_000);
  });

  it("ranks that disagree on the call fail at once, naming both calls", async () => {
    await expect(runGroup("failing", 2, { mode: "mismatch", bad: 0 })).rejects.toThrow(/ranks disagree: .*allGather #2 of 2 f32.*allReduce #2 of 3 f32|ranks disagree: .*allReduce #2 of 3 f32.*allGather #2 of 2 f32/);
  });

  it("a rank that leaves early: the others time out naming it", async () => {
    await expect(runGroup("failing", 3, { mode: "absent", bad: 2 }, { timeoutMs: 1500 })).rejects.toThrow(/waited 1500 ms .*rank\(s\) 2 never reached call #2/);
  });
});
