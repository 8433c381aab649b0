/** CPU Lightning Attention kernels (ALGORITHM.md B). */
import type { Kernel, Unsupported } from "../backend.js";
import type { CpuStorage } from "./storage.js";

const pending = { unsupported: "Lightning Attention CPU kernels are not written yet" } as const;
export const lightningAttentionKernel: Kernel<"lightningAttention", CpuStorage> | Unsupported = pending;
export const lightningAttentionBackwardKernel: Kernel<"lightningAttentionBackward", CpuStorage> | Unsupported = pending;
export const lightningStepKernel: Kernel<"lightningStep", CpuStorage> | Unsupported = pending;
