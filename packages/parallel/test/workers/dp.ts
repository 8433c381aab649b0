/**
 * Rank side of data-parallel.test.ts: a few AdamW steps of a tiny TNL on this rank's rows of each
 * global batch, the gradients summed over ranks by dataParallel. Returns the global loss of
 * every step and the final parameters.
 */
import { disposeTree } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { cpuRank } from "@lightning-ts/tensor/node";
import { initParams, namedParameters, type TnlParams } from "@lightning-ts/tnl";
import { allReduceNumbers, countTargets, dataParallel, nextTokenTargets, partialLoss, rowsForRank } from "../../src/index.js";
import { tinyConfig } from "../tnl-setup.js";

export interface DpArgs {
  batches: number[][][];
  lr: number;
  bucketBytes: number;
  /** "overlap": dp.valueAndGrad; "after": valueAndGrad, then syncGradients. */
  mode: "overlap" | "after";
}

cpuRank<{ losses: number[]; params: Record<string, number[]> }, DpArgs>(async ({ collective: c, rank, worldSize, args }) => {
  const { valueAndGrad } = await import("@lightning-ts/autograd");
  const config = tinyConfig();
  let params: TnlParams = initParams(config, { seed: 7 });
  const opt = new AdamW({ lr: args.lr, weightDecay: 0.01 });
  const dp = dataParallel(c, { bucketBytes: args.bucketBytes });
  const losses: number[] = [];
  for (const batch of args.batches) {
    const ids = rowsForRank(batch, rank, worldSize);
    const targets = nextTokenTargets(ids);
    // One target ignored per row, so counts differ from rows × (T − 1).
    targets.forEach((row, b) => (row[(b * 3 + rank) % (row.length - 1)] = -100));
    const [globalCount] = allReduceNumbers(c, [countTargets(targets)]);
    const lossFn = (p: TnlParams) => partialLoss(p, config, ids, targets, { globalCount, blockSize: 4 });
    let value;
    let grads;
    if (args.mode === "overlap") {
      ({ value, grads } = dp.valueAndGrad(lossFn)(params));
    } else {
      const local = valueAndGrad(lossFn)(params);
      value = local.value;
      grads = dp.syncGradients(local.grads);
      disposeTree(local.grads);
    }
    losses.push(allReduceNumbers(c, [value.dataSync()[0]])[0]);
    params = opt.step(params, grads);
    disposeTree([value, grads]);
  }
  const named = namedParameters(config, params);
  return { losses, params: Object.fromEntries(Object.entries(named).map(([k, t]) => [k, Array.from(t.dataSync())])) };
});
