/** Seeded inputs of differentiable-collectives.test.ts, the same in every process. */
import { seeded } from "@lightning-ts/tensor/testing";

export const SHAPE = [6, 5];

/** Rank r's x and its weights for each op (shaped like that op's output), the same in every process. */
export function inputs(rank: number, n: number) {
  const rng = seeded(500 + rank);
  return {
    x: rng.tensor(SHAPE),
    w: {
      allGather: rng.tensor([n, ...SHAPE]),
      allReduce: rng.tensor(SHAPE),
      allReduceAvg: rng.tensor(SHAPE),
      reduceScatter: rng.tensor([SHAPE[0] / n, SHAPE[1]]),
      reduceScatterAvg: rng.tensor([SHAPE[0] / n, SHAPE[1]]),
      broadcast: rng.tensor(SHAPE),
      copyToRanks: rng.tensor(SHAPE),
      reduceFromRanks: rng.tensor(SHAPE),
    },
  };
}
