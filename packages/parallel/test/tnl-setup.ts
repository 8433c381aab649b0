/** The tiny TNL and seeded batches shared by the data- and sequence-parallel TNL tests. */
import { makeConfig, type TnlConfig } from "@lightning-ts/tnl";
import { seeded } from "@lightning-ts/tensor/testing";

/** Odd sizes: 3 heads of width 5 (LRPE doubles q/k to 10 on layer 0), a vocabulary of 29. */
export function tinyConfig(): TnlConfig {
  return makeConfig({ vocabSize: 29, dModel: 15, numLayers: 3, numHeads: 3, gluDim: 23, lrpeLayers: [0] });
}

/** `count` batches of `rows` × `T` token ids, a few targets set to −100 in labels. */
export function batches(seed: number, count: number, rows: number, T: number, vocab: number): number[][][] {
  const rng = seeded(seed);
  return Array.from({ length: count }, () => Array.from({ length: rows }, () => Array.from({ length: T }, () => rng.int(vocab))));
}
