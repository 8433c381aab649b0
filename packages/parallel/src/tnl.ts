/**
 * TNL losses for a rank that holds part of the global batch: rows (data parallel), a slice of the
 * sequence (sequence parallel), or both.
 *
 * Data layout. Token ids are rows [B][T]; position t predicts token t + 1 (its target), and a
 * row's last position predicts nothing. Under sequence parallelism over N ranks (T divisible by
 * N, L = T/N), rank r holds ids[:, r·L … (r+1)·L − 1] at absolute positions r·L …, and its
 * targets are ids[:, r·L + 1 … (r+1)·L]: the last one is the first token of rank r + 1's slice,
 * and on the last rank it is ignored. `sliceForRank` cuts both.
 *
 * Each rank's loss is its part of the global mean: (sum of its per-target losses) / (number of
 * targets in the whole global batch), so the rank losses add up to the one-process loss and the
 * gradients are summed over ranks (`dataParallel`, whose `reduce` is a sum).
 */
import { type Collective, div, reshape, scope, softmaxCrossEntropy, sum, type Tensor, tensor } from "@lightning-ts/tensor";
import { type ForwardOptions, forward, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";
import { allReduceNumbers } from "./data-parallel.js";
import { sequenceParallelAttention } from "./sequence-parallel.js";

type Rows = readonly (readonly number[])[];

export const IGNORE_INDEX = -100;

/** One rank's part of a batch: ids, aligned targets (ignoreIndex where none), and the absolute position of its first token. */
export interface RankSlice {
  ids: number[][];
  targets: number[][];
  positionOffset: number;
}

function checkRows(name: string, rows: Rows): number {
  const raw: unknown = rows; // checked as a JavaScript value
  if (!Array.isArray(raw) || raw.length === 0 || !Array.isArray(raw[0])) throw new Error(`${name}: ids must be a non-empty array of rows (number[][])`);
  const T = rows[0].length;
  rows.forEach((row, b) => {
    if (row.length !== T) throw new Error(`${name}: row ${b} has ${row.length} tokens, row 0 has ${T}; rows must have equal length`);
  });
  return T;
}

function checkRank(name: string, rank: number, worldSize: number): void {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`${name}: worldSize must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new Error(`${name}: rank must be an integer in [0, ${worldSize - 1}], got ${rank}`);
}

/** targets[b][t] = ids[b][t + 1], the last position ignored. */
export function nextTokenTargets(ids: Rows, ignoreIndex = IGNORE_INDEX): number[][] {
  checkRows("nextTokenTargets", ids);
  return ids.map((row) => [...row.slice(1), ignoreIndex]);
}

/** The targets that count (not `ignoreIndex`). */
export function countTargets(targets: Rows, ignoreIndex = IGNORE_INDEX): number {
  let n = 0;
  for (const row of targets) for (const t of row) if (t !== ignoreIndex) n++;
  return n;
}

/**
 * Rank `rank`'s slice of every row under sequence parallelism over `worldSize` ranks (see the
 * layout above). `labels` (default: the ids) are HF-style: position t predicts labels[t + 1].
 *
 * @example
 * sliceForRank([[1, 2, 3, 4, 5, 6]], 1, 3); // { ids: [[3, 4]], targets: [[4, 5]], positionOffset: 2 }
 */
export function sliceForRank(ids: Rows, rank: number, worldSize: number, options: { labels?: Rows; ignoreIndex?: number } = {}): RankSlice {
  const T = checkRows("sliceForRank", ids);
  checkRank("sliceForRank", rank, worldSize);
  if (T % worldSize !== 0) throw new Error(`sliceForRank: the sequence length ${T} must be divisible by the ${worldSize} ranks (every rank holds T/N tokens)`);
  const labels = options.labels ?? ids;
  if (labels.length !== ids.length || labels.some((row) => row.length !== T)) throw new Error(`sliceForRank: labels must have the shape of ids [${ids.length}, ${T}]`);
  const L = T / worldSize;
  const start = rank * L;
  const all = nextTokenTargets(labels, options.ignoreIndex ?? IGNORE_INDEX);
  return {
    ids: ids.map((row) => row.slice(start, start + L)),
    targets: all.map((row) => row.slice(start, start + L)),
    positionOffset: start,
  };
}

/**
 * Rank `rank`'s rows of the batch under data parallelism: contiguous, the first B mod N ranks one
 * row more (so sizes may differ by one, which the global target count accounts for).
 */
export function rowsForRank<R>(rows: readonly R[], rank: number, worldSize: number): R[] {
  checkRank("rowsForRank", rank, worldSize);
  if (rows.length < worldSize) throw new Error(`rowsForRank: ${rows.length} rows cannot give each of ${worldSize} ranks at least one`);
  const base = Math.floor(rows.length / worldSize);
  const extra = rows.length % worldSize;
  const start = rank * base + Math.min(rank, extra);
  return rows.slice(start, start + base + (rank < extra ? 1 : 0));
}

export interface PartialLossOptions extends ForwardOptions {
  /** Targets that count over the whole global batch (all ranks). */
  globalCount: number;
  ignoreIndex?: number;
}

/**
 * This rank's part of the global mean next-token loss: Σ over its targets of the cross-entropy,
 * divided by `globalCount`. `targets` [B][T] are aligned with `ids` (target of position t).
 *
 * @example
 * const loss = partialLoss(params, config, ids, nextTokenTargets(ids), { globalCount });
 */
export function partialLoss(params: TnlParams, config: TnlConfig, ids: Rows | Tensor, targets: Rows, options: PartialLossOptions): Tensor {
  const { globalCount } = options;
  if (!(Number.isInteger(globalCount) && globalCount > 0)) throw new Error(`partialLoss: globalCount must be a positive integer (targets over all ranks), got ${globalCount}`);
  const ignoreIndex = options.ignoreIndex ?? IGNORE_INDEX;
  return scope(() => {
    const logits = forward(params, config, ids, options); // [B, T, V]
    const [B, T, V] = logits.shape as [number, number, number];
    if (targets.length !== B || targets.some((row) => row.length !== T)) throw new Error(`partialLoss: targets must be [${B}, ${T}] like the ids`);
    const target = tensor(targets.flat(), [B * T], { dtype: "i32", backend: logits.backend });
    const perRow = softmaxCrossEntropy(reshape(logits, [B * T, V]), target, { ignoreIndex });
    // The count only checks the caller's globalCount covers this rank.
    const local = countTargets(targets, ignoreIndex);
    if (local > globalCount) throw new Error(`partialLoss: this rank has ${local} targets, more than globalCount ${globalCount}`);
    return div(sum(perRow), globalCount);
  });
}

export interface SequenceParallelLossOptions extends Omit<ForwardOptions, "attention" | "positionOffset" | "state"> {
  /** Targets over the whole global batch; default: summed over the ranks of `collective`. */
  globalCount?: number;
  ignoreIndex?: number;
}

/**
 * This rank's part of the loss of rows split along the sequence over the ranks of `collective`
 * (one sequence-parallel group): Lightning Attention runs sequence-parallel, LRPE at the slice's
 * absolute positions. Sum the ranks' gradients (`dataParallel(world).syncGradients`) for the
 * gradient of the whole-sequence loss; with data parallelism too, pass `globalCount` counted over
 * the world.
 *
 * @example
 * const slice = sliceForRank(rows, collective.rank, collective.worldSize);
 * const { value, grads } = valueAndGrad((p: TnlParams) => sequenceParallelLoss(collective, p, config, slice))(params);
 */
export function sequenceParallelLoss(c: Collective, params: TnlParams, config: TnlConfig, slice: RankSlice, options: SequenceParallelLossOptions = {}): Tensor {
  const ignoreIndex = options.ignoreIndex ?? IGNORE_INDEX;
  const globalCount = options.globalCount ?? allReduceNumbers(c, [countTargets(slice.targets, ignoreIndex)])[0];
  return partialLoss(params, config, slice.ids, slice.targets, {
    ...options,
    ignoreIndex,
    globalCount,
    positionOffset: slice.positionOffset,
    attention: sequenceParallelAttention(c),
  });
}
