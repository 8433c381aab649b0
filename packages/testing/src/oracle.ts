/**
 * The float64 oracles live in @lightning-ts/tensor/testing (as its `oracle` namespace); re-exported
 * here flat, under their own names, for this package's modules (`import * as O from "./oracle.js"`).
 */
import { oracle } from "@lightning-ts/tensor/testing";

export type Shape = oracle.Shape;
export const {
  sizeOf,
  unravel,
  ravelBroadcast,
  broadcastShape,
  mapBroadcast,
  reduce,
  matmul,
  permute,
  slice,
  pad,
  concat,
  take,
  scatterAdd,
  softmax,
  crossEntropy,
  rmsNorm,
  lightningAttention,
} = oracle;
