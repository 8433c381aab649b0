/// <reference types="@webgpu/types" />
/**
 * @lightning-ts/webgpu: the WebGPU backend of lightning-ts, in the browser and in Node (Dawn).
 *
 * @example
 * import { setBackend, randomNormal, lightningAttention, slopesTensor, tnlSlopes } from "@lightning-ts/tensor";
 * import { createWebGpuBackend } from "@lightning-ts/webgpu";
 * setBackend(await createWebGpuBackend());
 * const [q, k, v] = [1, 2, 3].map((seed) => randomNormal([1, 8, 256, 64], { seed, std: 0.1 }));
 * const o = lightningAttention(q, k, v, slopesTensor(tnlSlopes(8, 0, 4)));
 * console.log((await o.data()).length); // 131072
 */
export { createWebGpuBackend, type DispatchTime, WebGpuBackend, type WebGpuBackendOptions } from "./backend.js";
export { FORWARD_VARIANTS, type ForwardVariant, kernelChoices, type KernelChoices } from "./kernels/choices.js";
export { acquireDevice, type AcquiredDevice, type DeviceOptions } from "./device.js";
export { type CopyOrder, probeCopy } from "./probe.js";
export { WebGpuError } from "./runtime.js";
