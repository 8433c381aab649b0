/**
 * @lightning-ts/cuda: the CUDA backend of lightning-ts, a Node native addon.
 *
 * @example
 * import { setBackend, tensor, matmul } from "@lightning-ts/tensor";
 * import { createCudaBackend } from "@lightning-ts/cuda";
 * setBackend(createCudaBackend()); // throws with the reason where no GPU or no addon is available
 * console.log(await matmul(tensor([[1, 2], [3, 4]]), tensor([[5], [6]])).array()); // [[17], [39]]
 */
export { CudaBackend, createCudaBackend, cudaUnavailableReason, type CudaBackendOptions } from "./backend.js";
export { CudaGraph } from "./graph.js";
export type { CudaStorage } from "./kernels.js";
export type { NativeCommunicator, NativeRuntime, RuntimeInfo } from "./native.js";
export {
  CudaCollective,
  createNcclCollective,
  ncclGroup,
  ncclUnavailableReason,
  ncclUniqueId,
  ncclVersion,
  type NcclCollectiveOptions,
} from "./collective.js";
