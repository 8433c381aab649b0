/**
 * Rank side of sequence-parallel.test.ts: this rank's slice of seeded q, k, v, the sequence-parallel
 * forward, and its vjp for seeded cotangents of the output (and of the final state, on the last rank).
 * With `segmentTokens` the rank's backend names that segment length, so the forward keeps its
 * segment states and the backward is given them; the inputs each backward op got are reported.
 */
import { vjp } from "@lightning-ts/autograd";
import { addOpObserver, getBackend, narrow, type Tensor } from "@lightning-ts/tensor";
import { cpuRank } from "@lightning-ts/tensor/node";
import { sequenceParallelLightning } from "../../src/index.js";
import { type SpArgs, spInputs } from "../sp-inputs.js";

export interface SpRankResult {
  output: number[];
  state: number[];
  dq: number[];
  dk: number[];
  dv: number[];
  dS0: number[] | null;
  /** The input count of each lightningAttentionBackward this rank ran. */
  backwardInputs: number[];
}

cpuRank<SpRankResult, SpArgs>(({ collective: c, rank, worldSize, args }) => {
  const L0 = args.segmentTokens;
  if (L0) Object.assign(getBackend(), { lightningSegmentTokens: () => L0 });
  const backwardInputs: number[] = [];
  const stop = addOpObserver((r) => {
    if (r.op === "lightningAttentionBackward") backwardInputs.push(r.inputs.length);
  });
  const all = spInputs(args);
  const L = args.T / worldSize;
  const part = (t: Tensor) => narrow(t, 2, rank * L, L);
  const withS0 = args.withInitialState && rank === 0;
  const primals = [part(all.q), part(all.k), part(all.v), all.s0] as const;
  const { out, vjp: pull } = vjp(
    (q: Tensor, k: Tensor, v: Tensor, s0: Tensor) =>
      sequenceParallelLightning(c, q, k, v, all.slopes, { blockSize: args.blockSize, initialState: withS0 ? s0 : undefined }),
    ...primals,
  );
  const [dq, dk, dv, dS0] = pull({ output: part(all.dO), state: rank === worldSize - 1 ? all.dS : null });
  stop();
  const read = (t: Tensor | null) => (t ? Array.from(t.dataSync()) : []);
  return {
    output: read(out.output),
    state: read(out.state),
    dq: read(dq),
    dk: read(dk),
    dv: read(dv),
    dS0: withS0 ? read(dS0) : null,
    backwardInputs,
  };
});
