/** Seeded whole-sequence inputs of the sequence-parallel tests, the same in every process. */
import { type DType, slopesTensor, type Tensor, tnlSlopes } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/tensor/testing";

export interface SpArgs {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
  dtype: DType;
  blockSize: number;
  seed: number;
  withInitialState: boolean;
  /** Ranks whose backend names this segment length (`lightningSegmentTokens`), as CUDA's does at batch 1. */
  segmentTokens?: number;
}

export interface SpInputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dO: Tensor;
  dS: Tensor;
  s0: Tensor;
  slopes: Tensor;
}

/** The whole-sequence inputs, identical in every process for the same args. */
export function spInputs(a: SpArgs): SpInputs {
  const rng = seeded(a.seed);
  const sdt = a.dtype === "f64" ? "f64" : "f32";
  return {
    q: rng.tensor([a.B, a.H, a.T, a.D], { dtype: a.dtype, std: 0.5 }),
    k: rng.tensor([a.B, a.H, a.T, a.D], { dtype: a.dtype, std: 0.5 }),
    v: rng.tensor([a.B, a.H, a.T, a.E], { dtype: a.dtype }),
    dO: rng.tensor([a.B, a.H, a.T, a.E], { dtype: a.dtype }),
    dS: rng.tensor([a.B, a.H, a.D, a.E], { dtype: sdt }),
    s0: rng.tensor([a.B, a.H, a.D, a.E], { dtype: sdt }),
    // Three layers' worth of decays: strong, medium and almost none.
    slopes: slopesTensor(tnlSlopes(a.H, a.seed % 3, 3)),
  };
}
