/**
 * The precision policy of a TNL: which dtype the parameters are stored in and which dtype the
 * weights and activations are computed in. One model file serves every policy — f32 on the CPU,
 * bf16 on CUDA — because tensors carry their dtype and every kernel computes half precision with
 * f32 accumulation. Whatever the policy, these stay f32: the sums inside norms, matmuls and
 * reductions, the loss (softmaxCrossEntropy returns f32 for half-precision logits), the Lightning
 * states, the gradient norm, and in the optimizer the master weights and AdamW moments of
 * half-precision parameters.
 */
import type { Backend } from "@lightning-ts/tensor";
import { TnlInputError } from "./errors.js";

/** The dtypes a TNL runs in. */
export type ModelDType = "f32" | "bf16" | "f16";

/** In the order the command lines list them. */
export const MODEL_DTYPES: readonly ModelDType[] = ["bf16", "f16", "f32"];

export interface Precision {
  /** Dtype the parameters are kept in (what `initParams` makes, `loadCheckpoint` loads and checkpoints store). */
  param: ModelDType;
  /** Dtype of the weights and activations in the forward pass (`ForwardOptions.compute`). */
  compute: ModelDType;
}

/**
 * The policy of `--dtype X`: parameters and compute both in X (like HF `torch_dtype`). Training a
 * half-precision model keeps f32 master weights in the optimizer; f16 also needs a `GradScaler`.
 *
 * @example
 * const p = precision("bf16"); // { param: "bf16", compute: "bf16" }
 * const params = initParams(config, { seed: 0, dtype: p.param });
 */
export function precision(dtype: ModelDType): Precision {
  return { param: dtype, compute: dtype };
}

export function isModelDType(x: unknown): x is ModelDType {
  return typeof x === "string" && (MODEL_DTYPES as readonly string[]).includes(x);
}

/** The dtype a backend runs a TNL in by default: bf16 on CUDA (its fast kernels), f32 elsewhere. */
export function defaultDType(backend: Pick<Backend, "name">): ModelDType {
  return backend.name === "cuda" ? "bf16" : "f32";
}

/** What the command lines say about `--dtype` in their help. */
export const DTYPE_HELP = "bf16, f16 or f32 (default: bf16 on cuda, f32 on cpu and webgpu)";

/**
 * The dtype to run in on `backend`: `requested` when given (checked), else the backend's default.
 * A name that is not a model dtype, or one the backend lacks, is a `TnlInputError` naming `flag`,
 * the backend and the dtypes it has.
 *
 * @example
 * const dtype = resolveDType(getBackend(), opts.dtype); // "f32" on the CPU when not requested
 */
export function resolveDType(backend: Pick<Backend, "name" | "capabilities">, requested?: string | null, flag = "--dtype"): ModelDType {
  if (requested === undefined || requested === null) return defaultDType(backend);
  if (!isModelDType(requested)) throw new TnlInputError(`${flag} must be one of ${MODEL_DTYPES.join(", ")}, got ${JSON.stringify(requested)}`);
  const has = backend.capabilities.dtypes;
  if (!has.includes(requested)) {
    const usable = MODEL_DTYPES.filter((d) => has.includes(d));
    throw new TnlInputError(
      `${flag} ${requested}: the ${backend.name} backend has no ${requested} (it has ${has.join(", ")}; usable here: ${usable.join(", ") || "none"})`,
    );
  }
  return requested;
}
