/**
 * Plain float64 oracles for the op set, written for clarity rather than speed: every element is
 * located through its multi-index, independently of the kernels' stride arithmetic.
 */

export type Shape = readonly number[];

export const sizeOf = (shape: Shape) => shape.reduce((a, b) => a * b, 1);

export function unravel(i: number, shape: Shape): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return idx;
}

/** Flat offset of multi-index `idx` (of a broadcast result) in a tensor of `shape`. */
export function ravelBroadcast(idx: readonly number[], shape: Shape): number {
  const lead = idx.length - shape.length;
  let off = 0;
  for (let d = 0; d < shape.length; d++) off = off * shape[d] + (shape[d] === 1 ? 0 : idx[lead + d]);
  return off;
}

export function broadcastShape(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    return x === 1 ? y : x;
  });
}

export function mapBroadcast(shapes: Shape[], arrays: ArrayLike<number>[], f: (...xs: number[]) => number): { shape: number[]; data: Float64Array } {
  const shape = shapes.reduce<number[]>((acc, s) => broadcastShape(acc, s), []);
  const data = new Float64Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) {
    const idx = unravel(i, shape);
    data[i] = f(...arrays.map((arr, j) => arr[ravelBroadcast(idx, shapes[j])]));
  }
  return { shape, data };
}

export function reduce(x: ArrayLike<number>, shape: Shape, axes: number[], op: "sum" | "mean" | "max" | "min"): Float64Array {
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const out = new Float64Array(sizeOf(outShape)).fill(op === "max" ? -Infinity : op === "min" ? Infinity : 0);
  for (let i = 0; i < x.length; i++) {
    const idx = unravel(i, shape).map((v, d) => (axes.includes(d) ? 0 : v));
    const o = ravelBroadcast(idx, outShape);
    const v = x[i];
    out[o] = op === "max" ? Math.max(out[o], v) : op === "min" ? Math.min(out[o], v) : out[o] + v;
  }
  if (op === "mean") {
    const n = axes.reduce((p, a) => p * shape[a], 1);
    for (let i = 0; i < out.length; i++) out[i] /= n;
  }
  return out;
}

/** (..., m, k) × (..., k, n) with optional transposes of the last two dims and broadcast batch dims. */
export function matmul(a: ArrayLike<number>, aShape: Shape, b: ArrayLike<number>, bShape: Shape, transA = false, transB = false) {
  const [ar, ac] = aShape.slice(-2) as [number, number];
  const [br, bc] = bShape.slice(-2) as [number, number];
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const n = transB ? br : bc;
  const batch = broadcastShape(aShape.slice(0, -2), bShape.slice(0, -2));
  const out = new Float64Array(sizeOf(batch) * m * n);
  for (let bi = 0; bi < sizeOf(batch); bi++) {
    const idx = unravel(bi, batch);
    const ao = ravelBroadcast(idx, aShape.slice(0, -2)) * ar * ac;
    const bo = ravelBroadcast(idx, bShape.slice(0, -2)) * br * bc;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const av = a[ao + (transA ? p * ac + i : i * ac + p)];
          const bv = b[bo + (transB ? j * bc + p : p * bc + j)];
          s += av * bv;
        }
        out[(bi * m + i) * n + j] = s;
      }
    }
  }
  return { shape: [...batch, m, n], data: out };
}

export function permute(x: ArrayLike<number>, shape: Shape, perm: number[]): Float64Array {
  const outShape = perm.map((p) => shape[p]);
  const out = new Float64Array(x.length);
  for (let i = 0; i < out.length; i++) {
    const oi = unravel(i, outShape);
    const xi = new Array<number>(shape.length);
    perm.forEach((p, d) => (xi[p] = oi[d]!));
    out[i] = x[ravelBroadcast(xi, shape)]!;
  }
  return out;
}

/** Output element at multi-index i reads x at i + begin. */
export function slice(x: ArrayLike<number>, shape: Shape, begin: number[], end: number[]): Float64Array {
  const outShape = end.map((e, i) => e - begin[i]);
  const out = new Float64Array(sizeOf(outShape));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, outShape).map((v, d) => v + begin[d]);
    out[i] = x[ravelBroadcast(idx, shape)]!;
  }
  return out;
}

export function pad(x: ArrayLike<number>, shape: Shape, before: number[], after: number[]): Float64Array {
  const outShape = shape.map((d, i) => d + before[i] + after[i]);
  const out = new Float64Array(sizeOf(outShape));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, outShape).map((v, d) => v - before[d]);
    const inside = idx.every((v, d) => v >= 0 && v < shape[d]);
    out[i] = inside ? x[ravelBroadcast(idx, shape)] : 0;
  }
  return out;
}

export function concat(xs: ArrayLike<number>[], shapes: Shape[], axis: number): Float64Array {
  const outShape = [...shapes[0]];
  outShape[axis] = shapes.reduce((p, s) => p + s[axis], 0);
  const out = new Float64Array(sizeOf(outShape));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, outShape);
    let j = 0;
    while (idx[axis] >= shapes[j][axis]) idx[axis] -= shapes[j++][axis];
    out[i] = xs[j][ravelBroadcast(idx, shapes[j])]!;
  }
  return out;
}

/** numpy.take(x, idx, axis). */
export function take(x: ArrayLike<number>, shape: Shape, idx: ArrayLike<number>, idxShape: Shape, axis: number): Float64Array {
  const outShape = [...shape.slice(0, axis), ...idxShape, ...shape.slice(axis + 1)];
  const out = new Float64Array(sizeOf(outShape));
  for (let i = 0; i < out.length; i++) {
    const oi = unravel(i, outShape);
    const k = ravelBroadcast(oi.slice(axis, axis + idxShape.length), idxShape);
    const xi = [...oi.slice(0, axis), idx[k], ...oi.slice(axis + idxShape.length)];
    out[i] = x[ravelBroadcast(xi, shape)]!;
  }
  return out;
}

export function scatterAdd(u: ArrayLike<number>, uShape: Shape, idx: ArrayLike<number>, idxShape: Shape, axis: number, size: number): Float64Array {
  const outShape = [...uShape.slice(0, axis), size, ...uShape.slice(axis + idxShape.length)];
  const out = new Float64Array(sizeOf(outShape));
  for (let i = 0; i < u.length; i++) {
    const ui = unravel(i, uShape);
    const k = ravelBroadcast(ui.slice(axis, axis + idxShape.length), idxShape);
    const oi = [...ui.slice(0, axis), idx[k], ...ui.slice(axis + idxShape.length)];
    out[ravelBroadcast(oi, outShape)] += u[i];
  }
  return out;
}

export function softmax(x: ArrayLike<number>, shape: Shape, axis: number, log: boolean): Float64Array {
  const out = new Float64Array(x.length);
  const m = reduce(x, shape, [axis], "max");
  const redShape = shape.map((d, i) => (i === axis ? 1 : d));
  const at = (i: number) => ravelBroadcast(unravel(i, shape), redShape);
  const s = new Float64Array(m.length);
  for (let i = 0; i < x.length; i++) s[at(i)] += Math.exp(x[i] - m[at(i)]);
  for (let i = 0; i < x.length; i++) {
    const z = x[i] - m[at(i)];
    out[i] = log ? z - Math.log(s[at(i)]) : Math.exp(z) / s[at(i)];
  }
  return out;
}

export function crossEntropy(logits: ArrayLike<number>, N: number, V: number, labels: ArrayLike<number>, ignore: number) {
  const logp = softmax(logits, [N, V], 1, true);
  const loss = new Float64Array(N);
  const grad = new Float64Array(N * V);
  for (let r = 0; r < N; r++) {
    if (labels[r] === ignore) continue;
    loss[r] = -logp[r * V + labels[r]];
    for (let j = 0; j < V; j++) grad[r * V + j] = Math.exp(logp[r * V + j]) - (j === labels[r] ? 1 : 0);
  }
  return { loss, grad };
}

/** SRMSNorm over the last axis and its gradient for upstream `dy`. */
export function rmsNorm(x: ArrayLike<number>, M: number, eps: number, dy?: ArrayLike<number>) {
  const y = new Float64Array(x.length);
  const dx = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += M) {
    let ms = 0;
    for (let j = 0; j < M; j++) ms += x[o + j] ** 2 / M;
    const r = 1 / Math.sqrt(ms + eps);
    for (let j = 0; j < M; j++) y[o + j] = x[o + j] * r;
    if (dy) {
      // d y_j / d x_i = r δ_ij − x_j x_i r³ / M
      for (let i = 0; i < M; i++) {
        let s = 0;
        for (let j = 0; j < M; j++) s += dy[o + j] * ((i === j ? r : 0) - (x[o + j] * x[o + i] * r ** 3) / M);
        dx[o + i] = s;
      }
    }
  }
  return { y, dx };
}

/**
 * Lightning Attention in its plain masked (left-product) form, per (b, h), with the decay matrix
 * Dm[t][s] = λ^{t−s} for s ≤ t built explicitly, and its analytic gradients (docs/ALGORITHM.md G.1):
 *   O = ((Q Kᵀ) ⊙ Dm) V + Λ Q S₀,   S_T = λ^T S₀ + Σ_s λ^{T−1−s} k_sᵀ v_s
 *   dQ = ((dO Vᵀ) ⊙ Dm) K + Λ dO S₀ᵀ,  dK = ((dO Vᵀ) ⊙ Dm)ᵀ Q + (λ^{T−1−s}) V dS_Tᵀ,
 *   dV = ((Q Kᵀ) ⊙ Dm)ᵀ dO + (λ^{T−1−s}) K dS_T,  dS₀ = Σ_t λ^{t+1} q_tᵀ dO_t + λ^T dS_T.
 * Inputs are flat [B, H, T, D] / [B, H, T, E] arrays; states are [B, H, D, E].
 */
export function lightningAttention(
  dims: { B: number; H: number; T: number; D: number; E: number },
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  slopes: ArrayLike<number>,
  S0?: ArrayLike<number>,
  grads?: { dO: ArrayLike<number>; dS: ArrayLike<number> },
) {
  const { B, H, T, D, E } = dims;
  const o = new Float64Array(B * H * T * E);
  const S = new Float64Array(B * H * D * E);
  const dq = new Float64Array(B * H * T * D);
  const dk = new Float64Array(B * H * T * D);
  const dv = new Float64Array(B * H * T * E);
  const dS0 = new Float64Array(B * H * D * E);
  for (let bh = 0; bh < B * H; bh++) {
    const lam = Math.exp(-slopes[bh % H]);
    const Q = (t: number, d: number) => q[(bh * T + t) * D + d];
    const K = (t: number, d: number) => k[(bh * T + t) * D + d];
    const Vv = (t: number, e: number) => v[(bh * T + t) * E + e];
    const s0 = (d: number, e: number) => (S0 ? S0[(bh * D + d) * E + e] : 0);
    const Dm = (t: number, s: number) => (s <= t ? lam ** (t - s) : 0);
    const QK = Array.from({ length: T }, (_, t) => Array.from({ length: T }, (_, s) => {
      let x = 0;
      for (let d = 0; d < D; d++) x += Q(t, d) * K(s, d);
      return x * Dm(t, s);
    }));
    for (let t = 0; t < T; t++) {
      for (let e = 0; e < E; e++) {
        let x = 0;
        for (let s = 0; s < T; s++) x += QK[t][s] * Vv(s, e);
        for (let d = 0; d < D; d++) x += lam ** (t + 1) * Q(t, d) * s0(d, e);
        o[(bh * T + t) * E + e] = x;
      }
    }
    for (let d = 0; d < D; d++) {
      for (let e = 0; e < E; e++) {
        let x = lam ** T * s0(d, e);
        for (let s = 0; s < T; s++) x += lam ** (T - 1 - s) * K(s, d) * Vv(s, e);
        S[(bh * D + d) * E + e] = x;
      }
    }
    if (!grads) continue;
    const dO = (t: number, e: number) => grads.dO[(bh * T + t) * E + e];
    const dSf = (d: number, e: number) => grads.dS[(bh * D + d) * E + e];
    const OV = Array.from({ length: T }, (_, t) => Array.from({ length: T }, (_, s) => {
      let x = 0;
      for (let e = 0; e < E; e++) x += dO(t, e) * Vv(s, e);
      return x * Dm(t, s);
    }));
    for (let t = 0; t < T; t++) {
      for (let d = 0; d < D; d++) {
        let a = 0;
        let b = 0;
        for (let s = 0; s < T; s++) {
          a += OV[t][s] * K(s, d);
          b += OV[s][t] * Q(s, d);
        }
        for (let e = 0; e < E; e++) {
          a += lam ** (t + 1) * dO(t, e) * s0(d, e);
          b += lam ** (T - 1 - t) * Vv(t, e) * dSf(d, e);
        }
        dq[(bh * T + t) * D + d] = a;
        dk[(bh * T + t) * D + d] = b;
      }
      for (let e = 0; e < E; e++) {
        let c = 0;
        for (let s = 0; s < T; s++) c += QK[s][t] * dO(s, e);
        for (let d = 0; d < D; d++) c += lam ** (T - 1 - t) * K(t, d) * dSf(d, e);
        dv[(bh * T + t) * E + e] = c;
      }
    }
    for (let d = 0; d < D; d++) {
      for (let e = 0; e < E; e++) {
        let x = lam ** T * dSf(d, e);
        for (let t = 0; t < T; t++) x += lam ** (t + 1) * Q(t, d) * dO(t, e);
        dS0[(bh * D + d) * E + e] = x;
      }
    }
  }
  return { o, S, dq, dk, dv, dS0 };
}
