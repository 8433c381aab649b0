/**
 * @lightning-ts/tensor/testing: the test utilities that need nothing but the tensor core, shipped
 * with it (as torch.testing and tfjs-core's test_util are): assertClose, seeded inputs and plain
 * float64 oracles. The conformance suite and backend harness stay in @lightning-ts/testing.
 *
 * @example
 * import { add } from "@lightning-ts/tensor";
 * import { assertClose, oracle, seeded } from "@lightning-ts/tensor/testing";
 * const x = seeded(1).tensor([2, 3]);
 * assertClose(add(x, x), oracle.mapBroadcast([[2, 3]], [x.dataSync()], (v) => 2 * v).data);
 */
export { assertClose, closeness, type CloseOptions, type Closeness } from "./close.js";
export { safetensorsLayout, type SafetensorsEntry } from "./safetensors-layout.js";
export { seeded, type SeededRandom } from "./random.js";
export * as oracle from "./oracle.js";
