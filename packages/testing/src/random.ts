/** Seeded test inputs live in @lightning-ts/tensor/testing; re-exported for this package's modules. */
export { seeded, type SeededRandom } from "@lightning-ts/tensor/testing";
