/** Node-only entry: file IO for safetensors checkpoints, and CPU collective groups on worker threads. */
export {
  INDEX_FILE,
  readSafetensors,
  readSafetensorsHeader,
  readSafetensorsRaw,
  readShardedSafetensors,
  writeSafetensors,
  writeAtomically,
  writeShardedSafetensors,
  type Checkpoint,
  type ReadOptions,
} from "./safetensors-node.js";
export { CpuGroupError, cpuRank, runCpuGroup, type CpuRankContext, type RunCpuGroupOptions } from "./collectives-group.js";
