/**
 * Dynamic loss scaling for f16 training, as torch.cuda.amp.GradScaler does it: the loss is
 * multiplied by a scale S before the backward pass, so that small gradients do not flush to zero
 * in f16, and the gradients are divided by S (in f32) before the update. A step whose gradients
 * hold an Inf or NaN is skipped and S is multiplied by the backoff factor; after `growthInterval`
 * steps in a row without one, S is multiplied by the growth factor. bf16 has f32's exponent range
 * and needs none of this.
 */
import { add, cast, mul, scalar, scope, sum, type Tensor } from "@lightning-ts/tensor";
import { forEachLeaf, type GradTree, mapTree } from "../tree.js";
import type { BaseSettings, Optimizer } from "./optimizer.js";

export interface GradScalerSettings {
  /** The first scale; default 2^16. */
  initScale: number;
  /** Multiplies the scale after `growthInterval` finite steps in a row; default 2. */
  growthFactor: number;
  /** Multiplies the scale after a step with non-finite gradients; default 0.5. */
  backoffFactor: number;
  /** Default 2000. */
  growthInterval: number;
}

/** What a resumed run needs to continue with the same scale. */
export interface GradScalerState {
  scale: number;
  /** Finite steps in a row since the scale last changed. */
  growthTracker: number;
}

/**
 * @example
 * const scaler = new GradScaler();
 * const { value, grads } = valueAndGrad((p: P) => scaler.scaleLoss(loss(p, batch)))(params);
 * const unscaled = scaler.unscale(grads); // f32, the scale divided out
 * const { grads: clipped } = clipGradNorm(unscaled, 1.0);
 * const { params: next, skipped } = await scaler.step(opt, params, clipped);
 */
export class GradScaler {
  readonly settings: GradScalerSettings;
  #scale: number;
  #growthTracker = 0;

  constructor(settings: Partial<GradScalerSettings> = {}) {
    this.settings = { initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000, ...settings };
    const { initScale, growthFactor, backoffFactor, growthInterval } = this.settings;
    if (!(initScale > 0 && Number.isFinite(initScale))) throw new Error(`GradScaler: initScale must be a positive number, got ${initScale}`);
    if (!(growthFactor > 1)) throw new Error(`GradScaler: growthFactor must exceed 1, got ${growthFactor}`);
    if (!(backoffFactor > 0 && backoffFactor < 1)) throw new Error(`GradScaler: backoffFactor must be in (0, 1), got ${backoffFactor}`);
    if (!Number.isInteger(growthInterval) || growthInterval < 1) throw new Error(`GradScaler: growthInterval must be a positive integer, got ${growthInterval}`);
    this.#scale = initScale;
  }

  /** The current scale S. */
  get scale(): number {
    return this.#scale;
  }

  /** loss · S (differentiate this one). */
  scaleLoss(loss: Tensor): Tensor {
    return mul(loss, this.#scale);
  }

  /**
   * The gradients divided by S, in f32 (f64 stays f64): new tensors, null leaves stay null, the
   * input stays the caller's. The optimizers take f32 gradients for f16 and bf16 parameters.
   */
  unscale<T>(grads: T): T {
    const inverse = 1 / this.#scale;
    return scope(() => mapTree(grads, (g) => mul(g.dtype === "f32" || g.dtype === "f64" ? g : cast(g, "f32"), inverse)) as T);
  }

  /**
   * `optimizer.step(params, grads)` when every gradient is finite, else nothing (the step is
   * skipped); then `update`. Reads one number back, so it waits for the device.
   */
  async step<P, S extends BaseSettings>(optimizer: Optimizer<S>, params: P, grads: GradTree<P>): Promise<{ params: P; skipped: boolean }> {
    const finite = await allFinite(grads);
    const next = finite ? optimizer.step(params, grads) : params;
    this.update(finite);
    return { params: next, skipped: !finite };
  }

  /** Backs the scale off after non-finite gradients, grows it after `growthInterval` finite steps in a row. */
  update(finite: boolean): void {
    const { growthFactor, backoffFactor, growthInterval } = this.settings;
    if (!finite) {
      this.#scale *= backoffFactor;
      this.#growthTracker = 0;
    } else if (++this.#growthTracker === growthInterval) {
      this.#scale *= growthFactor;
      this.#growthTracker = 0;
    }
  }

  stateDict(): GradScalerState {
    return { scale: this.#scale, growthTracker: this.#growthTracker };
  }

  loadStateDict(state: GradScalerState): void {
    if (!(state.scale > 0) || !Number.isInteger(state.growthTracker) || state.growthTracker < 0) {
      throw new Error(`GradScaler: invalid state ${JSON.stringify(state)}`);
    }
    this.#scale = state.scale;
    this.#growthTracker = state.growthTracker;
  }
}

/**
 * Whether every tensor of a tree is free of Inf and NaN, with one read of one number: x · 0 is 0
 * for finite x and NaN otherwise, so the sum of all of them is NaN exactly when one is not finite.
 *
 * @example
 * if (!(await allFinite(grads))) console.warn("skipping a step with non-finite gradients");
 */
export async function allFinite(tree: unknown): Promise<boolean> {
  const leaves: Tensor[] = [];
  forEachLeaf(tree, (t) => leaves.push(t));
  if (leaves.length === 0) return true;
  const probe = scope(() => {
    let total = scalar(0, { dtype: "f32", backend: leaves[0].backend });
    for (const t of leaves) {
      const s = sum(mul(t, 0));
      total = add(total, s.dtype === "f32" ? s : cast(s, "f32"));
    }
    return total;
  });
  try {
    return !Number.isNaN((await probe.data())[0]);
  } finally {
    probe.dispose();
  }
}
