/** Rank side of the failure tests: `mode` picks how a rank misbehaves. */
import { cpuRank } from "@lightning-ts/tensor/node";
import { tensor } from "@lightning-ts/tensor";

cpuRank<number, { mode: "throw" | "mismatch" | "absent"; bad: number }>(({ collective: c, rank, args }) => {
  const x = tensor([rank + 1, 2, 3]);
  c.allReduce(x);
  if (rank === args.bad) {
    if (args.mode === "throw") throw new Error(`rank ${rank} broke on purpose`);
    if (args.mode === "mismatch") return c.allGather(tensor([1, 2])).size;
    if (args.mode === "absent") return -1;
  }
  // The others wait here for the rank that failed, mismatched or left.
  return c.allReduce(x).size;
});
