/**
 * Optimizer state files: the slot tensors in a safetensors file, the step counter and settings as
 * JSON in its metadata. Node only: the file functions of the tensor core are loaded on first use,
 * so that importing the optimizers stays possible in a browser.
 */
import type { Backend } from "@lightning-ts/tensor";
import type { OptimizerMeta, OptimizerState } from "./optimizer.js";

/** What the file functions need of an optimizer. */
export interface Stateful {
  stateDict(): OptimizerState;
  loadStateDict(state: OptimizerState): void;
}

/** The metadata key that holds the JSON part. */
export const META_KEY = "lightning-ts.optimizer";

/**
 * Writes the optimizer's state to `path` (atomically).
 *
 * @example
 * await saveOptimizerState(opt, "ckpt/optimizer.safetensors");
 */
export async function saveOptimizerState(optimizer: Stateful, path: string): Promise<void> {
  const { writeSafetensors } = await import("@lightning-ts/tensor/node");
  const { tensors, meta } = optimizer.stateDict();
  try {
    await writeSafetensors(path, tensors, { [META_KEY]: JSON.stringify(meta) });
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
}

/**
 * Restores the state written by `saveOptimizerState` into an optimizer with the same settings.
 *
 * @example
 * const opt = new AdamW({ lr: 1e-3 });
 * await loadOptimizerState(opt, "ckpt/optimizer.safetensors");
 */
export async function loadOptimizerState(optimizer: Stateful, path: string, options: { backend?: Backend } = {}): Promise<void> {
  const { readSafetensors } = await import("@lightning-ts/tensor/node");
  const { tensors, metadata } = await readSafetensors(path, { backend: options.backend });
  try {
    const json = metadata[META_KEY];
    if (json === undefined) throw new Error(`loadOptimizerState: ${path} has no '${META_KEY}' metadata: not an optimizer state file`);
    optimizer.loadStateDict({ tensors, meta: JSON.parse(json) as OptimizerMeta });
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
}
