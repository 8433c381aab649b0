/**
 * One training step as `pnpm train` takes it, and as `pnpm bench model` times it: one optimizer
 * step over several micro-batches (gradient accumulation). The loss of a step is the
 * mean over all its predicted tokens, whatever the micro-batches: micro-batch i, holding n_i of
 * the step's N targets, contributes its own mean loss times n_i / N. So k micro-batches of n rows
 * give the same update as one batch of k·n rows, ignored targets included (a mean of per-batch
 * means would weigh a micro-batch with few targets as much as a full one).
 *
 * A step whose loss or gradient norm is not finite changes nothing: no update, no optimizer state.
 * With f16, the loss is scaled by a GradScaler's scale before the backward pass and the gradient
 * unscaled into f32 before clipping; a skipped step backs the scale off.
 */
import { valueAndGrad, disposeTree, flattenTree, mapTree, type GradTree } from "@lightning-ts/autograd";
import { clipGradNorm, type BaseSettings, type GradScaler, type Optimizer } from "@lightning-ts/autograd/optim";
import { add, cast, div, mul, scope, tensor, type Tensor } from "@lightning-ts/tensor";
import type { TnlConfig } from "./config.js";
import { loss } from "./model.js";
import type { TnlParams } from "./params.js";

/** Label of a target that is not predicted (padding); the model's default. */
export const IGNORE_INDEX = -100;

/** Rows of `span` token ids; labels (the same shape) when some targets are ignored. */
export interface MicroBatch {
  ids: Int32Array;
  rows: number;
  span: number;
  labels?: Int32Array;
}

/** Targets a micro-batch predicts: every position after the first of each row, less ignored labels. */
export function targetCount(b: MicroBatch): number {
  if (!b.labels) return b.rows * (b.span - 1);
  let n = 0;
  for (let r = 0; r < b.rows; r++) for (let t = 1; t < b.span; t++) if (b.labels[r * b.span + t] !== IGNORE_INDEX) n++;
  return n;
}

/** The rows of one step cut into micro-batches of `microBatch` rows (the last one may be smaller). */
export function splitBatch(ids: Int32Array, rows: number, span: number, microBatch: number, labels?: Int32Array): MicroBatch[] {
  const out: MicroBatch[] = [];
  for (let r = 0; r < rows; r += microBatch) {
    const n = Math.min(microBatch, rows - r);
    const at = (a: Int32Array) => a.subarray(r * span, (r + n) * span);
    out.push({ ids: at(ids), rows: n, span, labels: labels && at(labels) });
  }
  return out;
}

/**
 * The step's mean loss over all targets and its gradient, accumulated over the micro-batches.
 * `lossFactor` multiplies the loss (1 by default); tests give NaN to make a step non-finite.
 */
export function accumulateGradients(params: TnlParams, config: TnlConfig, batches: readonly MicroBatch[], lossFactor = 1): { loss: Tensor; grads: GradTree<TnlParams> } {
  const counts = batches.map(targetCount);
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) throw new Error(`a training step with no targets: ${batches.length} micro-batch(es) of rows of ${batches[0]?.span ?? 0} token(s), every label ignored or nothing after the first token`);
  let acc: { loss: Tensor; grads: GradTree<TnlParams> } | null = null;
  batches.forEach((b, i) => {
    if (counts[i] === 0) return;
    const weight = (counts[i] / total) * lossFactor;
    const prev = acc;
    acc = scope(() => {
      const ids = tensor(b.ids, [b.rows, b.span], { dtype: "i32" });
      const labels = b.labels && tensor(b.labels, [b.rows, b.span], { dtype: "i32" });
      const f = (p: TnlParams) => {
        const l = loss(p, config, ids, { labels, ignoreIndex: IGNORE_INDEX });
        return weight === 1 ? l : mul(l, weight);
      };
      const { value, grads } = valueAndGrad(f)(params);
      if (!prev) return { loss: value, grads };
      const mine = flattenTree(grads);
      return {
        loss: add(prev.loss, value),
        grads: mapTree(prev.grads, (g, path) => add(toF32(g), toF32(mine.get(path)!))) as GradTree<TnlParams>,
      };
    });
    if (prev) {
      prev.loss.dispose();
      disposeTree(prev.grads);
    }
  });
  return acc!;
}

/** Half-precision gradients add up in f32 (the optimizer takes f32 gradients for bf16/f16 parameters). */
const toF32 = (t: Tensor) => (t.dtype === "bf16" || t.dtype === "f16" ? cast(t, "f32") : t);

export interface StepResult {
  params: TnlParams;
  loss: number;
  /** The global L2 norm of the gradient, before clipping. */
  gradNorm: number;
  /** True when the loss or the gradient was not finite and the step was not taken. */
  skipped: boolean;
}

/**
 * Accumulates the gradient over `batches`, clips it to `gradClip` (0: no clipping) and updates
 * `params` with `optimizer`, unless the loss or gradient norm is not finite. The update is
 * enqueued before the loss and norm are read back (that read is the step's one synchronisation
 * with the device), so a GPU goes from the backward pass to the update without waiting for
 * JavaScript; a step found not finite is then taken back (`Optimizer.tentativeStep`).
 *
 * @example
 * const opt = new AdamW({ lr: 1e-3 });
 * const r = await trainStep(params, config, opt, splitBatch(ids, rows, span, rows), { gradClip: 1 });
 * params = r.params;
 */
export async function trainStep(
  params: TnlParams,
  config: TnlConfig,
  optimizer: Optimizer<BaseSettings>,
  batches: readonly MicroBatch[],
  options: { gradClip: number; lossFactor?: number; scaler?: GradScaler },
): Promise<StepResult> {
  const { lossFactor = 1, scaler } = options;
  const scale = scaler?.scale ?? 1;
  const { loss: value, clipped, norm } = scope(() => {
    const { loss: l, grads } = accumulateGradients(params, config, batches, lossFactor * scale);
    const c = clipGradNorm(scaler ? scaler.unscale(grads) : grads, options.gradClip > 0 ? options.gradClip : Infinity);
    return { loss: scale === 1 ? l : div(l, scale), clipped: c.grads, norm: c.norm };
  });
  return applyUpdate(params, optimizer, { loss: value, grads: clipped, norm }, scaler);
}

/**
 * The end of a training step, shared by every way of computing its gradient (one process, or a
 * group of ranks): enqueues the update of `params` with the clipped gradient, reads the loss and
 * the gradient norm back (the step's one synchronisation with the device), and keeps the update
 * unless either is not finite. Takes over the gradient, loss and norm tensors; tells `scaler`.
 */
export async function applyUpdate(
  params: TnlParams,
  optimizer: Pick<Optimizer<BaseSettings>, "tentativeStep">,
  step: { loss: Tensor; grads: GradTree<TnlParams>; norm: Tensor },
  scaler?: GradScaler,
): Promise<StepResult> {
  const update = scope(() => optimizer.tentativeStep<TnlParams>(params, step.grads));
  disposeTree(step.grads);
  const out = { loss: (await step.loss.data())[0], gradNorm: (await step.norm.data())[0] };
  step.loss.dispose();
  step.norm.dispose();
  const skipped = !Number.isFinite(out.loss) || !Number.isFinite(out.gradNorm);
  let next = params;
  if (skipped) update.rollback();
  else {
    update.commit();
    next = update.params;
  }
  scaler?.update(!skipped);
  return { params: next, ...out, skipped };
}
