/**
 * One optimizer step of a rank in a group: the twin of `trainStep` (@lightning-ts/tnl) for data and
 * sequence parallelism over `@lightning-ts/parallel`, taking the same update as one process over
 * the whole global batch.
 *
 * Each rank differentiates its part of the global mean loss — the sum of the cross-entropy over its
 * targets divided by the targets of the whole global batch (`globalCount`) — over its micro-batches,
 * so the gradients of all ranks add up to the one-process gradient: they are summed over the world
 * in buckets, clipped and applied the same way on every rank, and the parameters stay identical
 * without being sent.
 *
 * Overlap: the micro-batches but the last are summed locally; the last one's backward pass runs
 * under `dataParallel(world).valueAndGrad` with that sum as `accumulated`, so each bucket is
 * all-reduced once per step, started (on the communication stream) as soon as its gradients are
 * final, while the rest of the backward pass runs. The plain twin (`overlap: false`) sums all
 * micro-batches first and all-reduces after the backward pass (`syncGradients`); both add the same
 * numbers in the same order, and on the CPU collective give the same bits.
 *
 * Rows: data parallel rank d holds rows `rowsForRank(batch, d, dp)` of each global batch of rows of
 * `span` = T + 1 tokens. Without sequence parallelism a rank runs the whole span, as one process
 * does (the last position predicts nothing). With it (sp > 1), rank s of a sequence-parallel group
 * holds tokens s·L … (s+1)·L − 1 of the first T (L = T / sp) and their targets, the next tokens.
 */
import { disposeTree, flattenTree, type GradTree, mapTree, valueAndGrad } from "@lightning-ts/autograd";
import { type BaseSettings, clipGradNorm, type GradScaler, type Optimizer } from "@lightning-ts/autograd/optim";
import { dataParallel, DEFAULT_BUCKET_BYTES, nextTokenTargets, partialLoss, type RankSlice, sequenceParallelLoss, type ZeroOptimizer } from "@lightning-ts/parallel";
import { add, cast, type Collective, div, mul, scope, type Tensor, tensor } from "@lightning-ts/tensor";
import { applyUpdate, type MicroBatch, type StepResult, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";

export interface GroupCollectives {
  /** Every rank of the group: gradients and the loss are summed over it. */
  world: Collective;
  /** This rank's sequence-parallel group; null without sequence parallelism. */
  sp: Collective | null;
}

/**
 * Data-parallel rank `d` of `dp`'s rows of a batch of `rows`: contiguous, the first rows mod dp
 * ranks one more (the split of `rowsForRank` in @lightning-ts/parallel).
 */
export function rankRows(rows: number, d: number, dp: number): { first: number; count: number } {
  const base = Math.floor(rows / dp);
  const extra = rows % dp;
  return { first: d * base + Math.min(d, extra), count: base + (d < extra ? 1 : 0) };
}

/** Each flag true on any rank of `c` (one small all-reduce, read back). */
export async function anyRank(c: Collective, flags: readonly boolean[]): Promise<boolean[]> {
  const any = scope(() => c.allReduce(tensor(flags.map(Number), [flags.length], { dtype: "f32", backend: c.backend }), "max"));
  const values = await any.data();
  any.dispose();
  return Array.from(values, (v) => v > 0);
}

/** The rows of a micro-batch as number[][] of `span` tokens. */
function rowsOf(b: MicroBatch): number[][] {
  return Array.from({ length: b.rows }, (_, r) => Array.from(b.ids.subarray(r * b.span, (r + 1) * b.span)));
}

/** Rank `s` of `sp`'s slice of rows of T + 1 tokens: tokens s·L … of the first T, and the tokens after them as targets. */
export function sequenceSlice(rows: readonly (readonly number[])[], s: number, sp: number): RankSlice {
  const T = rows[0].length - 1;
  if (T % sp !== 0) throw new Error(`sequenceSlice: the ${T} tokens of a sequence must divide into the ${sp} ranks of a sequence-parallel group`);
  const L = T / sp;
  return { ids: rows.map((row) => row.slice(s * L, (s + 1) * L)), targets: rows.map((row) => row.slice(s * L + 1, (s + 1) * L + 1)), positionOffset: s * L };
}

/** Half-precision gradients add up in f32 (the optimizer takes f32 gradients for bf16/f16 parameters). */
const toF32 = (t: Tensor) => (t.dtype === "bf16" || t.dtype === "f16" ? cast(t, "f32") : t);

/** This rank's part of the loss of micro-batch `b`, times `factor`. */
function microBatchLoss(config: TnlConfig, b: MicroBatch, c: GroupCollectives, globalCount: number, factor: number): (p: TnlParams) => Tensor {
  const rows = rowsOf(b);
  return (p: TnlParams) => {
    const l = c.sp ? sequenceParallelLoss(c.sp, p, config, sequenceSlice(rows, c.sp.rank, c.sp.worldSize), { globalCount }) : partialLoss(p, config, rows, nextTokenTargets(rows), { globalCount });
    return factor === 1 ? l : mul(l, factor);
  };
}

/**
 * This rank's part of the loss and its gradient, summed over its micro-batches (not yet over ranks).
 * `factor` multiplies the loss (the f16 loss scale; tests give NaN to make a step non-finite).
 */
export function rankGradients(params: TnlParams, config: TnlConfig, batches: readonly MicroBatch[], c: GroupCollectives, globalCount: number, factor = 1): { loss: Tensor; grads: GradTree<TnlParams> } {
  type Acc = { loss: Tensor; grads: GradTree<TnlParams> };
  const addMicroBatch = (prev: Acc | null, b: MicroBatch): Acc => {
    const f = microBatchLoss(config, b, c, globalCount, factor);
    const next = scope(() => {
      const { value, grads } = valueAndGrad(f)(params);
      if (!prev) return { loss: value, grads };
      const mine = flattenTree(grads);
      return { loss: add(prev.loss, value), grads: mapTree(prev.grads, (g, path) => add(toF32(g), toF32(mine.get(path)!))) as GradTree<TnlParams> };
    });
    if (prev) {
      prev.loss.dispose();
      disposeTree(prev.grads);
    }
    return next;
  };
  let acc: Acc | null = null;
  for (const b of batches) acc = addMicroBatch(acc, b);
  if (!acc) throw new Error("a training step with no micro-batches on this rank");
  return acc;
}

/**
 * `tree` (parameters or their gradients) with its keys in the order the forward pass first uses
 * them: the embedding, the layers, the untied head. Buckets hold gradients in reverse tree order
 * and start in turn, each once its own and the earlier buckets' gradients are final, so reverse
 * tree order must be the order the backward pass finishes them; the embedding's (also the tied
 * head's) is finished last, and where a tree keeps it after the layers it would hold back every
 * bucket until the end of the pass.
 */
function inForwardOrder<T>(tree: T): T {
  const { embed, lmHead, ...layers } = tree as Record<string, unknown>;
  return { embed, ...layers, ...(lmHead === undefined ? {} : { lmHead }) } as T;
}

/**
 * This rank's part of the loss, summed over its micro-batches, and the gradient summed over its
 * micro-batches and over the world: all-reduced from inside the last micro-batch's backward pass
 * (`overlap`), or after it.
 */
export function worldGradients(
  params: TnlParams,
  config: TnlConfig,
  batches: readonly MicroBatch[],
  c: GroupCollectives,
  options: { globalCount: number; factor?: number; overlap?: boolean; bucketBytes?: number },
): { loss: Tensor; grads: GradTree<TnlParams> } {
  const { globalCount, factor = 1, overlap = true, bucketBytes = DEFAULT_BUCKET_BYTES } = options;
  const dp = dataParallel(c.world, { bucketBytes });
  return scope(() => {
    if (!overlap) {
      const local = rankGradients(params, config, batches, c, globalCount, factor);
      return { loss: local.loss, grads: dp.syncGradients(local.grads) };
    }
    if (batches.length === 0) throw new Error("a training step with no micro-batches on this rank");
    const earlier = batches.length > 1 ? rankGradients(params, config, batches.slice(0, -1), c, globalCount, factor) : null;
    const last = dp.valueAndGrad(microBatchLoss(config, batches[batches.length - 1], c, globalCount, factor), { accumulated: earlier ? inForwardOrder(earlier.grads) : undefined })(inForwardOrder(params));
    // Back in the parameters' own order, in which the plain twin clips and the optimizer steps.
    const summed = flattenTree(last.grads);
    return { loss: earlier ? add(earlier.loss, last.value) : last.value, grads: mapTree(params, (_, path) => summed.get(path)!) as GradTree<TnlParams> };
  });
}

/**
 * The group's step: rank gradients summed over the world (`worldGradients`), clipped to `gradClip`
 * (0: none), and the update taken on every rank unless the loss or gradient norm is not finite (the
 * same verdict on every rank: both are global). Reads back the global loss and norm. With `zero`
 * (ZeRO-1 over the world, made of `optimizer`), each rank updates its shard and receives the other
 * parameters.
 */
export async function groupTrainStep(
  params: TnlParams,
  config: TnlConfig,
  optimizer: Optimizer<BaseSettings>,
  batches: readonly MicroBatch[],
  c: GroupCollectives,
  options: {
    globalCount: number;
    gradClip: number;
    lossFactor?: number;
    scaler?: GradScaler;
    zero?: ZeroOptimizer;
    /**
     * Start the bucket all-reduces inside the last backward pass, or only after it. Default: inside,
     * unless the sequence-parallel collectives of the forward and backward share the world's
     * communicator: there the buckets queue between them, and on two H200s that made
     * sequence-parallel steps 6% slower than summing after the backward (the trainer gives the
     * sequence-parallel group a communicator of its own).
     */
    overlap?: boolean;
    /** Bytes per gradient bucket (default 25 MiB). */
    bucketBytes?: number;
  },
): Promise<StepResult> {
  const { lossFactor = 1, scaler } = options;
  const scale = scaler?.scale ?? 1;
  const { loss: value, clipped, norm } = scope(() => {
    const overlap = options.overlap ?? c.sp !== c.world;
    const summed = worldGradients(params, config, batches, c, { globalCount: options.globalCount, factor: lossFactor * scale, overlap, bucketBytes: options.bucketBytes });
    const { grads } = summed;
    const total = c.world.allReduce(summed.loss, "sum");
    const clip = clipGradNorm(scaler ? scaler.unscale(grads) : grads, options.gradClip > 0 ? options.gradClip : Infinity);
    return { loss: scale === 1 ? total : div(total, scale), clipped: clip.grads, norm: clip.norm };
  });
  return applyUpdate(params, options.zero ?? optimizer, { loss: value, grads: clipped, norm }, scaler);
}
