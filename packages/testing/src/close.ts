/** assertClose and closeness live in @lightning-ts/tensor/testing; re-exported for this package's modules. */
export { assertClose, closeness, type CloseOptions, type Closeness } from "@lightning-ts/tensor/testing";
