/**
 * @lightning-ts/autograd: reverse-mode differentiation over the op set of @lightning-ts/tensor.
 * Optimizers live in the `@lightning-ts/autograd/optim` entry.
 *
 * @example
 * import { type Tensor, tensor, sum, square } from "@lightning-ts/tensor";
 * import { valueAndGrad } from "@lightning-ts/autograd";
 * const { value, grads } = valueAndGrad((p: { w: Tensor }) => sum(square(p.w)))({ w: tensor([1, 2]) });
 * console.log(await grads.w!.array()); // [2, 4]
 */
export { grad, valueAndGrad, vjp, type ArgNums, type GradOptions, type GradsOf, type Vjp } from "./grad.js";
export { assertGrad, checkGrad, type CheckGradOptions, type CheckGradReport, type InputCheck } from "./checkgrad.js";
export {
  GRAD_RULES,
  isNondiff,
  unbroadcast,
  type BackwardContext,
  type GradRule,
  type GradRuleTable,
  type Nondiff,
  type Saves,
} from "./rules.js";
export { customOp, type CustomBackward, type CustomOpOptions } from "./custom.js";
export type { LeafGradHook } from "./tape.js";
export { disposeTree, flattenTree, forEachLeaf, mapTree, type GradTree } from "./tree.js";
