import { valueAndGrad } from "@lightning-ts/autograd";
import { createCpuGroup } from "@lightning-ts/tensor";
import { assertClose } from "@lightning-ts/tensor/testing";
import { initParams, loss, namedParameters, type TnlParams } from "@lightning-ts/tnl";
import { describe, expect, it } from "vitest";
import { sliceForRank } from "../src/index.js";
import { runGroup } from "./group.js";
import { batches, tinyConfig } from "./tnl-setup.js";
import type { SpTnlArgs } from "./workers/sp-tnl.js";

function oneRank(rows: number[][], labels: number[][]) {
  const config = tinyConfig();
  const params = initParams(config, { seed: 5 });
  const { value, grads } = valueAndGrad((p: TnlParams) => loss(p, config, rows, { labels, blockSize: 4 }))(params);
  const named = namedParameters(config, grads as unknown as TnlParams);
  return { loss: value.dataSync()[0], grads: Object.fromEntries(Object.entries(named).map(([k, t]) => [k, Array.from(t.dataSync())])) };
}

function setup(seed: number, B: number, T: number) {
  const config = tinyConfig();
  const [rows] = batches(seed, 1, B, T, config.vocabSize);
  // A few labels ignored, one of them at a slice boundary's target.
  const labels = rows.map((row, b) => row.map((t, i) => ((i + b) % 7 === 3 ? -100 : t)));
  return { rows, labels };
}

describe("TNL under sequence parallelism on the CPU collective equals one rank over the whole sequence", () => {
  const cases = [
    { n: 2, dp: 1, B: 2, T: 18 }, // 9 tokens per rank: not a multiple of the block (4)
    { n: 3, dp: 1, B: 3, T: 15 },
    { n: 4, dp: 2, B: 3, T: 14 }, // data 2 × sequence 2: rows 2 + 1, 7 tokens per rank
  ];
  for (const { n, dp, B, T } of cases) {
    it(`${n} ranks (${dp} × ${n / dp}), ${B} rows of ${T} tokens: loss and every gradient (LRPE on layer 0)`, async () => {
      const { rows, labels } = setup(10 * n + T, B, T);
      const groups = dp > 1 ? Array.from({ length: dp }, () => createCpuGroup(n / dp, { timeoutMs: 30_000 })) : undefined;
      const ranks = await runGroup<{ loss: number; grads: Record<string, number[]> }, SpTnlArgs>("sp-tnl", n, { rows, labels, dp, groups });
      const ref = oneRank(rows, labels);
      for (const r of ranks) {
        expect(Math.abs(r.loss - ref.loss) / ref.loss, `loss ${r.loss} vs ${ref.loss}`).toBeLessThanOrEqual(1e-5);
        for (const [name, g] of Object.entries(ref.grads)) assertClose(r.grads[name], g, { rtol: 1e-5, atol: 1e-5, label: `${n} ranks: gradient of ${name}` });
      }
    });
  }

  it("sliceForRank: ids, targets across the boundary, positions", () => {
    const rows = [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]];
    expect(sliceForRank(rows, 1, 3)).toEqual({ ids: [[12, 13], [22, 23]], targets: [[13, 14], [23, 24]], positionOffset: 2 });
    expect(sliceForRank(rows, 2, 3).targets).toEqual([[15, -100], [25, -100]]);
    expect(() => sliceForRank(rows, 0, 4)).toThrow(/sequence length 6 must be divisible by the 4 ranks/);
    expect(() => sliceForRank(rows, 3, 3)).toThrow(/rank must be an integer in \[0, 2\], got 3/);
  });
});
