/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), in the form PyTorch uses:
 *
 *   θ ← θ·(1 − lr·λ)                                  decoupled weight decay
 *   m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²
 *   θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)   bias-corrected step, t = 1, 2, …
 */
import { add, div, mul, sqrt, square, sub, type Tensor, zeros } from "@lightning-ts/tensor";
import { type BaseSettings, Optimizer, type ParamGroup, type Resolved, type Slots } from "./optimizer.js";

export interface AdamWSettings extends BaseSettings {
  /** Default [0.9, 0.999]. */
  betas: readonly [number, number];
  /** Default 1e-8. */
  eps: number;
  /** λ; default 0.01. Set 0 in a group to exempt its parameters (embeddings, norms, biases). */
  weightDecay: number;
}

/**
 * @example
 * const opt = new AdamW({ lr: warmupCosine({ peak: 3e-4, warmupSteps: 100, totalSteps: 5000 }), weightDecay: 0.1 }, [
 *   { name: "no_decay", match: /(^|\.)(embed|norm|bias)/, weightDecay: 0 },
 * ]);
 * params = opt.step(params, grads);
 */
export class AdamW extends Optimizer<AdamWSettings> {
  constructor(settings: Partial<AdamWSettings> & Pick<AdamWSettings, "lr">, groups: readonly ParamGroup<AdamWSettings>[] = []) {
    super("AdamW", { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, ...settings }, groups);
  }

  protected update(p: Tensor, g: Tensor, slots: Slots | undefined, hp: Resolved<AdamWSettings>, t: number): { param: Tensor; slots: Slots } {
    const { lr, betas: [b1, b2], eps, weightDecay } = hp;
    const m0 = slots?.exp_avg ?? zeros(p.shape, { dtype: p.dtype, backend: p.backend });
    const v0 = slots?.exp_avg_sq ?? zeros(p.shape, { dtype: p.dtype, backend: p.backend });
    const m = add(mul(m0, b1), mul(g, 1 - b1));
    const v = add(mul(v0, b2), mul(square(g), 1 - b2));
    const decayed = weightDecay !== 0 ? mul(p, 1 - lr * weightDecay) : p;
    const denom = add(div(sqrt(v), Math.sqrt(1 - b2 ** t)), eps);
    const param = sub(decayed, mul(div(m, denom), lr / (1 - b1 ** t)));
    return { param, slots: { exp_avg: m, exp_avg_sq: v } };
  }
}
