/**
 * The chunked Lightning Attention kernels for f32 (and f16/bf16, decoded to f32), written as
 * batched GEMMs over every block at once plus a cheap sequential scan of D×E states — the LA-2
 * "parallel" form. All O(T·C·(D+E)) and O(T·D·E) work goes through the matmul kernel (blocked,
 * SIMD, multi-threaded); only the scans and the decay masks are plain loops.
 *
 * Shapes: the sequence is zero-padded to nb blocks of C tokens, so q (B, H, T, D) becomes
 * (N, C, D) with N = B·H·nb batch entries. For block n of length m (the last may be partial):
 *   A_n = (Q_n K_nᵀ) ⊙ M         M[i, j] = λ^{i−j} for j ≤ i, else 0           (N, C, C)
 *   KV_n = (λ^{m−1−j} K_n)ᵀ V_n                                                  (N, D, E)
 *   P_n = S before block n:  S ← λ^m S + KV_n, starting from the initial state  (N, D, E)
 *   O_n = A_n V_n + (λ^{j+1} Q_n) P_n                                            (N, C, E)
 * Backward mirrors it with the carry H_n (∂L/∂S at the end of block n, from later blocks):
 *   H ← λ^m H + (λ^{j+1} Q_n)ᵀ dO_n from the last block back, starting from dS_final;
 *   dQ_n = ((dO_n V_nᵀ) ⊙ M) K_n + (λ^{j+1} dO_n) P_nᵀ
 *   dK_n = ((dO_n V_nᵀ) ⊙ M)ᵀ Q_n + (λ^{m−1−j} V_n) H_nᵀ
 *   dV_n = A_nᵀ dO_n + (λ^{m−1−j} K_n) H_n,   dS₀ = H after block 0.
 */
import type { Kernel } from "../backend.js";
import type { CpuRef, CpuStorage } from "./storage.js";

type Matmul = Kernel<"matmul", CpuStorage>;

/** Shared memory, so the matmul's worker threads read and write without copies. */
function alloc(n: number): Float32Array {
  return typeof SharedArrayBuffer !== "undefined" ? new Float32Array(new SharedArrayBuffer(n * 4)) : new Float32Array(n);
}

const isShared = (x: Float32Array) => typeof SharedArrayBuffer !== "undefined" && x.buffer instanceof SharedArrayBuffer;

function ref(data: Float32Array, shape: number[]): CpuRef {
  return { storage: { bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }, shape, dtype: "f32", size: data.length };
}

interface Layout {
  BH: number;
  H: number;
  T: number;
  C: number;
  nb: number;
  /** Batch entries B·H·nb. */
  N: number;
  /** pw[h][n] = λ_h^n for n = 0..C. */
  pw: Float64Array[];
}

function layout(B: number, H: number, T: number, C: number, slopes: Float32Array): Layout {
  const nb = Math.max(1, Math.ceil(T / C));
  const pw = Array.from(slopes, (s) => Float64Array.from({ length: C + 1 }, (_, n) => Math.exp(-s * n)));
  return { BH: B * H, H, T, C, nb, N: B * H * nb, pw };
}

const blockLength = (L: Layout, bi: number) => Math.min(L.C, L.T - bi * L.C);

/** Whether T is whole blocks: then (BH, T, W) and (N, C, W) are the same array layout. */
const whole = (L: Layout) => L.nb * L.C === L.T;

/**
 * (BH, T, W) → (N, C, W) zero-padded, each row j of block n scaled by `rowScale(h, m, j)` if given.
 * Unscaled and with T a whole number of blocks the layouts coincide and `x` itself is returned
 * (callers only read it) when it is already in shared memory, where the matmul threads read it;
 * otherwise each block's rows are one contiguous run, copied at once.
 */
function blocks(L: Layout, x: Float32Array, W: number, rowScale?: (pw: Float64Array, m: number, j: number) => number): Float32Array {
  if (!rowScale && whole(L) && isShared(x)) return x;
  const out = alloc(L.N * L.C * W);
  for (let bh = 0; bh < L.BH; bh++) {
    const pw = L.pw[bh % L.H];
    for (let bi = 0; bi < L.nb; bi++) {
      const m = blockLength(L, bi);
      const src = (bh * L.T + bi * L.C) * W;
      const dst = (bh * L.nb + bi) * L.C * W;
      if (!rowScale) {
        out.set(x.subarray(src, src + m * W), dst);
        continue;
      }
      for (let j = 0; j < m; j++) {
        const c = rowScale(pw, m, j);
        for (let w = 0, s = src + j * W, d = dst + j * W; w < W; w++) out[d + w] = c * x[s + w];
      }
    }
  }
  return out;
}

/** (N, C, W) → (BH, T, W), dropping the padding. */
function unblock(L: Layout, x: Float32Array, W: number, out: Float32Array): void {
  if (whole(L)) {
    out.set(x);
    return;
  }
  for (let bh = 0; bh < L.BH; bh++) {
    for (let bi = 0; bi < L.nb; bi++) {
      const m = blockLength(L, bi);
      const src = (bh * L.nb + bi) * L.C * W;
      out.set(x.subarray(src, src + m * W), (bh * L.T + bi * L.C) * W);
    }
  }
}

/** a ⊙= M per block: the causal decay mask of the block's head. */
function applyMask(L: Layout, a: Float32Array): void {
  const C = L.C;
  for (let n = 0; n < L.N; n++) {
    const pw = L.pw[Math.floor(n / L.nb) % L.H];
    for (let i = 0; i < C; i++) {
      const row = (n * C + i) * C;
      for (let j = 0; j <= i; j++) a[row + j] *= pw[i - j];
      a.fill(0, row + i + 1, row + C);
    }
  }
}

const decayIn = (pw: Float64Array, _m: number, j: number) => pw[j + 1];
const decayOut = (pw: Float64Array, m: number, j: number) => pw[m - 1 - j];

/**
 * Scan over blocks: for each (b, h), states[n] = S before (forward) or after (reverse) block n's
 * own contribution, with S ← λ^m S + local[n]. `S` holds the initial value and ends as the final one.
 */
function scan(L: Layout, local: Float32Array, S: Float64Array, DE: number, reverse: boolean): Float32Array {
  const states = alloc(L.N * DE);
  for (let bh = 0; bh < L.BH; bh++) {
    const pw = L.pw[bh % L.H];
    const s = S.subarray(bh * DE, (bh + 1) * DE);
    for (let step = 0; step < L.nb; step++) {
      const bi = reverse ? L.nb - 1 - step : step;
      const n = bh * L.nb + bi;
      const decay = pw[blockLength(L, bi)];
      for (let i = 0; i < DE; i++) states[n * DE + i] = s[i]!;
      for (let i = 0; i < DE; i++) s[i] = decay * s[i] + local[n * DE + i];
    }
  }
  return states;
}

export interface LightningInputs {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
  C: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  slopes: Float32Array;
}

export function createGemmLightning(matmul: Matmul) {
  const mm = (a: Float32Array, aShape: number[], b: Float32Array, bShape: number[], out: number[], transA = false, transB = false) => {
    const c = alloc(out.reduce((x, y) => x * y, 1));
    matmul({ inputs: [ref(a, aShape), ref(b, bShape)], outputs: [ref(c, out)], attrs: { transA, transB } });
    return c;
  };
  const addInto = (x: Float32Array, y: Float32Array) => {
    for (let i = 0; i < x.length; i++) x[i] += y[i];
    return x;
  };

  /** o (B, H, T, E) and the final state (B, H, D, E); `S` holds the initial state in float64 and is overwritten. */
  function forward(x: LightningInputs, S: Float64Array): Float32Array {
    const { D, E, C } = x;
    const L = layout(x.B, x.H, x.T, C, x.slopes);
    const N = L.N;
    const Q = blocks(L, x.q, D);
    const K = blocks(L, x.k, D);
    const V = blocks(L, x.v, E);
    const A = mm(Q, [N, C, D], K, [N, C, D], [N, C, C], false, true);
    applyMask(L, A);
    const O = mm(A, [N, C, C], V, [N, C, E], [N, C, E]);
    const KV = mm(blocks(L, x.k, D, decayOut), [N, C, D], V, [N, C, E], [N, D, E], true);
    const P = scan(L, KV, S, D * E, false);
    addInto(O, mm(blocks(L, x.q, D, decayIn), [N, C, D], P, [N, D, E], [N, C, E]));
    const o = new Float32Array(L.BH * L.T * E);
    unblock(L, O, E, o);
    return o;
  }

  /** dq, dk, dv; `S0` is the initial state (float64, not modified); `H` holds dS_final and ends as dS₀. */
  function backward(x: LightningInputs, dOut: Float32Array, S0: Float64Array, H: Float64Array) {
    const { D, E, C } = x;
    const L = layout(x.B, x.H, x.T, C, x.slopes);
    const N = L.N;
    const Q = blocks(L, x.q, D);
    const K = blocks(L, x.k, D);
    const V = blocks(L, x.v, E);
    const dO = blocks(L, dOut, E);
    const Kd = blocks(L, x.k, D, decayOut);
    const Qd = blocks(L, x.q, D, decayIn);
    const P = scan(L, mm(Kd, [N, C, D], V, [N, C, E], [N, D, E], true), Float64Array.from(S0), D * E, false);
    const Hc = scan(L, mm(Qd, [N, C, D], dO, [N, C, E], [N, D, E], true), H, D * E, true);

    const A = mm(Q, [N, C, D], K, [N, C, D], [N, C, C], false, true);
    applyMask(L, A);
    const G = mm(dO, [N, C, E], V, [N, C, E], [N, C, C], false, true);
    applyMask(L, G);

    const dQ = addInto(mm(G, [N, C, C], K, [N, C, D], [N, C, D]), mm(blocks(L, dOut, E, decayIn), [N, C, E], P, [N, D, E], [N, C, D], false, true));
    const dK = addInto(mm(G, [N, C, C], Q, [N, C, D], [N, C, D], true), mm(blocks(L, x.v, E, decayOut), [N, C, E], Hc, [N, D, E], [N, C, D], false, true));
    const dV = addInto(mm(A, [N, C, C], dO, [N, C, E], [N, C, E], true), mm(Kd, [N, C, D], Hc, [N, D, E], [N, C, E]));
    const dq = new Float32Array(L.BH * L.T * D);
    const dk = new Float32Array(L.BH * L.T * D);
    const dv = new Float32Array(L.BH * L.T * E);
    unblock(L, dQ, D, dq);
    unblock(L, dK, D, dk);
    unblock(L, dV, E, dv);
    return { dq, dk, dv };
  }

  return { forward, backward };
}
