/**
 * Rank side of dp-accumulate.test.ts: k micro-batches of a small loss over f32, bf16 and integer
 * parameters, summed over ranks two ways: locally accumulated then `syncGradients` (the plain
 * twin), and the earlier micro-batches accumulated, the last through `dp.valueAndGrad` with them as
 * `accumulated` (overlapped). Returns both, each micro-batch's local gradients (for the test's f64
 * sum), and the order of the bucket all-reduces against a marker in the last backward pass.
 */
import { customOp, disposeTree, flattenTree, type GradTree, mapTree, valueAndGrad } from "@lightning-ts/autograd";
import { add, cast, type Collective, matmul, mul, type PendingCollective, sum, square, type Tensor } from "@lightning-ts/tensor";
import { cpuRank } from "@lightning-ts/tensor/node";
import { seeded } from "@lightning-ts/tensor/testing";
import { dataParallel } from "../../src/index.js";

export interface DpAccumulateArgs {
  microBatches: number;
  bucketBytes: number;
}

export interface DpAccumulateResult {
  plain: Record<string, { dtype: string; values: number[] }>;
  overlapped: Record<string, { dtype: string; values: number[] }>;
  /** Per micro-batch, this rank's own gradients by path (f64 copies of their values). */
  local: Record<string, number[]>[];
  /** Overlapped path: "async" for each bucket all-reduce, "marker" when the backward reached w's first use. */
  events: string[];
  plainEvents: string[];
}

type Params = { u: Tensor; w: Tensor; h: Tensor; ids: Tensor };

/** Every call of `inner`, with "async" logged for each all-reduce started on the communication stream. */
function recording(inner: Collective, events: string[]): Collective {
  return {
    rank: inner.rank,
    worldSize: inner.worldSize,
    backend: inner.backend,
    allReduce: (x, op, o) => inner.allReduce(x, op, o),
    allReduceAsync: (x, op, o): PendingCollective => {
      events.push("async");
      return inner.allReduceAsync(x, op, o);
    },
    allGather: (x) => inner.allGather(x),
    reduceScatter: (x, op) => inner.reduceScatter(x, op),
    broadcast: (x, root) => inner.broadcast(x, root),
    send: (x, peer) => inner.send(x, peer),
    recv: (shape, dtype, peer) => inner.recv(shape, dtype, peer),
    sendAsync: (x, peer) => inner.sendAsync(x, peer),
    recvAsync: (shape, dtype, peer) => inner.recvAsync(shape, dtype, peer),
    barrier: () => inner.barrier(),
    dispose: () => inner.dispose(),
  };
}

cpuRank<DpAccumulateResult, DpAccumulateArgs>(({ collective, rank, args }) => {
  const rng = seeded(900 + 17 * rank);
  // Odd sizes; h in bf16 (its gradients add up in f32), ids without a gradient. Buckets go in
  // reverse tree order, so u, which the last backward pass finishes only at its end, comes last.
  const params: Params = { u: seeded(5).tensor([3]), w: seeded(3).tensor([7, 5]), h: seeded(4).tensor([13], { dtype: "bf16" }), ids: seeded(6).ints([2], 9) };
  const inputs = Array.from({ length: args.microBatches }, () => ({ x: rng.tensor([4, 7]), y: rng.tensor([13], { dtype: "bf16" }), z: rng.tensor([3]) }));
  const events: string[] = [];
  const plainEvents: string[] = [];
  const last = args.microBatches - 1;
  const lossOf = (m: number, log: string[]) => (p: Params) => {
    // Identity on w whose backward logs the moment the pass reaches w's first use (its last op).
    const [w] = customOp("marker", [p.w], ([a]) => [a], ([g]) => (log.push("marker"), [g]));
    const { x, y, z } = inputs[m];
    let l = add(mul(sum(square(matmul(x, w))), 0.01), sum(cast(mul(p.h, y), "f32")));
    // u gets no gradient from the last micro-batch: accumulated plus zeros.
    if (m < last) l = add(l, sum(mul(p.u, z)));
    return l;
  };
  const addUp = (a: GradTree<Params>, b: GradTree<Params>) => {
    const mine = flattenTree(b);
    const f32 = (t: Tensor) => (t.dtype === "bf16" ? cast(t, "f32") : t);
    return mapTree(a, (g, path) => add(f32(g), f32(mine.get(path)!))) as GradTree<Params>;
  };
  const dump = (tree: unknown) => Object.fromEntries([...flattenTree(tree)].map(([path, t]) => [path, { dtype: t.dtype, values: Array.from(t.dataSync()) }]));

  // Local gradients of each micro-batch, for the test's own sum.
  const local = inputs.map((_, m) => {
    const { value, grads } = valueAndGrad(lossOf(m, []))(params);
    const out = Object.fromEntries([...flattenTree(grads)].map(([path, t]) => [path, Array.from(t.dataSync())]));
    disposeTree([value, grads]);
    return out;
  });

  // The plain twin: every micro-batch summed locally, then all-reduced after the last backward pass.
  const dpPlain = dataParallel(recording(collective, plainEvents), { bucketBytes: args.bucketBytes });
  let acc: GradTree<Params> | null = null;
  for (let m = 0; m <= last; m++) {
    const { value, grads } = valueAndGrad(lossOf(m, m === last ? plainEvents : []))(params);
    value.dispose();
    if (acc) {
      const next = addUp(acc, grads);
      disposeTree([acc, grads]);
      acc = next;
    } else acc = grads;
  }
  const plainGrads = dpPlain.syncGradients(acc!);
  const plain = dump(plainGrads);
  disposeTree([acc, plainGrads]);

  // Overlapped: the earlier micro-batches summed locally, the last one's gradients join them in the backward pass.
  const dp = dataParallel(recording(collective, events), { bucketBytes: args.bucketBytes });
  let earlier: GradTree<Params> | undefined;
  for (let m = 0; m < last; m++) {
    const { value, grads } = valueAndGrad(lossOf(m, []))(params);
    value.dispose();
    if (earlier) {
      const next = addUp(earlier, grads);
      disposeTree([earlier, grads]);
      earlier = next;
    } else earlier = grads;
  }
  const { value, grads } = dp.valueAndGrad(lossOf(last, events), { accumulated: earlier })(params);
  const overlapped = dump(grads);
  disposeTree([value, grads, earlier, params]);
  return { plain, overlapped, local, events, plainEvents };
});
