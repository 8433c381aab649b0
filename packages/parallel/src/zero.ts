/**
 * ZeRO-1: optimizer-state sharding for data parallelism. Every rank still holds all parameters and
 * the whole summed gradient, but keeps optimizer state (AdamW's moments, the f32 master copy of a
 * half-precision parameter) only for the parameters it owns, about 1/N of them, and updates only
 * those; each updated parameter is then broadcast from its owner, so every rank holds the same
 * parameters again.
 *
 * The split is by whole parameters, balanced by element count (largest first, each to the least
 * loaded rank), so the optimizer runs unchanged on a subset of the tree. Gradients arrive
 * all-reduced (`dataParallel`) rather than reduce-scattered: clipping needs the norm of the whole
 * gradient on every rank, and the default data-parallel path stays the same code.
 *
 * Checkpoints keep the one-process format: `gatherState` collects the full state on rank 0, and
 * `keepShard` drops what a rank does not own after it loaded a full state, so a run resumes on any
 * number of ranks, with or without sharding.
 */
import { flattenTree, type GradTree, mapTree } from "@lightning-ts/autograd";
import type { BaseSettings, Optimizer, OptimizerMeta, OptimizerState, TentativeStep } from "@lightning-ts/autograd/optim";
import { type Collective, type DType, isFloat, type Tensor, tensor } from "@lightning-ts/tensor";

export interface ZeroOptimizer {
  readonly collective: Collective;
  readonly optimizer: Optimizer<BaseSettings>;
  /**
   * The update of `optimizer.tentativeStep` with this rank's parameters updated by its shard of the
   * state and the others received from their owners. Every rank must call it with the same
   * (summed) gradients; settle it on every rank the same way (the verdict must be global).
   */
  tentativeStep<P>(params: P, grads: GradTree<P>): TentativeStep<P>;
  /** The full optimizer state on rank 0 (tensors the caller disposes), null on other ranks. */
  gatherState<P>(params: P): Promise<OptimizerState | null>;
  /** Drops the state of parameters this rank does not own (after loading a full state). */
  keepShard<P>(params: P): void;
}

/**
 * The rank that owns each float parameter, by path: largest first, each to the least loaded rank
 * (the lowest on a tie), so every rank computes the same split from the same tree.
 *
 * @example
 * shardOwners({ a: zeros([6]), b: zeros([4]), c: zeros([3]) }, 2); // Map { a → 0, b → 1, c → 1 }
 */
export function shardOwners(params: unknown, worldSize: number): Map<string, number> {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`shardOwners: worldSize must be a positive integer, got ${worldSize}`);
  const seen = new Set<Tensor>();
  const leaves: { path: string; size: number }[] = [];
  for (const [path, t] of flattenTree(params)) {
    if (!isFloat(t.dtype) || seen.has(t)) continue;
    seen.add(t);
    leaves.push({ path, size: t.size });
  }
  // A stable sort keeps tree order among equal sizes.
  leaves.sort((a, b) => b.size - a.size);
  const load = new Array<number>(worldSize).fill(0);
  const owners = new Map<string, number>();
  for (const { path, size } of leaves) {
    const r = load.indexOf(Math.min(...load));
    owners.set(path, r);
    load[r] += size;
  }
  return owners;
}

/** The parameter path of a state tensor named `<slot>/<path>`. */
const pathOfKey = (key: string) => key.slice(key.indexOf("/") + 1);

/** Rank `from`'s JSON value, received on rank 0 (null elsewhere), as f32 bytes: exact, and every backend has f32. */
async function sendJson(c: Collective, value: unknown, from: number): Promise<unknown> {
  if (c.rank === from) {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    for (const t of [tensor([bytes.length], [1], { dtype: "f32", backend: c.backend }), tensor(Array.from(bytes), [bytes.length], { dtype: "f32", backend: c.backend })]) {
      c.send(t, 0);
      t.dispose();
    }
    return null;
  }
  const length = c.recv([1], "f32", from);
  const n = (await length.data())[0];
  length.dispose();
  const payload = c.recv([n], "f32", from);
  const bytes = Uint8Array.from(await payload.data());
  payload.dispose();
  return JSON.parse(new TextDecoder().decode(bytes));
}

/**
 * Shards `optimizer`'s state over the ranks of `collective`.
 *
 * @example
 * const zero = zeroOptimizer(collective, new AdamW({ lr: 1e-3 }));
 * const { value, grads } = dataParallel(collective).valueAndGrad(lossFn)(params);
 * const next = zero.tentativeStep(params, grads);
 * next.commit(); // on every rank, or rollback() on every rank
 * params = next.params;
 */
export function zeroOptimizer(collective: Collective, optimizer: Optimizer<BaseSettings>): ZeroOptimizer {
  const c = collective;

  const tentativeStep = <P>(params: P, grads: GradTree<P>): TentativeStep<P> => {
    const owners = shardOwners(params, c.worldSize);
    const mine = mapTree(grads, (g, path) => (owners.get(path) === c.rank ? g : null)) as GradTree<P>;
    const inner = optimizer.tentativeStep(params, mine);
    const old = flattenTree(params);
    const updated = flattenTree(inner.params);
    // Each parameter with a gradient from its owner, in the same (tree) order on every rank.
    const received = new Map<Tensor, Tensor>();
    for (const path of flattenTree(grads).keys()) {
      const owner = owners.get(path);
      const p = updated.get(path);
      if (owner === undefined || !p || received.has(old.get(path)!)) continue;
      const value = c.broadcast(p, owner);
      if (owner === c.rank) value.dispose();
      else received.set(old.get(path)!, value);
    }
    const next = mapTree(inner.params, (t, path) => received.get(old.get(path)!) ?? t) as P;
    return {
      params: next,
      commit: () => {
        inner.commit();
        for (const p of received.keys()) p.dispose();
      },
      rollback: () => {
        for (const t of received.values()) t.dispose();
        return inner.rollback();
      },
    };
  };

  const gatherState = async <P>(params: P): Promise<OptimizerState | null> => {
    const own = optimizer.stateDict();
    const tensors: Record<string, Tensor> = c.rank === 0 ? own.tensors : {};
    const groups: Record<string, string> = { ...own.meta.params };
    for (let r = 1; r < c.worldSize; r++) {
      if (c.rank !== 0 && c.rank !== r) continue;
      const header = (await sendJson(c, c.rank === r ? { keys: Object.keys(own.tensors).map((k) => [k, own.tensors[k].shape, own.tensors[k].dtype]), params: own.meta.params } : null, r)) as {
        keys: [string, number[], DType][];
        params: Record<string, string>;
      } | null;
      if (c.rank === r) for (const t of Object.values(own.tensors)) c.send(t, 0);
      else if (header) {
        for (const [key, shape, dtype] of header.keys) tensors[key] = c.recv(shape, dtype, r);
        Object.assign(groups, header.params);
      }
    }
    if (c.rank !== 0) {
      for (const t of Object.values(own.tensors)) t.dispose();
      return null;
    }
    // Parameters in tree order (each one's slots in their order), as one process writes them.
    const order = [...flattenTree(params).keys()];
    const at = new Map(order.map((p, i) => [p, i]));
    const keys = Object.keys(tensors).sort((a, b) => at.get(pathOfKey(a))! - at.get(pathOfKey(b))!);
    const meta: OptimizerMeta = { ...own.meta, params: Object.fromEntries(order.filter((p) => p in groups).map((p) => [p, groups[p]])) };
    return { tensors: Object.fromEntries(keys.map((k) => [k, tensors[k]])), meta };
  };

  const keepShard = <P>(params: P): void => {
    const owners = shardOwners(params, c.worldSize);
    const { tensors, meta } = optimizer.stateDict();
    const kept: Record<string, Tensor> = {};
    for (const [key, t] of Object.entries(tensors)) if (owners.get(pathOfKey(key)) === c.rank) kept[key] = t;
    const groups = Object.fromEntries(Object.entries(meta.params).filter(([path]) => owners.get(path) === c.rank));
    optimizer.loadStateDict({ tensors: kept, meta: { ...meta, params: groups } });
    for (const t of Object.values(tensors)) t.dispose();
  };

  return { collective: c, optimizer, tentativeStep, gatherState, keepShard };
}

/** Elements of optimizer state (all slots) that `optimizer` holds: 1/N of the whole under ZeRO-1. */
export function stateElements(optimizer: Optimizer<BaseSettings>): number {
  const { tensors } = optimizer.stateDict();
  let n = 0;
  for (const t of Object.values(tensors)) {
    n += t.size;
    t.dispose();
  }
  return n;
}
