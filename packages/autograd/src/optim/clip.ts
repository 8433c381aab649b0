/** Global gradient-norm clipping, computed on the device: no read-back, so no synchronisation. */
import { add, cast, div, minimum, mul, scalar, scope, sqrt, square, sum, type Tensor } from "@lightning-ts/tensor";
import { forEachLeaf, mapTree } from "../tree.js";

/**
 * Scales all gradients by min(1, maxNorm / (‖g‖ + 1e-6)), where ‖g‖ is the L2 norm of all of them
 * together (as PyTorch's clip_grad_norm_). Returns the scaled tree (new tensors; the input stays
 * the caller's; null leaves stay null) and the norm before clipping as a scalar tensor (f32, or
 * f64 for f64 gradients).
 *
 * @example
 * const { grads: clipped, norm } = clipGradNorm(grads, 1.0);
 * console.log("grad norm", await norm.item());
 */
export function clipGradNorm<T>(grads: T, maxNorm: number): { grads: T; norm: Tensor } {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be positive, got ${maxNorm}`);
  const leaves: Tensor[] = [];
  forEachLeaf(grads, (g) => leaves.push(g));
  return scope(() => {
    const acc = leaves[0]?.dtype === "f64" ? "f64" : "f32";
    const toAcc = (g: Tensor) => (g.dtype === acc ? g : cast(g, acc));
    let total = scalar(0, { dtype: acc, backend: leaves[0]?.backend });
    for (const g of leaves) total = add(total, sum(square(toAcc(g))));
    const norm = sqrt(total);
    const factor = minimum(div(maxNorm, add(norm, 1e-6)), 1);
    const clipped = mapTree(grads, (g) => mul(g, factor.dtype === g.dtype ? factor : cast(factor, g.dtype))) as T;
    return { grads: clipped, norm };
  });
}
