/** The float64 definition of `lightningState`, shared by its CPU and CUDA tests. */

export interface StateDims {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
}

/** Σ_t w_t k_tᵀ v_t in float64 from flat [B, H, T, D] / [B, H, T, E] values, w_t = exp(−s·(T−1−t)), or exp(−s·(t+1)) reversed. */
export function stateDefinition(dims: StateDims, k: ArrayLike<number>, v: ArrayLike<number>, slopes: ArrayLike<number>, reverse: boolean): Float64Array {
  const { B, H, T: L, D, E } = dims;
  const S = new Float64Array(B * H * D * E);
  for (let bh = 0; bh < B * H; bh++) {
    for (let t = 0; t < L; t++) {
      const w = Math.exp(-slopes[bh % H] * (reverse ? t + 1 : L - 1 - t));
      for (let d = 0; d < D; d++) {
        const kw = w * k[(bh * L + t) * D + d];
        if (kw === 0) continue;
        for (let e = 0; e < E; e++) S[(bh * D + d) * E + e] += kw * v[(bh * L + t) * E + e];
      }
    }
  }
  return S;
}
