/**
 * @lightning-ts/tnl: the TransNormerLLM language model on lightning-ts.
 *
 * @example
 * import { loadCheckpoint, generate, greedy } from "@lightning-ts/tnl";
 * const model = await loadCheckpoint("TransNormerLLM-1B");
 * for await (const ev of generate(model, [[1, 306, 4658]], { maxTokens: 20, sampler: greedy() })) console.log(ev.token);
 */
export * from "./config.js";
export * from "./errors.js";
export * from "./params.js";
export * from "./model.js";
export * from "./state.js";
export * from "./checkpoint.js";
export * from "./sampling.js";
export * from "./generate.js";
export * from "./decoder.js";
export * from "./train-step.js";
export * from "./precision.js";
export * from "./load-dtype.js";
export * from "./published.js";
export * from "./convert.js";
export { TorchCheckpoint, type TorchTensorInfo } from "./torch/file.js";
export { TorchFileError } from "./torch/zip.js";
