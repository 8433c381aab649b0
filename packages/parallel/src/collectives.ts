/**
 * Differentiable collectives: each is one node of the autograd tape whose backward is the adjoint
 * collective, so `valueAndGrad` differentiates through them on every rank.
 *
 * Convention: rank r differentiates its own objective L_r, and the gradients are those of the
 * group's total L = Σ_r L_r. The adjoints follow from it: an all-gather's gradient is the
 * reduce-scatter (sum) of the ranks' cotangents, an all-reduce's the all-reduce of the cotangents,
 * a reduce-scatter's the all-gather. Every rank must record the same collectives in the same order
 * (as in the forward), and their backward runs on every rank even where no cotangent reached it.
 *
 * Letters: N the number of ranks.
 */
import { customOp } from "@lightning-ts/autograd";
import { type Collective, mul, reshape, type Tensor, zeros } from "@lightning-ts/tensor";

type SumOrAvg = "sum" | "avg";

function checkOp(name: string, op: string): void {
  if (op !== "sum" && op !== "avg") throw new Error(`${name}: op must be 'sum' or 'avg' (the differentiable reductions), got ${JSON.stringify(op)}`);
}

/**
 * Every rank's x stacked in rank order, [N, ...x.shape]. Backward: the reduce-scatter (sum) of the
 * cotangents, each rank getting the sum of what every rank's objective sent to its own x.
 *
 * @example
 * const states = allGather(collective, finalState); // [N, B, H, D, E]
 */
export function allGather(c: Collective, x: Tensor): Tensor {
  const [y] = customOp(
    "allGather",
    [x],
    ([a]) => [c.allGather(a)],
    ([g]) => [reshape(c.reduceScatter(g, "sum"), x.shape)],
    { always: true },
  );
  return y;
}

/** Sum (or mean) over ranks; every rank gets it. Backward: the same all-reduce of the cotangents. */
export function allReduce(c: Collective, x: Tensor, op: SumOrAvg = "sum"): Tensor {
  checkOp("allReduce", op);
  const [y] = customOp("allReduce", [x], ([a]) => [c.allReduce(a, op)], ([g]) => [c.allReduce(g, op)], { always: true });
  return y;
}

/**
 * x [N·n, ...] summed (or averaged) over ranks, rank r keeping rows r·n … (r+1)·n − 1. Backward: the
 * all-gather of the cotangents, flattened back to [N·n, ...] (scaled by 1/N for avg).
 */
export function reduceScatter(c: Collective, x: Tensor, op: SumOrAvg = "sum"): Tensor {
  checkOp("reduceScatter", op);
  const [y] = customOp(
    "reduceScatter",
    [x],
    ([a]) => [c.reduceScatter(a, op)],
    ([g]) => {
      const gathered = reshape(c.allGather(g), x.shape);
      // avg divides each rank's share by N, so its adjoint does too.
      return [op === "avg" ? mul(gathered, 1 / c.worldSize) : gathered];
    },
    { always: true },
  );
  return y;
}

/**
 * A tensor that every rank holds the same value of, entering per-rank computation (Megatron's
 * "copy to the tensor-parallel region"): identity forward; backward: the all-reduce (sum) of the
 * cotangents, since each rank's objective used the same value.
 */
export function copyToRanks(c: Collective, x: Tensor): Tensor {
  const [y] = customOp("copyToRanks", [x], ([a]) => [a], ([g]) => [c.allReduce(g, "sum")], { always: true });
  return y;
}

/**
 * The sum over ranks of per-rank partial results, where the result feeds one objective that every
 * rank computes identically (Megatron's "reduce from the tensor-parallel region"): all-reduce
 * forward; backward: the cotangent as it is (each rank's copy of the objective stands for the one
 * objective, so its cotangent is not summed again).
 */
export function reduceFromRanks(c: Collective, x: Tensor): Tensor {
  const [y] = customOp("reduceFromRanks", [x], ([a]) => [c.allReduce(a, "sum")], ([g]) => [g]);
  return y;
}

/** Rank `root`'s x on every rank. Backward: the sum of the cotangents, to the root (zeros elsewhere). */
export function broadcast(c: Collective, x: Tensor, root: number): Tensor {
  const [y] = customOp(
    "broadcast",
    [x],
    ([a]) => [c.broadcast(a, root)],
    ([g]) => {
      const total = c.allReduce(g, "sum");
      return [c.rank === root ? total : zeros(x.shape, { dtype: x.dtype, backend: x.backend })];
    },
    { always: true },
  );
  return y;
}
