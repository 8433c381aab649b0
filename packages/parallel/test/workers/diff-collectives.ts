/** Rank side of differentiable-collectives.test.ts: gradients of Σ w_r ⊙ op(x_r) for each op. */
import { grad } from "@lightning-ts/autograd";
import { mul, sum, type Tensor } from "@lightning-ts/tensor";
import { cpuRank } from "@lightning-ts/tensor/node";
import { inputs } from "../diff-inputs.js";
import { allGather, allReduce, broadcast, copyToRanks, reduceFromRanks, reduceScatter } from "../../src/index.js";

cpuRank<Record<string, number[]>, undefined>(({ collective: c, rank, worldSize }) => {
  const { x, w } = inputs(rank, worldSize);
  const ops: Record<keyof typeof w, (t: Tensor) => Tensor> = {
    allGather: (t) => allGather(c, t),
    allReduce: (t) => allReduce(c, t),
    allReduceAvg: (t) => allReduce(c, t, "avg"),
    reduceScatter: (t) => reduceScatter(c, t),
    reduceScatterAvg: (t) => reduceScatter(c, t, "avg"),
    broadcast: (t) => broadcast(c, t, worldSize - 1),
    copyToRanks: (t) => copyToRanks(c, t),
    reduceFromRanks: (t) => reduceFromRanks(c, t),
  };
  const out: Record<string, number[]> = {};
  for (const [name, op] of Object.entries(ops) as [keyof typeof w, (t: Tensor) => Tensor][]) {
    out[name] = Array.from(grad((t: Tensor) => sum(mul(op(t), w[name])))(x)!.dataSync());
  }
  return out;
});
