/**
 * Rank side of zero.test.ts: AdamW steps of a tiny TNL on this rank's rows of each global batch,
 * gradients summed by dataParallel and the update taken by zeroOptimizer (or, with `plain`, by the
 * whole optimizer on every rank). Optionally starts from saved parameters and full optimizer state,
 * and gathers the full state after step `gatherAt`.
 */
import { disposeTree } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { liveTensorCount, mul } from "@lightning-ts/tensor";
import { cpuRank } from "@lightning-ts/tensor/node";
import type { TnlParams } from "@lightning-ts/tnl";
import { allReduceNumbers, countTargets, dataParallel, partialLoss, rowsForRank, stateElements, zeroOptimizer } from "../../src/index.js";
import { tinyConfig } from "../tnl-setup.js";
import { globalTargets, loadState, paramsFrom, paramValues, type SavedState, saveState, type Values } from "../zero-setup.js";

export interface ZeroArgs {
  batches: number[][][];
  lr: number;
  plain?: boolean;
  start?: { params: Values; state: SavedState };
  gatherAt?: number;
  /** A step whose loss is made NaN: every rank must take it back. */
  nanAt?: number;
}

export interface ZeroResult {
  losses: number[];
  params: Values;
  /** The most optimizer-state elements this rank held after any step. */
  stateElements: number;
  /** Rank 0's gathered full state after step `gatherAt`. */
  gathered?: SavedState;
  /** Tensors left alive once the parameters and the optimizer are freed. */
  leaked: number;
}

cpuRank<ZeroResult, ZeroArgs>(async ({ collective: c, rank, worldSize, args }) => {
  const live = liveTensorCount();
  const config = tinyConfig();
  let params: TnlParams = paramsFrom(args.start?.params);
  const opt = new AdamW({ lr: args.lr, weightDecay: 0.01 });
  const zero = zeroOptimizer(c, opt);
  if (args.start) {
    const full = loadState(args.start.state);
    opt.loadStateDict(full);
    disposeTree(full.tensors);
    if (!args.plain) zero.keepShard(params);
  }
  const dp = dataParallel(c, { bucketBytes: 4096 });
  const result: ZeroResult = { losses: [], params: {}, stateElements: 0, leaked: 0 };
  for (const [step, batch] of args.batches.entries()) {
    const ids = rowsForRank(batch, rank, worldSize);
    const targets = rowsForRank(globalTargets(batch), rank, worldSize);
    const [globalCount] = allReduceNumbers(c, [countTargets(targets)]);
    const factor = step === args.nanAt ? NaN : 1;
    const { value, grads } = dp.valueAndGrad((p: TnlParams) => mul(partialLoss(p, config, ids, targets, { globalCount, blockSize: 4 }), factor))(params);
    const globalLoss = allReduceNumbers(c, [value.dataSync()[0]])[0];
    const next = args.plain ? opt.tentativeStep(params, grads) : zero.tentativeStep(params, grads);
    // The verdict is global (the summed loss), so every rank settles the same way.
    if (Number.isFinite(globalLoss)) {
      next.commit();
      params = next.params;
      result.losses.push(globalLoss);
    } else params = next.rollback();
    disposeTree([value, grads]);
    result.stateElements = Math.max(result.stateElements, stateElements(opt));
    if (step + 1 === args.gatherAt) {
      // Plain data parallel: rank 0 already holds the full state.
      const full = args.plain ? (rank === 0 ? opt.stateDict() : null) : await zero.gatherState(params);
      if (full) {
        result.gathered = saveState(full);
        disposeTree(full.tensors);
      }
    }
  }
  result.params = paramValues(params);
  disposeTree(params);
  opt.dispose();
  result.leaked = liveTensorCount() - live;
  return result;
});
