/**
 * SGD with momentum, in the form PyTorch uses:
 *
 *   g ← g + λ·θ                                  (L2 weight decay, when λ ≠ 0)
 *   b ← g on the first step, else μ·b + (1 − dampening)·g
 *   θ ← θ − lr·(g + μ·b) with Nesterov, θ − lr·b without
 */
import { add, copy, mul, sub, type Tensor } from "@lightning-ts/tensor";
import { type BaseSettings, Optimizer, type ParamGroup, type Resolved, type Slots } from "./optimizer.js";

export interface SGDSettings extends BaseSettings {
  /** μ; default 0 (plain SGD, no state). */
  momentum: number;
  /** Default 0. */
  dampening: number;
  /** Default false. */
  nesterov: boolean;
  /** L2 penalty λ added to the gradient; default 0. */
  weightDecay: number;
}

/**
 * @example
 * const opt = new SGD({ lr: 0.1, momentum: 0.9, nesterov: true });
 * params = opt.step(params, grads);
 */
export class SGD extends Optimizer<SGDSettings> {
  constructor(settings: Partial<SGDSettings> & Pick<SGDSettings, "lr">, groups: readonly ParamGroup<SGDSettings>[] = []) {
    super("SGD", { momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, ...settings }, groups);
    if (this.settings.nesterov && (this.settings.momentum <= 0 || this.settings.dampening !== 0)) {
      throw new Error("SGD: nesterov needs momentum > 0 and dampening 0");
    }
  }

  protected update(p: Tensor, g: Tensor, slots: Slots | undefined, hp: Resolved<SGDSettings>): { param: Tensor; slots: Slots } {
    const { lr, momentum, dampening, nesterov, weightDecay } = hp;
    const grad = weightDecay !== 0 ? add(g, mul(p, weightDecay)) : g;
    if (momentum === 0) return { param: sub(p, mul(grad, lr)), slots: {} };
    const buf = slots?.momentum_buffer ? add(mul(slots.momentum_buffer, momentum), mul(grad, 1 - dampening)) : copy(grad);
    const direction = nesterov ? add(grad, mul(buf, momentum)) : buf;
    return { param: sub(p, mul(direction, lr)), slots: { momentum_buffer: buf } };
  }
}
