import { disposeTree, valueAndGrad } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { assertClose } from "@lightning-ts/tensor/testing";
import { initParams, loss, namedParameters, type TnlParams } from "@lightning-ts/tnl";
import { describe, expect, it } from "vitest";
import { nextTokenTargets, rowsForRank } from "../src/index.js";
import { runGroup } from "./group.js";
import { batches, tinyConfig } from "./tnl-setup.js";
import type { DpArgs } from "./workers/dp.js";

/** One process over the whole global batch, with the same ignored targets as the ranks set. */
function singleProcess(globalBatches: number[][][], n: number, lr: number) {
  const config = tinyConfig();
  let params: TnlParams = initParams(config, { seed: 7 });
  const opt = new AdamW({ lr, weightDecay: 0.01 });
  const losses: number[] = [];
  for (const batch of globalBatches) {
    const labels: number[][] = [];
    for (let rank = 0; rank < n; rank++) {
      const ids = rowsForRank(batch, rank, n);
      const targets = nextTokenTargets(ids);
      targets.forEach((row, b) => (row[(b * 3 + rank) % (row.length - 1)] = -100));
      // HF labels: position t predicts labels[t + 1].
      targets.forEach((row) => labels.push([-100, ...row.slice(0, -1)]));
    }
    const { value, grads } = valueAndGrad((p: TnlParams) => loss(p, config, batch, { labels, blockSize: 4 }))(params);
    losses.push(value.dataSync()[0]);
    params = opt.step(params, grads);
    disposeTree([value, grads]);
  }
  const named = namedParameters(config, params);
  return { losses, params: Object.fromEntries(Object.entries(named).map(([k, t]) => [k, Array.from(t.dataSync())])) };
}

describe("data parallel TNL training on the CPU collective equals one process over the global batch", () => {
  const cases: { n: number; rows: number; T: number; mode: DpArgs["mode"]; bucketBytes: number }[] = [
    // 5 rows over 2 ranks (3 + 2); small buckets, so several all-reduces overlap the backward pass.
    { n: 2, rows: 5, T: 11, mode: "overlap", bucketBytes: 2048 },
    // 7 rows over 3 ranks (3 + 2 + 2), one bucket.
    { n: 3, rows: 7, T: 9, mode: "overlap", bucketBytes: 25 * 2 ** 20 },
    { n: 3, rows: 4, T: 13, mode: "after", bucketBytes: 4096 },
  ];
  for (const { n, rows, T, mode, bucketBytes } of cases) {
    it(`${n} ranks, ${rows} rows of ${T} tokens, ${mode === "overlap" ? "all-reduce during the backward pass" : "syncGradients after it"}, ${bucketBytes}-byte buckets`, async () => {
      const config = tinyConfig();
      const global = batches(100 * n + rows, 4, rows, T, config.vocabSize);
      const lr = 3e-3;
      const ranks = await runGroup<{ losses: number[]; params: Record<string, number[]> }, DpArgs>("dp", n, { batches: global, lr, bucketBytes, mode });
      const ref = singleProcess(global, n, lr);
      for (const r of ranks) {
        r.losses.forEach((l, step) => expect(Math.abs(l - ref.losses[step]) / ref.losses[step], `step ${step} loss ${l} vs ${ref.losses[step]}`).toBeLessThanOrEqual(1e-5));
      }
      // Every rank took the same steps: identical parameters, and those of one process.
      for (const [name, values] of Object.entries(ranks[0].params)) {
        for (const r of ranks.slice(1)) expect(r.params[name], name).toEqual(values);
        assertClose(values, ref.params[name], { rtol: 1e-4, atol: 1e-4, label: `${n} ranks: parameter ${name} after ${global.length} steps` });
      }
      // The steps did something: AdamW moves each parameter by about lr per step.
      const init = namedParameters(config, initParams(config, { seed: 7 }));
      const moved = Math.max(...ref.params["model.embed_tokens.weight"].map((v, i) => Math.abs(v - init["model.embed_tokens.weight"].dataSync()[i])));
      expect(moved).toBeGreaterThan(lr);
    });
  }
});
