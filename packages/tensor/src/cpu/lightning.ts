/**
 * Lightning Attention on the CPU (docs/ALGORITHM.md A–D), per (batch, head):
 *
 *   S_t = λ S_{t−1} + k_tᵀ v_t,   o_t = q_t S_t,   λ = exp(−slope),   S_{−1} = initial state (or 0)
 *
 * Three kernels compute it: `chunked` (LA-2: masked attention inside blocks of C tokens plus a
 * carried D×E state between blocks; the default), `recurrent` (the scan above) and `quadratic`
 * (o_t = Σ_{s≤t} λ^{t−s} (q_t·k_s) v_s + λ^{t+1} q_t S_{−1}; the oracle). Backward follows the
 * LA-2 two-sweep algorithm (B.2) for `chunked`, and the closed-form token formulas otherwise.
 * These scalar kernels compute in float64 and serve f64 tensors and the reference impls; the
 * chunked kernel for f32/f16/bf16 runs as batched GEMMs (lightning-gemm.ts) and is tested
 * against them.
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C block size.
 */
import type { Kernel } from "../backend.js";
import { argError } from "../errors.js";
import { createGemmLightning } from "./lightning-gemm.js";
import { type CpuRef, type CpuStorage, type FloatArray, readFloat, storeAs, view } from "./storage.js";

/** One (batch, head) slice: views of length T·D / T·E into the decoded inputs. */
interface Head {
  q: FloatArray;
  k: FloatArray;
  v: FloatArray;
  T: number;
  D: number;
  E: number;
  /** The slope s ≥ 0 of this head: λ = exp(−s). */
  slope: number;
}

/** pw[n] = λ^n = exp(−s·n) for n = 0..n_max, computed directly (not by repeated products) for accuracy. */
function powers(slope: number, nMax: number): Float64Array {
  return Float64Array.from({ length: nMax + 1 }, (_, n) => Math.exp(-slope * n));
}

/** Σ_d a[ai + d] · b[bi + d]. */
function dot(a: FloatArray, ai: number, b: FloatArray, bi: number, n: number): number {
  let s = 0;
  for (let d = 0; d < n; d++) s += a[ai + d] * b[bi + d];
  return s;
}

/** y[yi + e] += c · x[xi + e]. */
function axpy(y: FloatArray, yi: number, c: number, x: FloatArray, xi: number, n: number): void {
  for (let e = 0; e < n; e++) y[yi + e] += c * x[xi + e];
}

/** out[oi + e] += c · Σ_d x[xi + d] · S[d, e]  (row vector times the D×E state). */
function rowTimesState(out: FloatArray, oi: number, c: number, x: FloatArray, xi: number, S: Float64Array, D: number, E: number): void {
  for (let d = 0; d < D; d++) {
    const xd = c * x[xi + d];
    if (xd !== 0) axpy(out, oi, xd, S, d * E, E);
  }
}

/** S[d, e] += c · a[ai + d] · b[bi + e]  (rank-1 update). */
function outer(S: Float64Array, c: number, a: FloatArray, ai: number, b: FloatArray, bi: number, D: number, E: number): void {
  for (let d = 0; d < D; d++) {
    const ad = c * a[ai + d];
    if (ad !== 0) axpy(S, d * E, ad, b, bi, E);
  }
}

function scale(S: Float64Array, c: number): void {
  for (let i = 0; i < S.length; i++) S[i] *= c;
}

// ---------------------------------------------------------------------------------------------
// Forward: each writes o (T·E) and turns S from the initial state into the final state.

function forwardRecurrent({ q, k, v, T, D, E, slope }: Head, S: Float64Array, o: Float64Array): void {
  const lambda = Math.exp(-slope);
  // One fused pass over S per token: decay, rank-1 update and the output row together.
  for (let t = 0; t < T; t++) {
    const qi = t * D;
    const vi = t * E;
    for (let d = 0; d < D; d++) {
      const kd = k[qi + d];
      const qd = q[qi + d];
      const row = d * E;
      for (let e = 0; e < E; e++) {
        const s = lambda * S[row + e] + kd * v[vi + e];
        S[row + e] = s;
        o[vi + e] += qd * s;
      }
    }
  }
}

function forwardQuadratic({ q, k, v, T, D, E, slope }: Head, S: Float64Array, o: Float64Array): void {
  const pw = powers(slope, T);
  for (let t = 0; t < T; t++) {
    for (let s = 0; s <= t; s++) axpy(o, t * E, pw[t - s] * dot(q, t * D, k, s * D, D), v, s * E, E);
    rowTimesState(o, t * E, pw[t + 1], q, t * D, S, D, E);
  }
  const S0 = Float64Array.from(S);
  S.fill(0);
  axpy(S, 0, pw[T], S0, 0, D * E);
  for (let s = 0; s < T; s++) outer(S, pw[T - 1 - s], k, s * D, v, s * E, D, E);
}

/**
 * LA-2 forward (B.1) with 0-indexed positions j in a block of m ≤ C tokens starting at a:
 *   o_{a+j} = Σ_{j'≤j} λ^{j−j'} (q·k_{a+j'}) v_{a+j'}   (intra-block, left product)
 *           + λ^{j+1} q_{a+j} S                           (inter-block, right product)
 *   S ← λ^m S + Σ_{j'} λ^{m−1−j'} k_{a+j'}ᵀ v_{a+j'}
 */
function forwardChunked(h: Head, C: number, S: Float64Array, o: Float64Array): void {
  const { q, k, v, T, D, E } = h;
  const pw = powers(h.slope, C);
  for (let a = 0; a < T; a += C) {
    const m = Math.min(C, T - a);
    for (let j = 0; j < m; j++) {
      const t = a + j;
      rowTimesState(o, t * E, pw[j + 1], q, t * D, S, D, E);
      for (let jj = 0; jj <= j; jj++) axpy(o, t * E, pw[j - jj] * dot(q, t * D, k, (a + jj) * D, D), v, (a + jj) * E, E);
    }
    scale(S, pw[m]);
    for (let jj = 0; jj < m; jj++) outer(S, pw[m - 1 - jj], k, (a + jj) * D, v, (a + jj) * E, D, E);
  }
}

/**
 * The states entering tokens 0, L, 2L, … of one head (`segmentTokens`), into `out` (N·D·E for
 * N = ⌈T/L⌉ entries): entry 0 is the initial state S (or zeros), and each segment of m tokens
 * starting at a moves the state on by S ← λ^m S + Σ_j λ^{m−1−j} k_{a+j}ᵀ v_{a+j}, as the chunked
 * forward does per block. Computed on their own, beside whichever kernel makes the output, so that
 * the output and the final state are bit for bit those of a call without them.
 */
function segmentStatesOf(k: FloatArray, v: FloatArray, slope: number, S0: FloatArray | null, L: number, D: number, E: number, out: Float64Array): void {
  const N = out.length / (D * E);
  const pw = powers(slope, L);
  const S = S0 ? Float64Array.from(S0) : new Float64Array(D * E);
  for (let j = 0; j < N; j++) {
    out.set(S, j * D * E);
    if (j === N - 1) break; // the tokens after the last entry change no entry
    const a = j * L;
    scale(S, pw[L]);
    for (let jj = 0; jj < L; jj++) outer(S, pw[L - 1 - jj], k, (a + jj) * D, v, (a + jj) * E, D, E);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward: given dO (T·E) and dSfinal (D·E), accumulate dq, dk (T·D), dv (T·E) and dS0 (D·E).
//
// With G_t = ∂L/∂S_t = Σ_{s≥t} λ^{s−t} q_sᵀ dO_s + λ^{T−1−t} dSfinal (B.2, plus the final-state term):
//   dq_t = dO_t S_tᵀ,  dk_t = G_t v_tᵀ (as a D-vector: Σ_e G_t[d,e] v_t[e]),  dv_t = k_t G_t,  dS0 = λ G_0.

interface Grads {
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  dS0: Float64Array;
}

/** out[oi + d] += c · Σ_e S[d, e] · x[xi + e]  (the D×E state times a column vector). */
function stateTimesCol(out: FloatArray, oi: number, c: number, S: Float64Array, x: FloatArray, xi: number, D: number, E: number): void {
  for (let d = 0; d < D; d++) out[oi + d] += c * dot(S, d * E, x, xi, E);
}

function backwardQuadratic(h: Head, S0: Float64Array, dO: FloatArray, dSf: Float64Array, g: Grads): void {
  const { q, k, v, T, D, E, slope } = h;
  const pw = powers(slope, T);
  for (let t = 0; t < T; t++) {
    for (let s = 0; s <= t; s++) {
      const w = pw[t - s];
      const dov = w * dot(dO, t * E, v, s * E, E);
      axpy(g.dq, t * D, dov, k, s * D, D);
      axpy(g.dk, s * D, dov, q, t * D, D);
      axpy(g.dv, s * E, w * dot(q, t * D, k, s * D, D), dO, t * E, E);
    }
    stateTimesCol(g.dq, t * D, pw[t + 1], S0, dO, t * E, D, E);
    outer(g.dS0, pw[t + 1], q, t * D, dO, t * E, D, E);
  }
  for (let s = 0; s < T; s++) {
    stateTimesCol(g.dk, s * D, pw[T - 1 - s], dSf, v, s * E, D, E);
    rowTimesState(g.dv, s * E, pw[T - 1 - s], k, s * D, dSf, D, E);
  }
  axpy(g.dS0, 0, pw[T], dSf, 0, D * E);
}

function backwardRecurrent(h: Head, S0: Float64Array, dO: FloatArray, dSf: Float64Array, g: Grads): void {
  const { q, k, v, T, D, E, slope } = h;
  const lambda = Math.exp(-slope);
  // Forward sweep: dq_t = dO_t S_tᵀ, fused with the state update.
  const S = Float64Array.from(S0);
  for (let t = 0; t < T; t++) {
    const qi = t * D;
    const vi = t * E;
    for (let d = 0; d < D; d++) {
      const kd = k[qi + d];
      const row = d * E;
      let acc = 0;
      for (let e = 0; e < E; e++) {
        const s = lambda * S[row + e] + kd * v[vi + e];
        S[row + e] = s;
        acc += dO[vi + e] * s;
      }
      g.dq[qi + d] += acc;
    }
  }
  // Reverse sweep: G_t = q_tᵀ dO_t + λ G_{t+1}, starting from dSfinal; dk_t = G_t v_t, dv_t = k_t G_t.
  const G = Float64Array.from(dSf);
  for (let t = T - 1; t >= 0; t--) {
    const qi = t * D;
    const vi = t * E;
    for (let d = 0; d < D; d++) {
      const qd = q[qi + d];
      const kd = k[qi + d];
      const row = d * E;
      let acc = 0;
      for (let e = 0; e < E; e++) {
        const x = G[row + e] + qd * dO[vi + e];
        G[row + e] = x;
        acc += x * v[vi + e];
        g.dv[vi + e] += kd * x;
      }
      g.dk[qi + d] += acc;
    }
    scale(G, lambda);
  }
  axpy(g.dS0, 0, 1, G, 0, D * E);
}

/**
 * LA-2 backward (B.2). Pass 1 (forward over blocks) computes dq from the carried state; pass 2
 * (reverse over blocks) carries H = ∂L/∂S_{a+m−1} from outside the block (dSfinal for the last
 * block) and computes dk, dv, then H ← Σ_j λ^{j+1} q_{a+j}ᵀ dO_{a+j} + λ^m H.
 */
function backwardChunked(h: Head, C: number, S0: Float64Array, dO: FloatArray, dSf: Float64Array, g: Grads): void {
  const { q, k, v, T, D, E } = h;
  const pw = powers(h.slope, C);
  const S = Float64Array.from(S0);
  for (let a = 0; a < T; a += C) {
    const m = Math.min(C, T - a);
    for (let j = 0; j < m; j++) {
      const t = a + j;
      stateTimesCol(g.dq, t * D, pw[j + 1], S, dO, t * E, D, E);
      for (let jj = 0; jj <= j; jj++) axpy(g.dq, t * D, pw[j - jj] * dot(dO, t * E, v, (a + jj) * E, E), k, (a + jj) * D, D);
    }
    scale(S, pw[m]);
    for (let jj = 0; jj < m; jj++) outer(S, pw[m - 1 - jj], k, (a + jj) * D, v, (a + jj) * E, D, E);
  }
  const H = Float64Array.from(dSf);
  const lastStart = Math.floor((T - 1) / C) * C;
  for (let a = lastStart; a >= 0; a -= C) {
    const m = Math.min(C, T - a);
    for (let j = 0; j < m; j++) {
      const t = a + j;
      const w = pw[m - 1 - j];
      stateTimesCol(g.dk, t * D, w, H, v, t * E, D, E);
      rowTimesState(g.dv, t * E, w, k, t * D, H, D, E);
      for (let s = j; s < m; s++) {
        const u = a + s;
        const ws = pw[s - j];
        axpy(g.dk, t * D, ws * dot(dO, u * E, v, t * E, E), q, u * D, D);
        axpy(g.dv, t * E, ws * dot(q, u * D, k, t * D, D), dO, u * E, E);
      }
    }
    scale(H, pw[m]);
    for (let j = 0; j < m; j++) outer(H, pw[j + 1], q, (a + j) * D, dO, (a + j) * E, D, E);
  }
  axpy(g.dS0, 0, 1, H, 0, D * E);
}

// ---------------------------------------------------------------------------------------------
// Kernel bindings.

function dims(q: CpuRef, v: CpuRef) {
  const [B, H, T, D] = q.shape as [number, number, number, number];
  return { B, H, T, D, E: v.shape[3] };
}

function headOf(q: FloatArray, k: FloatArray, v: FloatArray, slopes: Float32Array, bh: number, H: number, T: number, D: number, E: number): Head {
  return {
    q: q.subarray(bh * T * D, (bh + 1) * T * D),
    k: k.subarray(bh * T * D, (bh + 1) * T * D),
    v: v.subarray(bh * T * E, (bh + 1) * T * E),
    T,
    D,
    E,
    slope: slopes[bh % H],
  };
}

type Matmul = Kernel<"matmul", CpuStorage>;

/** Whether a call takes the GEMM form: chunked, and not f64 (f64 keeps the exact scalar path). */
const useGemm = (impl: string, dtype: string) => impl === "chunked" && dtype !== "f64";

/** The Lightning Attention kernels, using `matmul` (the backend's, with its threads) for the GEMM form. */
export function createLightningKernels(matmul: Matmul) {
  const gemm = createGemmLightning(matmul);

  // q, k: (B, H, T, D); v: (B, H, T, E); slopes: (H); initialState?: (B, H, D, E) → o: (B, H, T, E),
  // state: (B, H, D, E)[, segmentStates: (B, H, ⌈T/L⌉, D, E) with segmentTokens L > 0]
  const forward: Kernel<"lightningAttention", CpuStorage> = ({ inputs, outputs: [o, sOut, segOut], attrs }) => {
    const [qr, kr, vr, sr, s0r] = inputs;
    const { B, H, T, D, E } = dims(qr, vr);
    const slopes = view(sr) as Float32Array;
    if (segOut) {
      const L = attrs.segmentTokens!;
      const k = readFloat(kr);
      const v = readFloat(vr);
      const s0 = s0r ? readFloat(s0r) : null;
      const N = segOut.shape[2];
      const all = new Float64Array(B * H * N * D * E);
      for (let bh = 0; bh < B * H; bh++) {
        const kh = k.subarray(bh * T * D, (bh + 1) * T * D);
        const vh = v.subarray(bh * T * E, (bh + 1) * T * E);
        const S0 = s0 ? s0.subarray(bh * D * E, (bh + 1) * D * E) : null;
        segmentStatesOf(kh, vh, slopes[bh % H], S0, L, D, E, all.subarray(bh * N * D * E, (bh + 1) * N * D * E));
      }
      storeAs(segOut, all);
    }
    const state = new Float64Array(B * H * D * E);
    if (s0r) state.set(readFloat(s0r));
    if (useGemm(attrs.impl, qr.dtype)) {
      const f32 = (r: CpuRef) => readFloat(r) as Float32Array;
      storeAs(o, gemm.forward({ B, H, T, D, E, C: attrs.blockSize, q: f32(qr), k: f32(kr), v: f32(vr), slopes }, state));
      storeAs(sOut, state);
      return;
    }
    const q = readFloat(qr);
    const k = readFloat(kr);
    const v = readFloat(vr);
    const out = new Float64Array(B * H * T * E);
    for (let bh = 0; bh < B * H; bh++) {
      const head = headOf(q, k, v, slopes, bh, H, T, D, E);
      const S = state.subarray(bh * D * E, (bh + 1) * D * E);
      const oh = out.subarray(bh * T * E, (bh + 1) * T * E);
      if (attrs.impl === "chunked") forwardChunked(head, attrs.blockSize, S, oh);
      else if (attrs.impl === "recurrent") forwardRecurrent(head, S, oh);
      else forwardQuadratic(head, S, oh);
    }
    storeAs(o, out);
    storeAs(sOut, state);
  };

  // (q, k, v, slopes, dO, dFinalState[, initialState][, segmentStates]) → (dq, dk, dv, dInitialState).
  // The segment states are not read: the dq sweep below carries the state through every block anyway.
  const backward: Kernel<"lightningAttentionBackward", CpuStorage> = ({ inputs, outputs, attrs }) => {
    const [qr, kr, vr, sr, dOr, dSr] = inputs;
    const s0r = attrs.hasInitialState ? inputs[6] : undefined;
    const { B, H, T, D, E } = dims(qr, vr);
    const slopes = view(sr) as Float32Array;
    const [dqr, dkr, dvr, dS0r] = outputs;
    const S0all = new Float64Array(B * H * D * E);
    if (s0r) S0all.set(readFloat(s0r));
    if (useGemm(attrs.impl, qr.dtype)) {
      const f32 = (r: CpuRef) => readFloat(r) as Float32Array;
      const carry = Float64Array.from(readFloat(dSr));
      const g = gemm.backward({ B, H, T, D, E, C: attrs.blockSize, q: f32(qr), k: f32(kr), v: f32(vr), slopes }, f32(dOr), S0all, carry);
      storeAs(dqr, g.dq);
      storeAs(dkr, g.dk);
      storeAs(dvr, g.dv);
      storeAs(dS0r, carry);
      return;
    }
    const q = readFloat(qr);
    const k = readFloat(kr);
    const v = readFloat(vr);
    const dO = readFloat(dOr);
    const dSf = readFloat(dSr);
    const all: Grads = {
      dq: new Float64Array(B * H * T * D),
      dk: new Float64Array(B * H * T * D),
      dv: new Float64Array(B * H * T * E),
      dS0: new Float64Array(B * H * D * E),
    };
    for (let bh = 0; bh < B * H; bh++) {
      const head = headOf(q, k, v, slopes, bh, H, T, D, E);
      const S0 = S0all.subarray(bh * D * E, (bh + 1) * D * E);
      const dSfh = Float64Array.from(dSf.subarray(bh * D * E, (bh + 1) * D * E));
      const dOh = dO.subarray(bh * T * E, (bh + 1) * T * E);
      const g: Grads = {
        dq: all.dq.subarray(bh * T * D, (bh + 1) * T * D),
        dk: all.dk.subarray(bh * T * D, (bh + 1) * T * D),
        dv: all.dv.subarray(bh * T * E, (bh + 1) * T * E),
        dS0: all.dS0.subarray(bh * D * E, (bh + 1) * D * E),
      };
      if (attrs.impl === "chunked") backwardChunked(head, attrs.blockSize, S0, dOh, dSfh, g);
      else if (attrs.impl === "recurrent") backwardRecurrent(head, S0, dOh, dSfh, g);
      else backwardQuadratic(head, S0, dOh, dSfh, g);
    }
    storeAs(dqr, all.dq);
    storeAs(dkr, all.dk);
    storeAs(dvr, all.dv);
    storeAs(dS0r, all.dS0);
  };

  return { lightningAttention: forward, lightningAttentionBackward: backward, lightningStep: stepKernel };
}

// q, k: (N, H, D); v: (N, H, E); slopes: (H); state: (B, H, D, E)[, segments: i32 (B + 1)] →
// o: (N, H, E), newState: (B, H, D, E); N = B without segments. newState may be state's own storage
// (ALIASED_OUTPUTS): the scalar step copies the state before writing, and the fused one reads each
// state element just before it writes the same element.
const stepKernel: Kernel<"lightningStep", CpuStorage> = (call) => {
  if (call.inputs[4].dtype === "f64") stepScalar(call);
  else stepFused(call);
};

/**
 * The token rows each state row steps through, in order: without segments row b alone; with them
 * rows B + s[b] … B + s[b + 1] − 1, then b. Offsets out of order are refused, naming the first.
 */
function tokenRows(segments: CpuRef | undefined, B: number, N: number): number[][] {
  if (!segments) return Array.from({ length: B }, (_, b) => [b]);
  const s = view(segments) as Int32Array;
  const extra = N - B;
  for (let b = 0; b <= B; b++) {
    const low = b === 0 ? 0 : s[b - 1];
    if (!(s[b] >= low && s[b] <= extra)) {
      argError("lightningStep", "segments", `offsets rising from 0 to at most N − B = ${extra} (s[${b}] in [${low}, ${extra}])`, `s[${b}] = ${s[b]}`);
    }
  }
  return Array.from({ length: B }, (_, b) => [...Array.from({ length: s[b + 1] - s[b] }, (_, j) => B + s[b] + j), b]);
}

/** The rows of o no segment names (from B + s[B] on) are zero. */
function firstUnused(segments: CpuRef | undefined, B: number, N: number): number {
  return segments ? B + (view(segments) as Int32Array)[B] : N;
}

/** The reference step in float64: decay, rank-1 update and output as three passes over each state, per token. */
const stepScalar: Kernel<"lightningStep", CpuStorage> = ({ inputs: [qr, kr, vr, sr, stater, segr], outputs: [o, sOut] }) => {
  const [N, H, D] = qr.shape as [number, number, number];
  const B = stater.shape[0];
  const E = vr.shape[2];
  const rows = tokenRows(segr, B, N);
  const q = readFloat(qr);
  const k = readFloat(kr);
  const v = readFloat(vr);
  const slopes = view(sr) as Float32Array;
  const S = Float64Array.from(readFloat(stater));
  const out = new Float64Array(N * H * E);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      const Sh = S.subarray(bh * D * E, (bh + 1) * D * E);
      for (const t of rows[b]) {
        const th = t * H + h;
        scale(Sh, Math.exp(-slopes[h]));
        outer(Sh, 1, k, th * D, v, th * E, D, E);
        rowTimesState(out, th * E, 1, q, th * D, Sh, D, E);
      }
    }
  }
  storeAs(o, out);
  storeAs(sOut, S);
};

/**
 * The f32 step (f16/bf16 inputs decoded; the state is f32 for them): one pass over each state per
 * token that decays, adds kᵀv, writes the new state straight into the output storage and
 * accumulates o = qS. A decode step is bound by reading and writing the state once; the scalar
 * twin's float64 copy and three separate passes made it ~30× slower than that.
 */
const stepFused: Kernel<"lightningStep", CpuStorage> = ({ inputs: [qr, kr, vr, sr, stater, segr], outputs: [o, sOut] }) => {
  const [N, H, D] = qr.shape as [number, number, number];
  const B = stater.shape[0];
  const E = vr.shape[2];
  const rows = tokenRows(segr, B, N);
  const q = readFloat(qr);
  const k = readFloat(kr);
  const v = readFloat(vr);
  const slopes = view(sr) as Float32Array;
  const S = readFloat(stater);
  const next = view(sOut) as Float32Array;
  const out = o.dtype === "f32" ? (view(o) as Float32Array) : new Float32Array(N * H * E);
  const acc = new Float64Array(E);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const lambda = Math.exp(-slopes[h]);
      const base = (b * H + h) * D * E;
      rows[b].forEach((t, j) => {
        // The first token reads the state passed in, the later ones the state the token before wrote.
        const from = j === 0 ? S : next;
        const th = t * H + h;
        const vi = th * E;
        acc.fill(0);
        for (let d = 0; d < D; d++) {
          const kd = k[th * D + d];
          const qd = q[th * D + d];
          const row = base + d * E;
          for (let e = 0; e < E; e++) {
            const s = Math.fround(lambda * from[row + e] + kd * v[vi + e]);
            next[row + e] = s;
            acc[e] += qd * s;
          }
        }
        for (let e = 0; e < E; e++) out[vi + e] = acc[e];
      });
    }
  }
  out.fill(0, firstUnused(segr, B, N) * H * E);
  if (out.buffer !== o.storage.bytes.buffer) storeAs(o, out);
};
