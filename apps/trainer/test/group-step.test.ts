/**
 * The group step's overlapped gradient all-reduce on CPU ranks (worker threads, the CPU
 * collective): the bucket all-reduces start inside the last micro-batch's backward pass (matmuls of
 * that pass still run after the first one), once per bucket per step, and the losses, gradient
 * norms, skipped steps and parameters after the steps are those of the plain twin that all-reduces
 * after the backward pass, bit for bit: data parallel, sequence parallel, both, and ZeRO-1, with
 * gradient clipping active and a non-finite step.
 */
import { createCpuGroup } from "@lightning-ts/tensor";
import { runCpuGroup } from "@lightning-ts/tensor/node";
import { seeded } from "@lightning-ts/tensor/testing";
import { describe, expect, it } from "vitest";
import type { GroupStepArgs, GroupStepRun } from "./workers/group-step-rank.js";

const hooks = new URL("../../../packages/parallel/test/ts-hooks.mjs", import.meta.url);

function group(worldSize: number, args: GroupStepArgs): Promise<{ overlapped: GroupStepRun; plain: GroupStepRun }[]> {
  return runCpuGroup(new URL("./workers/group-step-rank.ts", import.meta.url), { worldSize, args, preload: [hooks], timeoutMs: 60_000 });
}

/** `steps` global batches of `rows` rows of T + 1 token ids below 37 (the model's vocabulary). */
function batches(seed: number, steps: number, rows: number, T: number): number[][][] {
  const rng = seeded(seed);
  return Array.from({ length: steps }, () => Array.from({ length: rows }, () => Array.from({ length: T + 1 }, () => rng.int(37))));
}

const cases: { label: string; n: number; dp: number; rows: number; T: number; microBatch: number; zero?: boolean }[] = [
  // 5 rows over 2 ranks (3 + 2), micro-batches of 2: 2 micro-batches on each rank.
  { label: "2 data-parallel ranks", n: 2, dp: 2, rows: 5, T: 11, microBatch: 2 },
  // 7 rows over 3 ranks (3 + 2 + 2), micro-batches of 1.
  { label: "3 data-parallel ranks", n: 3, dp: 3, rows: 7, T: 9, microBatch: 1 },
  { label: "2 sequence-parallel ranks", n: 2, dp: 1, rows: 3, T: 14, microBatch: 2 },
  { label: "3 sequence-parallel ranks", n: 3, dp: 1, rows: 2, T: 15, microBatch: 1 },
  { label: "2 × 2 data and sequence parallel", n: 4, dp: 2, rows: 3, T: 10, microBatch: 1 },
  { label: "3 ZeRO-1 data-parallel ranks", n: 3, dp: 3, rows: 6, T: 7, microBatch: 1, zero: true },
];

describe("the group step all-reduces gradient buckets during the last backward pass", () => {
  for (const { label, n, dp, rows, T, microBatch, zero = false } of cases) {
    it(`${label}: the plain twin's results bit for bit, the all-reduces overlapping the backward pass`, async () => {
      const gradClip = 0.05;
      const spGroups = dp > 1 && dp < n ? Array.from({ length: dp }, () => createCpuGroup(n / dp, { timeoutMs: 60_000 })) : undefined;
      // Step 2 not finite (skipped); 2048-byte buckets: several per step for this model.
      const ranks = await group(n, { batches: batches(31 * n + rows, 4, rows, T), dp, microBatch, bucketBytes: 2048, gradClip, nonFinite: [2], zero, spGroups });
      for (const [r, { overlapped, plain }] of ranks.entries()) {
        const at = `rank ${r}`;
        expect(overlapped.losses, at).toEqual(plain.losses);
        expect(overlapped.gradNorms, at).toEqual(plain.gradNorms);
        expect(overlapped.params, at).toEqual(plain.params);
        expect(overlapped.skipped, at).toEqual([false, true, false, false]);
        expect(plain.skipped, at).toEqual([false, true, false, false]);
        // Clipping was active on every step taken.
        for (const [i, norm] of overlapped.gradNorms.entries()) if (i !== 1) expect(norm, `${at}, step ${i + 1}`).toBeGreaterThan(gradClip);
        // Every rank ends with the same parameters as rank 0.
        expect(overlapped.params, at).toEqual(ranks[0].overlapped.params);
        for (const [i, events] of overlapped.events.entries()) {
          const where = `${at}, step ${i + 1}`;
          const buckets = plain.events[i].filter((e) => e === "async").length;
          expect(buckets, `${where}: several buckets`).toBeGreaterThan(1);
          // One all-reduce per bucket per step, whatever the number of micro-batches.
          expect(events.filter((e) => e === "async"), where).toHaveLength(buckets);
          // Overlapped: a bucket goes out while the backward pass still has matmuls to run; plain: after the last.
          expect(events.indexOf("async"), `${where}: ${events.join(" ")}`).toBeLessThan(events.lastIndexOf("matmul"));
          expect(plain.events[i].indexOf("async"), where).toBeGreaterThan(plain.events[i].lastIndexOf("matmul"));
        }
      }
    });
  }
});
