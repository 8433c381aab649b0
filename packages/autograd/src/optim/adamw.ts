/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), in the form PyTorch uses:
 *
 *   θ ← θ·(1 − lr·λ)                                  decoupled weight decay
 *   m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²
 *   θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)   bias-corrected step, t = 1, 2, …
 *
 * Each parameter is one `adamwUpdate` op: one kernel on a backend that has it (CUDA), which also
 * reads a bf16/f16 gradient as it is and writes the rounded half-precision weight beside the f32
 * master; elsewhere its decomposition, the elementwise ops of this formula in this order.
 */
import { adamwUpdate, type Tensor, zeros } from "@lightning-ts/tensor";
import { type BaseSettings, type HalfDType, Optimizer, type ParamGroup, type Resolved, type Slots, type Update } from "./optimizer.js";

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

  protected update(p: Tensor, g: Tensor, slots: Slots | undefined, hp: Resolved<AdamWSettings>, t: number, castTo?: HalfDType): Update {
    const { lr, betas: [beta1, beta2], eps, weightDecay } = hp;
    const m0 = slots?.exp_avg ?? zeros(p.shape, { dtype: p.dtype, backend: p.backend });
    const v0 = slots?.exp_avg_sq ?? zeros(p.shape, { dtype: p.dtype, backend: p.backend });
    const r = adamwUpdate(p, g, m0, v0, { lr, beta1, beta2, eps, weightDecay, step: t, castTo });
    return { param: r.param, slots: { exp_avg: r.expAvg, exp_avg_sq: r.expAvgSq }, cast: r.half };
  }

  protected override get takesHalfGradients(): boolean {
    return true;
  }
}
