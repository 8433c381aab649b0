/**
 * The functional API: `grad`, `valueAndGrad` and `vjp`. Arguments may be tensors or parameter
 * trees (tensors nested in arrays and plain objects); gradients come back in the same structure,
 * with `null` for integer and u8 tensors and for non-tensor leaves, and zeros for float tensors
 * the result does not depend on.
 *
 * Everything `fn` creates is disposed when it returns, except its result; what the backward pass
 * needs is retained by the tape and released as the pass goes. Second derivatives (grad of grad)
 * are not supported.
 */
import { isFloat, ones, reshape, scope, Tensor, zeros } from "@lightning-ts/tensor";
import { type LeafGradHook, Tape } from "./tape.js";
import { flattenTree, forEachLeaf, type GradTree, mapTree } from "./tree.js";

export type ArgNums = number | readonly number[];

/** Gradients for the arguments picked by `argnums`: one tree for a number, a tuple for a list. */
export type GradsOf<A extends readonly unknown[], N extends ArgNums> = N extends number
  ? GradTree<A[N]>
  : { -readonly [I in keyof N]: GradTree<A[N[I] & number]> };

export interface GradOptions<N extends ArgNums> {
  /** Which arguments to differentiate: an index (default 0) or a list of indices. */
  argnums?: N;
  /**
   * Called during the backward pass as soon as the gradient of a leaf of the differentiated
   * arguments is final (no later op adds to it), with null for a leaf that gets no gradient (its
   * gradient is zeros). The gradient belongs to the pass: use it (e.g. start an all-reduce) or
   * `retain` it, never dispose it. Data-parallel training overlaps its all-reduces this way.
   */
  onLeafGrad?: LeafGradHook;
}

/**
 * The value of a scalar-valued `fn` and its gradient with respect to the arguments in `argnums`.
 *
 * @example
 * const loss = (p: { w: Tensor; b: Tensor }, x: Tensor) => sum(square(add(mul(x, p.w), p.b)));
 * const { value, grads } = valueAndGrad(loss)({ w, b }, x); // grads: { w: Tensor, b: Tensor }
 */
export function valueAndGrad<A extends unknown[], const N extends ArgNums = 0>(
  fn: (...args: A) => Tensor,
  options: GradOptions<N> = {},
): (...args: A) => { value: Tensor; grads: GradsOf<A, N> } {
  const argnums: ArgNums = options.argnums ?? 0;
  const picked = typeof argnums === "number" ? [argnums] : [...argnums];
  return (...args: A) => {
    for (const i of picked) {
      if (!Number.isInteger(i) || i < 0 || i >= args.length) {
        throw new Error(`valueAndGrad: argnums ${JSON.stringify(argnums)} out of range for ${args.length} argument(s)`);
      }
    }
    const { out, pullback } = record(fn, args, picked.map((i) => args[i]));
    if (!(out instanceof Tensor) || out.size !== 1 || !isFloat(out.dtype)) {
      pullback.dispose();
      const got = out instanceof Tensor ? out.describe() : typeof out;
      throw new Error(`valueAndGrad: fn must return a one-element float tensor (a scalar loss), got ${got}`);
    }
    let grads: unknown[];
    try {
      grads = pullback.run([[out, ones(out.shape, { dtype: out.dtype, backend: out.backend })]], options.onLeafGrad);
    } catch (err) {
      if (!isArgument(args, out)) out.dispose();
      throw err;
    }
    return { value: out, grads: (typeof argnums === "number" ? grads[0] : grads) as GradsOf<A, N> };
  };
}

/**
 * The gradient of a scalar-valued `fn` with respect to the arguments in `argnums` (default: the first).
 *
 * @example
 * const dx = grad((x: Tensor) => sum(square(x)))(tensor([1, 2, 3])); // [2, 4, 6]
 */
export function grad<A extends unknown[], const N extends ArgNums = 0>(
  fn: (...args: A) => Tensor,
  options: GradOptions<N> = {},
): (...args: A) => GradsOf<A, N> {
  const vg = valueAndGrad(fn, options);
  return (...args: A) => {
    const { value, grads } = vg(...args);
    if (!isArgument(args, value)) value.dispose();
    return grads;
  };
}

/** fn may return one of its arguments unchanged, which stays the caller's. */
function isArgument(args: unknown[], t: Tensor): boolean {
  let found = false;
  forEachLeaf(args, (a) => (found ||= a === t));
  return found;
}

export interface Vjp<P extends unknown[], R> {
  /** What `fn` returned. */
  out: R;
  /**
   * Pulls a cotangent (same structure as `out`; null leaves count as zero) back to the primals:
   * one gradient tree per primal. Callable once: it consumes what the forward pass saved.
   */
  vjp: (cotangent: GradTree<R>) => { -readonly [I in keyof P]: GradTree<P[I]> };
  /** Releases the saved tensors without computing anything (when `vjp` is never called). */
  dispose(): void;
}

/**
 * Runs `fn` on `primals` and returns its output with a function that maps an output cotangent to
 * the primals' cotangents (a vector–Jacobian product).
 *
 * @example
 * const { out, vjp: pull } = vjp((x: Tensor) => mul(x, x), tensor([1, 2, 3]));
 * const [dx] = pull(ones([3])); // [2, 4, 6]
 */
export function vjp<P extends unknown[], R>(fn: (...primals: P) => R, ...primals: P): Vjp<P, R> {
  const { out, pullback } = record(fn, primals, primals);
  let used = false;
  return {
    out,
    vjp(cotangent) {
      if (used) throw new Error("vjp: the pullback was already called (or disposed); it can run once");
      used = true;
      const outputs = flattenTree(out);
      const seeds: [Tensor, Tensor][] = [];
      forEachLeaf(cotangent, (g, path) => {
        const o = outputs.get(path);
        if (!o) throw new Error(`vjp: the cotangent has a tensor at '${path}', where the output has none`);
        if (g.dtype !== o.dtype || g.shape.join() !== o.shape.join()) {
          throw new Error(`vjp: cotangent ${g.describe()} at '${path}' does not match output ${o.describe()}`);
        }
        // A view, so that the tape may dispose its handle while the caller keeps theirs.
        seeds.push([o, reshape(g, g.shape)]);
      });
      return pullback.run(seeds) as never;
    },
    dispose() {
      used = true;
      pullback.dispose();
    },
  };
}

interface Pullback {
  run(seeds: [Tensor, Tensor][], onLeafGrad?: LeafGradHook): unknown[];
  dispose(): void;
}

/** Runs `fn(...args)` on a tape watching the tensors of `wrt`; the pullback maps seeds to one tree per `wrt` entry. */
function record<A extends unknown[], R>(fn: (...args: A) => R, args: A, wrt: unknown[]): { out: R; pullback: Pullback } {
  const tape = new Tape();
  let out: R;
  try {
    for (const tree of wrt) forEachLeaf(tree, (t) => tape.watch(t));
    out = scope(() => fn(...args));
  } catch (err) {
    tape.dispose();
    throw err;
  } finally {
    tape.stop();
  }
  const pullback: Pullback = {
    run(seeds, onLeafGrad) {
      let ct: Map<Tensor, Tensor>;
      try {
        ct = tape.backward(seeds, onLeafGrad);
      } finally {
        tape.dispose();
      }
      try {
        // Each leaf gets its own handle in the caller's scope (a view, so no copy).
        return wrt.map((tree) =>
          mapTree(tree, (t) => {
            if (!isFloat(t.dtype)) return null;
            const g = ct.get(t);
            return g ? reshape(g, g.shape) : zeros(t.shape, { dtype: t.dtype, backend: t.backend });
          }),
        );
      } finally {
        for (const g of ct.values()) g.dispose();
      }
    },
    dispose: () => tape.dispose(),
  };
  return { out: out!, pullback };
}
