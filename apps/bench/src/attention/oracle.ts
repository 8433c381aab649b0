/**
 * Float64 oracles for the attention suite, computed on the host from the case's own inputs.
 * Long sequences make a full float64 quadratic check too slow, so each check covers a seeded
 * sample: the first and last batch entries, by the float64 recurrence over every position for
 * Lightning Attention (linear in T), and by exact rows at sampled query positions for softmax.
 */

export interface HostInputs {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
  q: ArrayLike<number>;
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  dO: ArrayLike<number>;
  slopes: ArrayLike<number>;
}

/** What a case produced, as host arrays, and which entries to compare. */
export interface Produced {
  o: ArrayLike<number>;
  grads?: ArrayLike<number>[];
}

export interface Check {
  /** ‖got − want‖₂ / ‖want‖₂ over every compared element. */
  relErr: number;
  /** max |got − want| / max |want|. */
  maxErr: number;
}

/** Accumulates the comparison of produced values with oracle values. */
class Comparison {
  #num = 0;
  #den = 0;
  #maxDiff = 0;
  #maxRef = 0;

  add(got: number, want: number): void {
    const d = Math.abs(got - want);
    this.#num += d * d;
    this.#den += want * want;
    // A NaN difference must fail: comparisons with NaN are false, so test for it directly.
    this.#maxDiff = d > this.#maxDiff || Number.isNaN(d) ? d : this.#maxDiff;
    this.#maxRef = Math.max(this.#maxRef, Math.abs(want));
  }

  result(): Check {
    const finite = (x: number) => (Number.isFinite(x) ? x : Infinity);
    return {
      relErr: finite(Math.sqrt(this.#num / Math.max(this.#den, 1e-300))),
      maxErr: finite(this.#maxDiff / Math.max(this.#maxRef, 1e-300)),
    };
  }
}

/**
 * Lightning Attention for every checked batch entry: S_t = λ S_{t−1} + k_tᵀ v_t, o_t = q_t S_t; with grads,
 * dq_t = dO_t S_tᵀ and the reverse sweep G_t = q_tᵀ dO_t + λ G_{t+1}: dk_t = G_t v_t, dv_t = k_t G_t.
 */
export function checkLightning(x: HostInputs, got: Produced): Check {
  const { H, T, D, E } = x;
  const { q, k, v, dO } = x;
  const cmp = new Comparison();
  const compare = (g: number, want: number) => cmp.add(g, want);
  const S = new Float64Array(D * E);
  const dq = new Float64Array(T * D);
  for (let bh = 0; bh < x.B * H; bh++) {
    const lambda = Math.exp(-x.slopes[bh % H]);
    const base = bh * T;
    S.fill(0);
    dq.fill(0);
    for (let t = 0; t < T; t++) {
      const qt = (base + t) * D;
      const vt = (base + t) * E;
      for (let d = 0; d < D; d++) {
        const kd = k[qt + d];
        for (let e = 0; e < E; e++) S[d * E + e] = lambda * S[d * E + e] + kd * v[vt + e];
      }
      for (let e = 0; e < E; e++) {
        let o = 0;
        for (let d = 0; d < D; d++) o += q[qt + d] * S[d * E + e];
        compare(got.o[vt + e], o);
      }
      if (got.grads) {
        for (let d = 0; d < D; d++) {
          let s = 0;
          for (let e = 0; e < E; e++) s += dO[vt + e] * S[d * E + e];
          dq[t * D + d] = s;
        }
      }
    }
    if (!got.grads) continue;
    const [gq, gk, gv] = got.grads as [ArrayLike<number>, ArrayLike<number>, ArrayLike<number>];
    S.fill(0); // now the reverse-sweep G
    for (let t = T - 1; t >= 0; t--) {
      const qt = (base + t) * D;
      const vt = (base + t) * E;
      for (let d = 0; d < D; d++) {
        const qd = q[qt + d];
        for (let e = 0; e < E; e++) S[d * E + e] = lambda * S[d * E + e] + qd * dO[vt + e];
      }
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let e = 0; e < E; e++) s += S[d * E + e] * v[vt + e];
        compare(gk[qt + d], s);
        compare(gq[qt + d], dq[t * D + d]);
      }
      for (let e = 0; e < E; e++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += k[qt + d] * S[d * E + e];
        compare(gv[vt + e], s);
      }
    }
  }
  return cmp.result();
}

/** Softmax attention rows at `rows` (positions in every checked batch entry and head), and dq at those rows. */
export function checkSoftmax(x: HostInputs, got: Produced, rows: number[]): Check {
  const { H, T, D, E } = x;
  const cmp = new Comparison();
  const scale = 1 / Math.sqrt(D);
  for (let h = 0; h < x.B * H; h++) {
    for (const t of rows) {
      const s = new Float64Array(t + 1);
      let m = -Infinity;
      for (let j = 0; j <= t; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += x.q[(h * T + t) * D + d] * x.k[(h * T + j) * D + d];
        s[j] = dot * scale;
        m = Math.max(m, s[j]);
      }
      let z = 0;
      for (let j = 0; j <= t; j++) z += (s[j] = Math.exp(s[j] - m));
      for (let j = 0; j <= t; j++) s[j] /= z;
      for (let e = 0; e < E; e++) {
        let o = 0;
        for (let j = 0; j <= t; j++) o += s[j] * x.v[(h * T + j) * E + e];
        cmp.add(got.o[(h * T + t) * E + e], o);
      }
      if (!got.grads) continue;
      // dq_t = scale · Σ_j P_tj (dP_tj − Σ_j' P_tj' dP_tj') k_j, with dP_tj = dO_t · v_j.
      const dP = Float64Array.from({ length: t + 1 }, (_, j) => {
        let dot = 0;
        for (let e = 0; e < E; e++) dot += x.dO[(h * T + t) * E + e] * x.v[(h * T + j) * E + e];
        return dot;
      });
      const mean = s.reduce((acc, p, j) => acc + p * dP[j], 0);
      for (let d = 0; d < D; d++) {
        let g = 0;
        for (let j = 0; j <= t; j++) g += s[j] * (dP[j] - mean) * x.k[(h * T + j) * D + d];
        cmp.add(got.grads[0][(h * T + t) * D + d], g * scale);
      }
    }
  }
  return cmp.result();
}
