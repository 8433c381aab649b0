/** Node-only entry: file IO for safetensors checkpoints. */
export {
  INDEX_FILE,
  readSafetensors,
  readSafetensorsHeader,
  readSafetensorsRaw,
  readShardedSafetensors,
  writeSafetensors,
  writeShardedSafetensors,
  type Checkpoint,
  type ReadOptions,
} from "./safetensors-node.js";
