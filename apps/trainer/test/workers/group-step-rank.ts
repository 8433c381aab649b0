/**
 * Rank side of group-step.test.ts: a few `groupTrainStep`s of a small TNL on this rank's part of
 * each global batch, once with the bucket all-reduces overlapping the last backward pass and once
 * after it (`overlap: false`), from the same start. Returns both runs' results and, per step, the
 * order in which the world's collectives and the matmuls ran.
 */
import { disposeTree } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { zeroOptimizer } from "@lightning-ts/parallel";
import { addOpObserver, type Collective, createCpuGroup, type PendingCollective } from "@lightning-ts/tensor";
import { cpuRank } from "@lightning-ts/tensor/node";
import { initParams, makeConfig, namedParameters, splitBatch, type TnlParams } from "@lightning-ts/tnl";
import { groupTrainStep, rankRows } from "../../src/group-step.js";

export interface GroupStepArgs {
  /** Global batches: rows of T + 1 token ids. */
  batches: number[][][];
  /** Data-parallel ranks; the world is dp × (worldSize / dp) sequence-parallel ranks. */
  dp: number;
  /** Rows per micro-batch. */
  microBatch: number;
  bucketBytes: number;
  gradClip: number;
  /** Steps (1-based) whose loss is multiplied by NaN: skipped. */
  nonFinite: number[];
  zero: boolean;
  /** Shared state of each sequence-parallel group when dp > 1 and sp > 1 (made by the test). */
  spGroups?: ReturnType<typeof createCpuGroup>[];
}

export interface GroupStepRun {
  losses: number[];
  gradNorms: number[];
  skipped: boolean[];
  params: Record<string, number[]>;
  /** Per step: "async" (a bucket all-reduce started), "allReduce", "matmul". */
  events: string[][];
}

/** `inner` with every all-reduce logged into `events`' last step. */
function recording(inner: Collective, events: string[][]): Collective {
  const log = (e: string) => events[events.length - 1]?.push(e);
  return {
    rank: inner.rank,
    worldSize: inner.worldSize,
    backend: inner.backend,
    allReduce: (x, op, o) => (log("allReduce"), inner.allReduce(x, op, o)),
    allReduceAsync: (x, op, o): PendingCollective => (log("async"), inner.allReduceAsync(x, op, o)),
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

// Odd sizes: vocabulary 37, width 15, 3 heads of 5.
const config = makeConfig({ vocabSize: 37, dModel: 15, numLayers: 2, numHeads: 3, gluDim: 22 });

cpuRank<{ overlapped: GroupStepRun; plain: GroupStepRun }, GroupStepArgs>(async ({ collective, rank, worldSize, args }) => {
  const { CpuCollective } = await import("@lightning-ts/tensor");
  const sp = worldSize / args.dp;
  const dpRank = Math.floor(rank / sp);
  const rows = args.batches[0].length;
  const span = args.batches[0][0].length;
  const T = span - 1;
  const mine = rankRows(rows, dpRank, args.dp);
  const spGroup = args.spGroups ? new CpuCollective(args.spGroups[dpRank], rank % sp, collective.backend) : null;

  const run = async (overlap: boolean): Promise<GroupStepRun> => {
    const events: string[][] = [];
    const world = recording(collective, events);
    const spc = sp === 1 ? null : (spGroup ?? world);
    let params: TnlParams = initParams(config, { seed: 23 });
    const adam = new AdamW({ lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.1 });
    const optimizer = args.zero ? zeroOptimizer(world, adam) : undefined;
    const out: GroupStepRun = { losses: [], gradNorms: [], skipped: [], params: {}, events };
    const stop = addOpObserver((r) => r.op === "matmul" && events[events.length - 1]?.push("matmul"));
    try {
      for (const [i, batch] of args.batches.entries()) {
        events.push([]);
        const ids = Int32Array.from(batch.slice(mine.first, mine.first + mine.count).flat());
        const step = await groupTrainStep(params, config, adam, splitBatch(ids, mine.count, span, args.microBatch), { world, sp: spc }, {
          globalCount: rows * T,
          gradClip: args.gradClip,
          lossFactor: args.nonFinite.includes(i + 1) ? NaN : 1,
          zero: optimizer,
          overlap,
          bucketBytes: args.bucketBytes,
        });
        params = step.params;
        out.losses.push(step.loss);
        out.gradNorms.push(step.gradNorm);
        out.skipped.push(step.skipped);
      }
    } finally {
      stop();
    }
    out.params = Object.fromEntries(Object.entries(namedParameters(config, params)).map(([k, t]) => [k, Array.from(t.dataSync())]));
    disposeTree(params);
    return out;
  };
  const result = { overlapped: await run(true), plain: await run(false) };
  spGroup?.dispose();
  return result;
});
