/**
 * Rank side of tnl-sequence-parallel.test.ts: this rank's slice of every row, its part of the
 * loss with sequence-parallel Lightning Attention, the gradients summed over the ranks. With
 * `dp` > 1 the world is dp × sp: sequence-parallel groups of consecutive ranks, each group taking
 * its own rows; the gradient sum and the target count run over the whole world.
 */
import { valueAndGrad } from "@lightning-ts/autograd";
import { type Collective, createCpuGroup } from "@lightning-ts/tensor";
import { cpuRank } from "@lightning-ts/tensor/node";
import { initParams, namedParameters, type TnlParams } from "@lightning-ts/tnl";
import { allReduceNumbers, countTargets, dataParallel, rowsForRank, sequenceParallelLoss, sliceForRank } from "../../src/index.js";
import { tinyConfig } from "../tnl-setup.js";

export interface SpTnlArgs {
  rows: number[][];
  labels: number[][];
  dp: number;
  /** Shared state of each sequence-parallel group, made by the test (worker threads cannot make groups for each other). */
  groups?: ReturnType<typeof createCpuGroup>[];
}

cpuRank<{ loss: number; grads: Record<string, number[]> }, SpTnlArgs>(async ({ collective: world, rank, worldSize, args }) => {
  const { CpuCollective } = await import("@lightning-ts/tensor");
  const sp = worldSize / args.dp;
  const group = Math.floor(rank / sp);
  const spc: Collective = args.groups ? new CpuCollective(args.groups[group], rank % sp, world.backend) : world;
  const config = tinyConfig();
  const params = initParams(config, { seed: 5 });
  const rows = args.dp > 1 ? rowsForRank(args.rows, group, args.dp) : args.rows;
  const labels = args.dp > 1 ? rowsForRank(args.labels, group, args.dp) : args.labels;
  const slice = sliceForRank(rows, spc.rank, spc.worldSize, { labels });
  const [globalCount] = allReduceNumbers(world, [countTargets(slice.targets)]);
  const { value, grads } = valueAndGrad((p: TnlParams) => sequenceParallelLoss(spc, p, config, slice, { globalCount, blockSize: 4 }))(params);
  const total = dataParallel(world).syncGradients(grads);
  const named = namedParameters(config, total as unknown as TnlParams);
  return {
    loss: allReduceNumbers(world, [value.dataSync()[0]])[0],
    grads: Object.fromEntries(Object.entries(named).map(([k, t]) => [k, Array.from(t.dataSync())])),
  };
});
