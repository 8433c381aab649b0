/**
 * @lightning-ts/parallel: data and sequence parallelism written once over the `Collective`
 * interface of @lightning-ts/tensor (NCCL on CUDA, the CPU collective in tests).
 *
 * @example
 * import { dataParallel, sequenceParallelLoss, sliceForRank } from "@lightning-ts/parallel";
 * const slice = sliceForRank(rows, collective.rank, collective.worldSize);
 * const { value, grads } = dataParallel(collective).valueAndGrad((p: TnlParams) => sequenceParallelLoss(collective, p, config, slice, { globalCount }))(params);
 */
export { allGather, allReduce, broadcast, copyToRanks, reduceFromRanks, reduceScatter } from "./collectives.js";
export { allReduceNumbers, dataParallel, DEFAULT_BUCKET_BYTES, type DataParallel, type DataParallelGradOptions, type DataParallelOptions } from "./data-parallel.js";
export { sequenceParallelAttention, sequenceParallelLightning, type SequenceParallelAttentionOptions } from "./sequence-parallel.js";
export {
  countTargets,
  IGNORE_INDEX,
  nextTokenTargets,
  partialLoss,
  rowsForRank,
  sequenceParallelLoss,
  sliceForRank,
  type PartialLossOptions,
  type RankSlice,
  type SequenceParallelLossOptions,
} from "./tnl.js";
export { shardOwners, stateElements, zeroOptimizer, type ZeroOptimizer } from "./zero.js";
