/**
 * @lightning-ts/tensor: tensors, the backend contract, the closed op set and the CPU backend.
 *
 * @example
 * import { tensor, matmul, scope } from "@lightning-ts/tensor";
 * const y = scope(() => matmul(tensor([[1, 2], [3, 4]]), tensor([[5], [6]])));
 * console.log(await y.array()); // [[17], [39]]
 */
import { createCpuBackend } from "./cpu/backend.js";
import { setDefaultBackendFactory } from "./engine.js";

setDefaultBackendFactory(() => createCpuBackend());

export * from "./dtype.js";
export * from "./errors.js";
export * from "./shape.js";
export type * from "./backend.js";
export { ALIASED_OUTPUTS, isUnsupported } from "./backend.js";
export * from "./ops/attrs.js";
export { OP_SPECS, matmulDims, type OpSpec, type OpSpecTable, type TensorInfo } from "./ops/specs.js";
export * from "./api/ops.js";
export * from "./api/lightning.js";
export * from "./api/decode.js";
export * from "./api/in-place.js";
export { type AllReduceOptions, allReduceInPlace, type Collective, type PendingCollective, type ReduceOp } from "./collectives.js";
export {
  CollectiveAbortedError,
  CollectiveTimeoutError,
  CpuCollective,
  abortCpuGroup,
  createCpuGroup,
  type CpuGroupOptions,
  type CpuGroupShared,
} from "./collectives-cpu.js";
export { formatProfile, profileOps, type OpProfile, type OpProfileRow } from "./profile.js";
export {
  addOpObserver,
  addWriteObserver,
  getBackend,
  setBackend,
  setDefaultBackendFactory,
  type OpObserver,
  type OpRecord,
  type RunOpOptions,
  type WriteObserver,
} from "./engine.js";
export {
  Tensor,
  beginScope,
  collectTensors,
  endScope,
  findLeaks,
  keep,
  liveTensorCount,
  liveTensors,
  retain,
  scope,
  type DataHandle,
  type NestedArray,
  type ScopeFrame,
} from "./tensor.js";
export { CpuBackend, createCpuBackend, type CpuBackendOptions } from "./cpu/backend.js";
export type { CpuStorage } from "./cpu/storage.js";
export {
  counterBlock,
  fillNormal,
  fillUniform,
  normalFromU32,
  philox4x32,
  seedKey,
  uniformFromU32,
  type NormalParams,
  type UniformParams,
} from "./rng.js";
export {
  MAX_HEADER_BYTES,
  SafetensorsError,
  decodeSafetensors,
  encodeSafetensors,
  fromTensor,
  headerLength,
  isSafetensorsDType,
  layout,
  loadSafetensors,
  parseHeader,
  selectEntries,
  toRaw,
  toTensor,
  type LayoutItem,
  type RawTensor,
  type SafetensorsDType,
  type SafetensorsEntry,
  type SafetensorsHeader,
} from "./safetensors.js";
