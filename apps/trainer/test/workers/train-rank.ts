/**
 * Rank side of group-train.test.ts: `train()` as one rank of a group on the CPU. The ranks are
 * worker threads with the CPU collective; the rendezvous store is the real one, served by rank 0
 * on the port the test gives.
 */
import { cpuRank } from "@lightning-ts/tensor/node";
import type { TrainConfig } from "../../src/config.js";
import { joinGroup } from "../../src/group.js";
import { train } from "../../src/train.js";

export interface TrainRankArgs {
  config: TrainConfig;
  port: number;
  sequenceParallel: number;
  cacheDir: string;
  resume?: string;
  /** Settings a resumed run takes from the command line rather than its checkpoint (main.ts's resumeOverrides). */
  resumeOverrides?: Partial<Pick<TrainConfig, "zero">>;
  stopAfterStep?: number;
}

cpuRank<{ losses: { step: number; loss: number }[]; stopped: boolean; summary: boolean }, TrainRankArgs>(async ({ collective, rank, worldSize, args }) => {
  const env = { rank, worldSize, localRank: rank, localWorldSize: worldSize, masterAddr: "127.0.0.1", masterPort: args.port, launcherPid: null };
  const group = await joinGroup(env, {
    timeoutMs: 60_000,
    onPeerLost: (err) => {
      throw err;
    },
  });
  const result = await train({
    config: args.config,
    resume: args.resume,
    resumeOverrides: args.resumeOverrides,
    stopAfterStep: args.stopAfterStep,
    progress: false,
    log: () => {},
    cacheDir: args.cacheDir,
    group: { group, sequenceParallel: args.sequenceParallel, backend: collective.backend, collective: () => Promise.resolve(collective) },
  });
  return { losses: result.losses, stopped: result.stopped, summary: result.summary !== null };
});
