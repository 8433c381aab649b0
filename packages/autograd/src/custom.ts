/**
 * Functions with their own backward (jax's custom_vjp): the function runs as one node of the
 * tape, its inner ops unrecorded, and the backward given here maps the cotangents of its outputs
 * to gradients of its inputs. Collectives are differentiated this way (an all-gather's backward is
 * a reduce-scatter), as is anything whose gradient is cheaper or steadier by hand.
 */
import { reshape, type Tensor } from "@lightning-ts/tensor";
import { type CustomBackward, recordCustom } from "./tape.js";

export type { CustomBackward } from "./tape.js";

export interface CustomOpOptions {
  /** Tensors the backward reads, retained by each recording tape and passed to it as `saved`. */
  save?: readonly Tensor[];
  /**
   * Run the backward on every recording even when no cotangent reached the outputs (they count as
   * zeros). Needed when the backward is a collective: every rank must join it, including a rank
   * whose loss happens not to depend on this output.
   */
  always?: boolean;
}

/**
 * Runs `forward(inputs)` as one differentiable node named `name`.
 *
 * @example
 * // Identity forward, doubled gradient.
 * const [y] = customOp("twiceGrad", [x], ([a]) => [a], ([g]) => [mul(g, 2)]);
 */
export function customOp(
  name: string,
  inputs: readonly Tensor[],
  forward: (inputs: readonly Tensor[]) => Tensor[],
  backward: CustomBackward,
  options: CustomOpOptions = {},
): Tensor[] {
  return recordCustom(
    // An output must be a tensor of its own (the tape keys cotangents on it): an input passed
    // through becomes a view.
    () => forward(inputs).map((y) => (inputs.includes(y) ? reshape(y, y.shape) : y)),
    (outputs) => ({ name, inputs, outputs, backward, save: options.save ?? [], always: options.always ?? false }),
  );
}
