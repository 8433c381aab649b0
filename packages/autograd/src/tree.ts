/**
 * Parameter trees: tensors nested in arrays and plain objects, as models keep their weights.
 * Gradients and optimizer states mirror the tree of the parameters they belong to, and leaves are
 * named by their path (`layers.0.wq`) so that saved optimizer state is independent of object order
 * in memory.
 */
import { Tensor } from "@lightning-ts/tensor";

/**
 * The gradient of a value of type `T`: the same structure with `Tensor | null` at tensor leaves
 * (null for integer and u8 tensors, which have no gradient) and `null` at any other leaf.
 */
export type GradTree<T> = T extends Tensor
  ? Tensor | null
  : T extends readonly unknown[]
    ? { -readonly [K in keyof T]: GradTree<T[K]> }
    : T extends Record<string, unknown>
      ? { -readonly [K in keyof T]: GradTree<T[K]> }
      : null;

export function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== "object") return false;
  const proto: unknown = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/**
 * Calls `fn` on every tensor leaf with its path; arrays and plain objects are walked in key order.
 *
 * @example
 * forEachLeaf({ layers: [{ w }] }, (t, path) => console.log(path, t.describe())); // "layers.0.w f32[4, 4]"
 */
export function forEachLeaf(tree: unknown, fn: (t: Tensor, path: string) => void, path = ""): void {
  if (tree instanceof Tensor) fn(tree, path);
  else if (Array.isArray(tree)) tree.forEach((v, i) => forEachLeaf(v, fn, join(path, String(i))));
  else if (isPlainObject(tree)) for (const [k, v] of Object.entries(tree)) forEachLeaf(v, fn, join(path, k));
}

const join = (path: string, key: string) => (path === "" ? key : `${path}.${key}`);

/**
 * The same structure with each tensor leaf replaced by `fn(leaf, path)` and every other leaf by null.
 *
 * @example
 * const zerosLike = mapTree(params, (t) => zeros(t.shape, { dtype: t.dtype }));
 */
export function mapTree<R>(tree: unknown, fn: (t: Tensor, path: string) => R, path = ""): unknown {
  if (tree instanceof Tensor) return fn(tree, path);
  if (Array.isArray(tree)) return tree.map((v, i) => mapTree(v, fn, join(path, String(i))));
  if (isPlainObject(tree)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(tree)) out[k] = mapTree(v, fn, join(path, k));
    return out;
  }
  return null;
}

/**
 * Tensor leaves by path. A lone tensor has the path "".
 *
 * @example
 * flattenTree({ w, b: [b0] }); // Map { "w" => w, "b.0" => b0 }
 */
export function flattenTree(tree: unknown): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  forEachLeaf(tree, (t, p) => out.set(p, t));
  return out;
}

/**
 * Disposes every tensor in a tree (null leaves are skipped).
 *
 * @example
 * disposeTree({ w: zeros([3]), b: [ones([2]), null] });
 */
export function disposeTree(tree: unknown): void {
  forEachLeaf(tree, (t) => t.dispose());
}
