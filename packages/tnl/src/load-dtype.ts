/**
 * The dtype a checkpoint's weights are loaded in when the caller names none, by backend and by what
 * the file stores:
 *
 * - cuda: bf16 when the checkpoint stores any half-precision weights (bf16 taken bit for bit, f16
 *   rounded once to bf16, the dtype of its fast kernels); f32 checkpoints stay f32.
 * - webgpu: f16 where the adapter has `shader-f16`, else f32. The WebGPU backend keeps f16 as a
 *   storage type and computes in f32 inside its kernels, so f16 halves memory and bandwidth at the
 *   cost of one rounding per stored value; without the feature f32 is the plainer choice.
 * - the CPU, and any other backend: f32.
 *
 * A dtype the caller names always wins, and one the backend lacks is an error naming it.
 */
import type { Backend } from "@lightning-ts/tensor";
import { type ModelDType, resolveDType } from "./precision.js";

/** What `--dtype` says in the help of the commands that load a checkpoint. */
export const LOAD_DTYPE_HELP = "bf16, f16 or f32 (default: bf16 on cuda for bf16/f16 checkpoints, f16 on webgpu with shader-f16, else f32)";

/**
 * The default load dtype on `backend` for a checkpoint that stores `stored` (safetensors names:
 * F32, BF16, F16). A default the backend lacks falls back to f32.
 *
 * @example
 * defaultLoadDType(getBackend(), ["BF16"]); // "bf16" on cuda, "f32" on the CPU
 */
export function defaultLoadDType(backend: Pick<Backend, "name" | "capabilities">, stored: readonly string[]): ModelDType {
  let dtype: ModelDType = "f32";
  if (backend.name === "cuda" && stored.some((d) => d === "BF16" || d === "F16")) dtype = "bf16";
  else if (backend.name === "webgpu" && backend.capabilities.features.includes("shader-f16")) dtype = "f16";
  return backend.capabilities.dtypes.includes(dtype) ? dtype : "f32";
}

/**
 * The dtype to load in: `requested` when given (checked against the backend; `flag` names it in
 * the error), else `defaultLoadDType`.
 *
 * @example
 * const dtype = loadDType(getBackend(), ["BF16"], opts.dtype, "--dtype");
 */
export function loadDType(backend: Pick<Backend, "name" | "capabilities">, stored: readonly string[], requested?: string | null, flag = "dtype"): ModelDType {
  if (requested === undefined || requested === null) return defaultLoadDType(backend, stored);
  return resolveDType(backend, requested, flag);
}
