/**
 * Data parallelism: every rank holds the same parameters, computes the gradient of its share of
 * the global batch, and the gradients are summed over ranks before the optimizer step, so every
 * rank takes the same step as one process over the whole batch would.
 *
 * Gradients travel in buckets (DDP's scheme): flattened into ~25 MiB f32 vectors (f64 for f64
 * gradients) in reverse parameter order, the order the backward pass finishes them, each bucket
 * all-reduced with `allReduceAsync` and waited for before the optimizer. Under `valueAndGrad` a
 * bucket starts as soon as the last of its gradients is final (autograd's `onLeafGrad`), so on a
 * GPU its all-reduce overlaps the rest of the backward pass; buckets start strictly in order, so
 * every rank issues the same collectives in the same order. That order is the tree's: list the
 * parameters in the order the forward pass first uses them, since one listed late but finished
 * last (a model's embedding after its layers) holds back every bucket until the pass ends.
 *
 * The loss each rank differentiates must be its part of the global mean (its sum over targets
 * divided by the global target count, `partialLoss`), so the gradients are summed, not averaged.
 *
 * Gradient accumulation: the micro-batches of a step but the last are differentiated locally and
 * summed (`valueAndGrad` of @lightning-ts/autograd); the last goes through `valueAndGrad` here
 * with that sum as `accumulated`, which each gradient joins the moment it is final, so every bucket
 * is all-reduced once per step and still overlaps the last backward pass.
 */
import { flattenTree, forEachLeaf, type ArgNums, type GradOptions, type GradsOf, mapTree, valueAndGrad } from "@lightning-ts/autograd";
import {
  add,
  cast,
  type Collective,
  concat,
  type DType,
  isFloat,
  keep,
  narrow,
  type PendingCollective,
  reshape,
  retain,
  scope,
  type Tensor,
  tensor,
  zeros,
} from "@lightning-ts/tensor";

export const DEFAULT_BUCKET_BYTES = 25 * 2 ** 20;

export interface DataParallelOptions {
  /** Bytes per gradient bucket (default 25 MiB); a larger gradient gets a bucket of its own. */
  bucketBytes?: number;
  /** `sum` (default: each rank's loss is already its part of the global mean) or `avg`. */
  reduce?: "sum" | "avg";
}

/** Options of `DataParallel.valueAndGrad`: autograd's (its hook is taken) and the accumulated gradients. */
export interface DataParallelGradOptions<A extends unknown[], N extends ArgNums> extends Omit<GradOptions<N>, "onLeafGrad"> {
  /**
   * This rank's gradients of the step's earlier micro-batches, summed (the structure of this
   * call's gradients). Each joins its leaf's gradient as soon as that is final, before the bucket's
   * all-reduce, so the result is the world's sum of all micro-batches with one all-reduce per
   * bucket. Half-precision gradients add up in f32 (as the optimizer takes them): such a leaf's
   * summed gradient is f32. The tree stays the caller's.
   */
  accumulated?: NoInfer<GradsOf<A, N>>;
}

export interface DataParallel {
  readonly collective: Collective;
  /**
   * The gradient tree summed over ranks, in buckets: a new tree in the same structure (null
   * leaves stay null) and the same dtypes; the given tree stays the caller's.
   */
  syncGradients<G>(grads: G): G;
  /**
   * `valueAndGrad` whose gradients come back already summed over ranks, the bucket all-reduces
   * started during the backward pass as gradients become final. `value` is this rank's loss (of
   * this call only, not of `accumulated`).
   */
  valueAndGrad<A extends unknown[], const N extends ArgNums = 0>(
    fn: (...args: A) => Tensor,
    options?: DataParallelGradOptions<A, N>,
  ): (...args: A) => { value: Tensor; grads: GradsOf<A, N> };
}

/** Planned bucket: positions (in a leaf list) of the gradients it carries, and its dtype. */
interface Bucket {
  members: number[];
  dtype: DType;
  size: number;
}

const bucketDType = (d: DType): DType => (d === "f64" ? "f64" : "f32");
/** The dtype gradients of a `d` parameter add up in: f32 for half precision, else `d`. */
const sumDType = (d: DType): DType => (d === "bf16" || d === "f16" ? "f32" : d);
const toSumDType = (t: Tensor): Tensor => (t.dtype === sumDType(t.dtype) ? t : cast(t, sumDType(t.dtype)));

/** Buckets over leaves in reverse order, each at most `bytes` (unless one leaf is larger). */
function planBuckets(leaves: readonly { size: number; dtype: DType }[], bytes: number): Bucket[] {
  const buckets: Bucket[] = [];
  const open = new Map<DType, Bucket>();
  for (let i = leaves.length - 1; i >= 0; i--) {
    const { size, dtype } = leaves[i];
    const bd = bucketDType(dtype);
    const width = bd === "f64" ? 8 : 4;
    let b = open.get(bd);
    if (b && (b.size + size) * width > bytes && b.size > 0) {
      open.delete(bd);
      b = undefined;
    }
    if (!b) {
      b = { members: [], dtype: bd, size: 0 };
      buckets.push(b);
      open.set(bd, b);
    }
    b.members.push(i);
    b.size += size;
  }
  return buckets;
}

interface Leaf {
  size: number;
  dtype: DType;
  shape: readonly number[];
  /** The dtype its reduced gradient comes back in (default `dtype`). */
  out?: DType;
}

/** Flattens the bucket's gradients (null: zeros) into one vector and starts its all-reduce. */
function launch(c: Collective, b: Bucket, leaves: readonly Leaf[], grads: readonly (Tensor | null)[], op: "sum" | "avg"): { pending: PendingCollective; flat: Tensor } {
  return keep(
    scope(() => {
      const parts = b.members.map((i) => {
        const g = grads[i];
        const flat = g ? reshape(g, [leaves[i].size]) : zeros([leaves[i].size], { dtype: b.dtype, backend: c.backend });
        return flat.dtype === b.dtype ? flat : cast(flat, b.dtype);
      });
      // A copy even for one gradient: the bucket is scratch, so the all-reduce works in place (no
      // second bucket-sized buffer per step), and the gradient itself is the tape's.
      const flat = concat(parts, 0);
      const pending = c.allReduceAsync(flat, op, { inPlace: true });
      return { pending, flat };
    }),
  );
}

/** The reduced bucket cut back into gradients of the leaves' shapes and dtypes. */
function unflatten(b: Bucket, reduced: Tensor, leaves: readonly Leaf[], out: (Tensor | null)[]): void {
  let offset = 0;
  for (const i of b.members) {
    const { size, shape } = leaves[i];
    const dtype = leaves[i].out ?? leaves[i].dtype;
    const piece = reshape(narrow(reduced, 0, offset, size), shape);
    out[i] = keep(piece.dtype === dtype ? piece : cast(piece, dtype));
    offset += size;
  }
}

function waitAll(c: Collective, buckets: readonly Bucket[], launched: readonly { pending: PendingCollective; flat: Tensor }[], leaves: readonly Leaf[]): (Tensor | null)[] {
  const out: (Tensor | null)[] = leaves.map(() => null);
  scope(() => {
    buckets.forEach((b, k) => {
      const { pending, flat } = launched[k];
      unflatten(b, pending.wait(), leaves, out);
      if (pending.value !== flat) pending.value.dispose();
      flat.dispose();
    });
  });
  void c;
  return out;
}

/**
 * Each leaf's accumulated gradient (by its position in `index`), matched by path between the
 * differentiated arguments `picked` and `accumulated` (wrapped like `picked`), checked: the
 * leaf's shape, and its dtype or the dtype its gradients add up in. Sets each leaf's `out` dtype.
 */
function priorGradients(picked: unknown[], accumulated: unknown, single: boolean, index: ReadonlyMap<Tensor, number>, leaves: Leaf[]): (Tensor | null)[] {
  const name = (path: string) => `'${single ? path.slice(path.indexOf(".") + 1) : path}'`;
  const bad = (what: string) => new Error(`dataParallel.valueAndGrad: options.accumulated ${what}`);
  const given = flattenTree(single ? [accumulated] : accumulated);
  const prior: (Tensor | null)[] = leaves.map(() => null);
  const matched = new Set<string>();
  for (const [path, p] of flattenTree(picked)) {
    if (!isFloat(p.dtype)) continue;
    const a = given.get(path);
    const want = `${p.dtype === sumDType(p.dtype) ? p.dtype : `${p.dtype} or ${sumDType(p.dtype)}`}[${p.shape.join(", ")}] like the parameter`;
    if (!a) throw bad(`has no gradient at ${name(path)}: expected ${want}`);
    if (a.shape.join() !== p.shape.join() || (a.dtype !== p.dtype && a.dtype !== sumDType(p.dtype))) throw bad(`at ${name(path)}: expected ${want}, got ${a.describe()}`);
    matched.add(path);
    const i = index.get(p)!;
    prior[i] ??= a;
    leaves[i].out = sumDType(leaves[i].dtype);
  }
  for (const path of given.keys()) if (!matched.has(path)) throw bad(`has a tensor at ${name(path)}, where the differentiated arguments have no float parameter`);
  return prior;
}

/**
 * Data parallelism over `collective` (all ranks of the group hold the same parameters).
 *
 * @example
 * const dp = dataParallel(collective);
 * const { value, grads } = dp.valueAndGrad((p: TnlParams) => partialLoss(p, config, ids, targets, { globalCount }))(params);
 * params = opt.step(params, grads); // the same step on every rank
 */
export function dataParallel(collective: Collective, options: DataParallelOptions = {}): DataParallel {
  const bucketBytes = options.bucketBytes ?? DEFAULT_BUCKET_BYTES;
  if (!(bucketBytes > 0)) throw new Error(`dataParallel: bucketBytes must be a positive number, got ${bucketBytes}`);
  const op = options.reduce ?? "sum";
  if (op !== "sum" && op !== "avg") throw new Error(`dataParallel: reduce must be 'sum' or 'avg', got ${JSON.stringify(op)}`);
  const c = collective;

  const syncGradients = <G>(grads: G): G => {
    const tensors: Tensor[] = [];
    forEachLeaf(grads, (t) => {
      if (!isFloat(t.dtype)) throw new Error(`syncGradients: gradients must be float tensors, got ${t.describe()}`);
      tensors.push(t);
    });
    const leaves = tensors.map((t) => ({ size: t.size, dtype: t.dtype, shape: t.shape }));
    const buckets = planBuckets(leaves, bucketBytes);
    const launched = buckets.map((b) => launch(c, b, leaves, tensors, op));
    const reduced = waitAll(c, buckets, launched, leaves);
    let i = 0;
    return mapTree(grads, () => reduced[i++]) as G;
  };

  const dpValueAndGrad = <A extends unknown[], const N extends ArgNums = 0>(fn: (...args: A) => Tensor, options: DataParallelGradOptions<A, N> = {}) => {
    const { accumulated, ...gradOptions } = options;
    return (...args: A): { value: Tensor; grads: GradsOf<A, N> } => {
      const argnums: ArgNums = gradOptions.argnums ?? 0;
      const picked = typeof argnums === "number" ? [args[argnums]] : argnums.map((i) => args[i]);
      // The float leaves of the differentiated arguments, in tree order; a tensor listed twice
      // has one gradient.
      const index = new Map<Tensor, number>();
      const leaves: Leaf[] = [];
      forEachLeaf(picked, (t) => {
        if (!isFloat(t.dtype) || index.has(t)) return;
        index.set(t, leaves.length);
        leaves.push({ size: t.size, dtype: t.dtype, shape: t.shape });
      });
      const prior = accumulated === undefined ? null : priorGradients(picked, accumulated, typeof argnums === "number", index, leaves);
      const buckets = planBuckets(leaves, bucketBytes);
      const bucketOf = new Array<number>(leaves.length);
      buckets.forEach((b, k) => b.members.forEach((i) => (bucketOf[i] = k)));
      const ready = new Array<number>(buckets.length).fill(0);
      const held: (Tensor | null)[] = leaves.map(() => null);
      const launched: { pending: PendingCollective; flat: Tensor }[] = [];
      const startReady = () => {
        while (launched.length < buckets.length && ready[launched.length] === buckets[launched.length].members.length) {
          const b = buckets[launched.length];
          launched.push(launch(c, b, leaves, held, op));
          for (const i of b.members) held[i]?.dispose();
        }
      };
      const onLeafGrad = (leaf: Tensor, g: Tensor | null) => {
        const i = index.get(leaf);
        if (i === undefined) return;
        if (prior?.[i]) {
          // Zeros where this micro-batch gave none, as autograd's own gradient of such a leaf.
          const { shape, dtype } = leaves[i];
          held[i] = keep(scope(() => add(toSumDType(prior[i]!), toSumDType(g ?? zeros(shape, { dtype, backend: c.backend })))));
        } else held[i] = g ? retain(g) : null;
        ready[bucketOf[i]]++;
        startReady();
      };
      let result: { value: Tensor; grads: GradsOf<A, N> };
      try {
        result = valueAndGrad(fn, { ...gradOptions, onLeafGrad })(...args);
      } catch (err) {
        for (const t of held) t?.dispose();
        for (const l of launched) l.flat.dispose();
        throw err;
      }
      if (launched.length !== buckets.length) {
        for (const l of launched) l.flat.dispose();
        throw new Error(`dataParallel.valueAndGrad: ${buckets.length - launched.length} gradient bucket(s) never became final; the backward pass missed a parameter`);
      }
      const reduced = waitAll(c, buckets, launched, leaves);
      const grads: unknown = result.grads;
      // Replace each local gradient by its reduced twin, leaf by leaf, in the same structure.
      const byParam = (tree: unknown, gradTree: unknown): unknown => {
        const ps: Tensor[] = [];
        forEachLeaf(tree, (t) => ps.push(t));
        let k = 0;
        return mapTree(gradTree, (g) => {
          // The gradient tree has tensors exactly where the parameter tree has float tensors.
          while (k < ps.length && !isFloat(ps[k].dtype)) k++;
          const p = ps[k++];
          g.dispose();
          const i = index.get(p)!;
          return reshape(reduced[i]!, reduced[i]!.shape);
        });
      };
      const out = typeof argnums === "number" ? byParam(args[argnums], grads) : argnums.map((n, j) => byParam(args[n], (grads as unknown[])[j]));
      for (const t of reduced) t?.dispose();
      return { value: result.value, grads: out as GradsOf<A, N> };
    };
  };

  return { collective: c, syncGradients, valueAndGrad: dpValueAndGrad };
}

/**
 * Numbers summed over ranks (target counts, loss values for logging): one small all-reduce, in
 * f64 where the backend has it (exact for counts), else f32.
 *
 * @example
 * const [globalCount] = allReduceNumbers(collective, [countTargets(targets)]);
 */
export function allReduceNumbers(c: Collective, values: readonly number[]): number[] {
  return scope(() => {
    const dtype: DType = c.backend.capabilities.dtypes.includes("f64") ? "f64" : "f32";
    const local = tensor([...values], [values.length], { dtype, backend: c.backend });
    const total = c.allReduce(local, "sum");
    if (!total.backend.readSync) throw new Error(`allReduceNumbers: the ${total.backend.name} backend cannot read synchronously`);
    return Array.from(total.dataSync());
  });
}
