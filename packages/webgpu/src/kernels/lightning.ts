/**
 * Lightning Attention in WGSL (docs/ALGORITHM.md A, B, D), per (batch, head):
 *
 *   S_t = λ S_{t−1} + k_tᵀ v_t,   o_t = q_t S_t,   λ = exp(−slope)
 *
 * The forward with D and E multiples of 4 runs by segment walks instead (lightning-walk.ts, D ≤ 128)
 * or blocked (lightning-blocked.ts; `kernelChoices.forward` picks where both apply), f16/bf16
 * inputs widened to f32 first, and so does each backward sweep, as a forward of other inputs
 * (lightning-backward.ts); this scan is their plain twin. Forward and the three backward sweeps
 * here are one chunked scan (LA-2) over blocks of C = 16 tokens taken in processing order p
 * (forward or reversed time):
 *
 *   out_p = Σ_{p'≤p} λ^{p−p'} (a_p · b_p') c_p'  +  λ^{p+α} a_p S        (intra-block + carried state)
 *   S    ← λ^m S + Σ_{p'<m} λ^{m−1−p'+β} b_p'ᵀ c_p'                        (m tokens in the block)
 *
 *   forward  a=q,  b=k,  c=v,  S = S        [D×E], α=1, β=0, forward time, S from the initial state
 *   dq       a=dO, b=v,  c=k,  S = Sᵀ       [E×D], α=1, β=0, forward time, S from the initial state
 *   dv       a=k,  b=q,  c=dO, S = G        [D×E], α=0, β=1, reversed time, G from dFinalState
 *   dk       a=v,  b=dO, c=q,  S = Gᵀ       [E×D], α=0, β=1, reversed time, G from dFinalState
 *
 * (G_t = ∂L/∂S_t, B.2 of docs/ALGORITHM.md with the final-state term.) The dv sweep's final G is
 * dInitialState. Columns of the state are independent, so a workgroup owns one (batch·head,
 * 16-column tile) pair and keeps its Y×16 slice of the state in workgroup memory; the Y dimension is
 * streamed 16 at a time through the intra-block product. All arithmetic is f32 (the CPU uses
 * float64); the block size attribute only changes rounding, so the GPU uses its own C.
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C block size; in the
 * generic scan Y is the dim of a and b, X the dim of c and of the outputs.
 */
import { argError, type Kernel, type KernelTable, type TensorRef } from "@lightning-ts/tensor";
import { ERROR_CODES, type Runtime } from "../runtime.js";
import { groups, type Ref, viaF32, widenToF32 } from "./common.js";
import { kernelChoices } from "./choices.js";
import { reversed, reverseTime, scaleState } from "./lightning-backward.js";
import { blockedForward, blockedForwardApplies } from "./lightning-blocked.js";
import { REPORT } from "./indexing.js";
import { WALK_VARIANTS, type WalkVariant, walkForward, walkForwardApplies, wideWalkApplies } from "./lightning-walk.js";

const C = 16;
const XT = 16;

interface Scan {
  op: string;
  a: Ref;
  b: Ref;
  c: Ref;
  slopes: Ref;
  init: GPUBuffer | null;
  out: GPUBuffer;
  finalState: GPUBuffer;
  dims: { BH: number; H: number; T: number; Y: number; X: number };
  alpha: 0 | 1;
  beta: 0 | 1;
  reverse: boolean;
  /** The state is stored [X, Y] (i.e. it is Sᵀ of a [D, E] buffer with D = X). */
  transposed: boolean;
}

/** State rows a pipeline is built for: Y rounded up to 32, 64, 128, … so few pipelines serve all Y. */
function stateRows(Y: number): number {
  return Math.max(32, 2 ** Math.ceil(Math.log2(Math.max(Y, 1))));
}

/** Workgroup bytes the scan needs for a given Y: four 16×16 tiles, λ powers, the state slice. */
export function scanWorkgroupBytes(Y: number): number {
  return (4 * C * C + (C + 1) + stateRows(Y) * XT) * 4;
}

function scan(rt: Runtime, maxWorkgroupBytes: number, s: Scan): void {
  const { BH, H, T, Y, X } = s.dims;
  const YP = stateRows(Y);
  const need = scanWorkgroupBytes(Y);
  if (need > maxWorkgroupBytes) {
    throw new Error(
      `${s.op}: a head dim of ${Y} needs ${need} bytes of workgroup memory, but this device allows ${maxWorkgroupBytes} (maxComputeWorkgroupStorageSize); the largest head dim it can run is ${maxHeadDim(maxWorkgroupBytes)}`,
    );
  }
  const xTiles = Math.ceil(X / XT);
  const dt = s.a.dtype;
  const time = "select(t0 + p, T - 1u - (t0 + p), pu(6u) == 1u)";
  rt.dispatch({
    // Direction, α, β, layout and the initial state are parameters, not specialisations: each
    // pipeline costs seconds to compile on lavapipe, so one serves all four sweeps.
    key: `lightning_scan:${dt}:Y${YP}`,
    shader: () => ({
      doc: [
        `a: (BH, T, Y) ${dt}`,
        `b: (BH, T, Y) ${dt}`,
        `c: (BH, T, X) ${dt}`,
        "slopes: (H) f32",
        "s0: (BH, Y, X) f32, or (BH, X, Y) when transposed",
        "out: (BH, T, X) f32",
        "sT: like s0",
      ],
      bindings: [
        { name: "a", dtype: dt, access: "read" },
        { name: "b", dtype: dt, access: "read" },
        { name: "c", dtype: dt, access: "read" },
        { name: "slopes", dtype: "f32", access: "read" },
        { name: "s0", dtype: "f32", access: "read" },
        { name: "out", access: "rw" },
        { name: "sT", access: "rw" },
      ],
      workgroupSize: C * XT,
      decls: `
var<workgroup> ach: array<f32, ${C * 16}>;   // a rows of the block, 16 of its Y columns: [p][yy]
var<workgroup> bch: array<f32, ${C * 16}>;   // b likewise: [p'][yy]
var<workgroup> ct: array<f32, ${C * XT}>;    // c rows of the block, this tile's columns: [p'][x]
var<workgroup> am: array<f32, ${C * C}>;     // masked, decayed intra-block scores: [p][p']
var<workgroup> pw: array<f32, ${C + 1}>;     // λ^n, n = 0..C
var<workgroup> st: array<f32, ${YP * XT}>;   // this tile's state slice: [y][x]
fn state_index(y: u32, x: u32, Y: u32, X: u32) -> u32 { return select(y * X + x, x * Y + y, pu(9u) == 1u); }`,
      // Params: T, Y, X, H, BH, xTiles, reverse, α, β, transposed, has initial state.
      body: `  let T = pu(0u); let Y = pu(1u); let X = pu(2u);
  let bh = wg / pu(5u);
  if (bh >= pu(4u)) { return; }
  let x0 = (wg % pu(5u)) * ${XT}u;
  let row = lid / ${XT}u;
  let col = lid % ${XT}u;
  let slope = slopes_f(bh % pu(3u));
  if (lid <= ${C}u) { pw[lid] = exp(-slope * f32(lid)); }
  for (var i = lid; i < ${YP * XT}u; i = i + ${C * XT}u) {
    let y = i / ${XT}u; let x = x0 + i % ${XT}u;
    var v = 0.0;
    if (pu(10u) == 1u && y < Y && x < X) { v = s0_f(bh * Y * X + state_index(y, x, Y, X)); }
    st[i] = v;
  }
  let nBlocks = (T + ${C - 1}u) / ${C}u;
  for (var blk = 0u; blk < nBlocks; blk = blk + 1u) {
    let t0 = blk * ${C}u;
    let m = min(${C}u, T - t0);
    {
      let p = row;
      var v = 0.0;
      if (p < m && x0 + col < X) { v = c_f((bh * T + ${time}) * X + x0 + col); }
      ct[lid] = v;
    }
    var dot = 0.0;
    var inter = 0.0;
    for (var y0 = 0u; y0 < Y; y0 = y0 + 16u) {
      {
        let p = row;
        var va = 0.0;
        var vb = 0.0;
        if (p < m && y0 + col < Y) {
          let at = (bh * T + ${time}) * Y + y0 + col;
          va = a_f(at);
          vb = b_f(at);
        }
        ach[lid] = va;
        bch[lid] = vb;
      }
      workgroupBarrier();
      for (var yy = 0u; yy < 16u; yy = yy + 1u) {
        let av = ach[row * 16u + yy];
        dot = dot + av * bch[col * 16u + yy];
        inter = inter + av * st[(y0 + yy) * ${XT}u + col];
      }
      workgroupBarrier();
      var upd = 0.0;
      for (var q = 0u; q < m; q = q + 1u) { upd = upd + pw[m - 1u - q + pu(8u)] * bch[q * 16u + row] * ct[q * ${XT}u + col]; }
      let si = (y0 + row) * ${XT}u + col;
      st[si] = pw[m] * st[si] + upd;
      workgroupBarrier();
    }
    am[lid] = select(0.0, pw[row - min(col, row)] * dot, col <= row);
    workgroupBarrier();
    var o = pw[row + pu(7u)] * inter;
    for (var q = 0u; q <= row; q = q + 1u) { o = o + am[row * ${C}u + q] * ct[q * ${XT}u + col]; }
    {
      let p = row;
      if (p < m && x0 + col < X) { out[(bh * T + ${time}) * X + x0 + col] = bitcast<u32>(o); }
    }
    workgroupBarrier();
  }
  for (var i = lid; i < ${YP * XT}u; i = i + ${C * XT}u) {
    let y = i / ${XT}u; let x = x0 + i % ${XT}u;
    if (y < Y && x < X) { sT[bh * Y * X + state_index(y, x, Y, X)] = bitcast<u32>(st[i]); }
  }`,
    }),
    bindings: [
      { buffer: s.a.storage, access: "read" },
      { buffer: s.b.storage, access: "read" },
      { buffer: s.c.storage, access: "read" },
      { buffer: s.slopes.storage, access: "read" },
      // An unused binding still needs a buffer; the shader never reads it without an initial state.
      { buffer: s.init ?? s.slopes.storage, access: "read" },
      { buffer: s.out, access: "rw" },
      { buffer: s.finalState, access: "rw" },
    ],
    params: [T, Y, X, H, BH, xTiles, s.reverse ? 1 : 0, s.alpha, s.beta, s.transposed ? 1 : 0, s.init ? 1 : 0],
    workgroups: BH * xTiles,
  });
}

/** The largest head dim (D or E) the scan runs with `bytes` of workgroup memory. */
export function maxHeadDim(bytes: number): number {
  let y = 32;
  while (scanWorkgroupBytes(y * 2) <= bytes) y *= 2;
  return scanWorkgroupBytes(y) <= bytes ? y : 0;
}

interface StepBuffers {
  q: Ref;
  k: Ref;
  v: Ref;
  slopes: Ref;
  state: Ref;
  out: GPUBuffer;
  next: GPUBuffer;
  /** Prompt segments (i32 [B + 1]): q, k, v and o have N ≥ B token rows (tensor's lightningStep). */
  segments?: Ref;
}

/**
 * WGSL of the steps with prompt segments: the token rows state row b steps through (its earlier
 * tokens B + s[b] … B + s[b + 1] − 1, then b), as (first earlier row, count with its own); offsets
 * out of order are reported through the error buffer (once a row: `reportIt`) and clamped, as the
 * CUDA kernels do. Needs the bindings `seg` (i32) and `err` (atomic) and REPORT.
 */
const SEGMENT_FNS = /* wgsl */ `
fn tokens_of(b: u32, B: u32, N: u32, reportIt: bool, code: u32) -> vec2<u32> {
  let extra = i32(N - B);
  let s0 = seg_i(b);
  let s1 = seg_i(b + 1u);
  if (reportIt && (s0 < 0 || s0 > extra || s1 < s0 || s1 > extra)) {
    let first = s0 < 0 || s0 > extra;
    report(code, select(s1, s0, first), select(b + 1u, b, first), u32(extra) + 1u);
  }
  let lo = min(max(s0, 0), extra);
  let hi = min(max(s1, lo), extra);
  return vec2<u32>(B + u32(lo), u32(hi - lo) + 1u);
}
// The token rows no segment names (from here on): their output is zero.
fn unused_from(B: u32, N: u32) -> u32 { return B + u32(min(max(seg_i(B), 0), i32(N - B))); }
`;

/** The shader bindings SEGMENT_FNS reads (after a step's own), and their buffers. */
const SEGMENT_BINDINGS = [
  { name: "seg", dtype: "i32", access: "read" },
  { name: "err", access: "atomic" },
] as const;
const segmentBuffers = (rt: Runtime, segments: Ref) =>
  [
    { buffer: segments.storage, access: "read" },
    { buffer: rt.errorBuffer, access: "atomic" },
  ] as const;

/** Columns (as vec4) of the state one workgroup of the vectorised step covers, and its row groups. */
const STEP_COLS4 = 32;
const STEP_ROWS = 8;

/**
 * The decode step for E a multiple of 4, bound by the state's bandwidth (read once, written once).
 * A workgroup owns one (batch·head, 128-column slice): 32 invocations across the slice, one vec4
 * each, times 8 row groups, each walking every 8th row of D with four rows' loads issued before
 * their arithmetic (unrolled), so many 16-byte loads are in flight. The 8 partial sums of o meet
 * in workgroup memory.
 */
function stepVec4(rt: Runtime, t: StepBuffers, dims: { BH: number; H: number; D: number; E: number; N: number }): void {
  const { BH, H, D, E, N } = dims;
  const dt = t.q.dtype;
  const slices = Math.ceil(E / 4 / STEP_COLS4);
  // In place (the new state over the old, ALIASED_OUTPUTS) the state is bound once, as sn: WebGPU
  // refuses two writable views of one buffer. Each vector is read before the same invocation writes it.
  const inPlace = t.state.storage === t.next;
  const src = inPlace ? "sn" : "s";
  const seg = t.segments;
  // With segments a workgroup steps its row's tokens in order, each token's arithmetic and sum as
  // the one-token step's: the first reads the state passed in, the later ones what the token before
  // wrote (the same invocation's vectors). The count is workgroup-uniform (workgroupUniformLoad), so
  // every invocation meets the barriers of every token.
  const load = (v: string, row: string) =>
    seg && !inPlace ? `if (tj == 0u) { ${v} = bitcast<vec4<f32>>(s[${row}]); } else { ${v} = bitcast<vec4<f32>>(sn[${row}]); }` : `${v} = bitcast<vec4<f32>>(${src}[${row}]);`;
  const token = seg ? "th" : "bh";
  const update = `let e = c4 * 4u;
    let ve = vec4<f32>(v_f(${token} * E4 * 4u + e), v_f(${token} * E4 * 4u + e + 1u), v_f(${token} * E4 * 4u + e + 2u), v_f(${token} * E4 * 4u + e + 3u));
    for (var d0 = rg; d0 < D; d0 = d0 + ${4 * STEP_ROWS}u) {
      ${[0, 1, 2, 3].map((j) => `let d${j} = d0 + ${j * STEP_ROWS}u;
      var sv${j} = vec4<f32>(0.0);
      if (d${j} < D) { ${load(`sv${j}`, `(bh * D + d${j}) * E4 + c4`)} }`).join("\n      ")}
      ${[0, 1, 2, 3]
        .map(
          (j) => `if (d${j} < D) {
        let nv = lambda * sv${j} + k_f(${token} * D + d${j}) * ve;
        sn[(bh * D + d${j}) * E4 + c4] = bitcast<vec4<u32>>(nv);
        acc = acc + q_f(${token} * D + d${j}) * nv;
      }`,
        )
        .join("\n      ")}
    }`;
  const sum = `if (rg == 0u && c4 < E4) {
    var sum = part[lid];
    for (var r = 1u; r < ${STEP_ROWS}u; r = r + 1u) { sum = sum + part[r * ${STEP_COLS4}u + lid]; }
    let at = ${token} * E4 * 4u + c4 * 4u;
    for (var j = 0u; j < 4u; j = j + 1u) { o[at + j] = bitcast<u32>(sum[j]); }
  }`;
  const body = seg
    ? `  let D = pu(2u); let E4 = pu(3u) / 4u;
  let bh = wg / pu(4u);
  if (bh >= pu(0u)) { return; }
  let H = pu(1u); let B = pu(0u) / H; let N = pu(5u);
  let b = bh / H; let h = bh % H;
  let c4 = (wg % pu(4u)) * ${STEP_COLS4}u + lid % ${STEP_COLS4}u;
  let rg = lid / ${STEP_COLS4}u;
  if (lid == 0u) { tokens = tokens_of(b, B, N, h == 0u && wg % pu(4u) == 0u, pu(6u)); }
  let tk = workgroupUniformLoad(&tokens);
  let lambda = exp(-slopes_f(h));
  for (var tj = 0u; tj < tk.y; tj = tj + 1u) {
    let th = select(b, tk.x + tj, tj + 1u < tk.y) * H + h;
    var acc = vec4<f32>(0.0);
    if (c4 < E4) {
    ${update}
    }
    part[lid] = acc;
    workgroupBarrier();
    ${sum}
    workgroupBarrier();
  }
  if (b == B - 1u && rg == 0u && c4 < E4) {
    for (var r = unused_from(B, N); r < N; r = r + 1u) {
      let at = (r * H + h) * E4 * 4u + c4 * 4u;
      for (var j = 0u; j < 4u; j = j + 1u) { o[at + j] = 0u; }
    }
  }`
    : `  let D = pu(2u); let E4 = pu(3u) / 4u;
  let bh = wg / pu(4u);
  if (bh >= pu(0u)) { return; }
  let c4 = (wg % pu(4u)) * ${STEP_COLS4}u + lid % ${STEP_COLS4}u;
  let rg = lid / ${STEP_COLS4}u;
  var acc = vec4<f32>(0.0);
  if (c4 < E4) {
    let lambda = exp(-slopes_f(bh % pu(1u)));
    ${update}
  }
  part[lid] = acc;
  workgroupBarrier();
  ${sum}`;
  rt.dispatch({
    key: `lightning_step_vec4:${dt}:${inPlace ? "in_place" : "new"}${seg ? ":segments" : ""}`,
    shader: () => ({
      doc: [
        `q: (${seg ? "N" : "B"}, H, D) ${dt}`,
        `k: (${seg ? "N" : "B"}, H, D) ${dt}`,
        `v: (${seg ? "N" : "B"}, H, E) ${dt}`,
        "slopes: (H) f32",
        "s: (B, H, D, E/4) vec4 f32",
        `o: (${seg ? "N" : "B"}, H, E) f32`,
        "sn: (B, H, D, E/4) vec4 f32",
        ...(seg ? ["seg: (B + 1) i32", "err: (4) atomic u32"] : []),
      ],
      bindings: [
        { name: "q", dtype: dt, access: "read" },
        { name: "k", dtype: dt, access: "read" },
        { name: "v", dtype: dt, access: "read" },
        { name: "slopes", dtype: "f32", access: "read" },
        ...(inPlace ? [] : [{ name: "s", access: "read" as const, vec4: true }]),
        { name: "o", access: "rw" },
        { name: "sn", access: "rw", vec4: true },
        ...(seg ? SEGMENT_BINDINGS : []),
      ],
      workgroupSize: STEP_COLS4 * STEP_ROWS,
      decls: `var<workgroup> part: array<vec4<f32>, ${STEP_COLS4 * STEP_ROWS}>;${seg ? `\nvar<workgroup> tokens: vec2<u32>;\n${REPORT}${SEGMENT_FNS}` : ""}`,
      // Params: BH, H, D, E, column slices[, N, error code].
      body,
    }),
    bindings: [
      { buffer: t.q.storage, access: "read" },
      { buffer: t.k.storage, access: "read" },
      { buffer: t.v.storage, access: "read" },
      { buffer: t.slopes.storage, access: "read" },
      ...(inPlace ? [] : [{ buffer: t.state.storage, access: "read" as const }]),
      { buffer: t.out, access: "rw" },
      { buffer: t.next, access: "rw" },
      ...(seg ? segmentBuffers(rt, seg) : []),
    ],
    params: seg ? [BH, H, D, E, slices, N, ERROR_CODES.lightningStep] : [BH, H, D, E, slices],
    workgroups: BH * slices,
  });
}

const dimsOf = (q: TensorRef<GPUBuffer>, v: TensorRef<GPUBuffer>) => {
  const [B, H, T, D] = q.shape as [number, number, number, number];
  return { BH: B * H, H, T, D, E: v.shape[3] };
};

/** One forward on the fast kernels: inputs of any float dtype, an f32 output and final state. */
interface FastForward {
  q: Ref;
  k: Ref;
  v: Ref;
  init: GPUBuffer | null;
  out: GPUBuffer;
  finalState: GPUBuffer;
  /** q, k and v are read, and out written, in reversed time (the backward's dk and dv sweeps). */
  reversed?: boolean;
}

export function lightningKernels(rt: Runtime, maxWorkgroupBytes: number) {
  /**
   * The forward of these dtypes and dims on the fast kernels (the walk or the blocked forward, as
   * `kernelChoices.forward` picks where both apply), or null where only the plain scan takes them.
   */
  const fastForward = (dtypes: readonly string[], dims: { BH: number; H: number; T: number; D: number; E: number }, slopes: Ref): ((f: FastForward) => void) | null => {
    if (rt.plainKernels) return null;
    const { BH, T, D, E } = dims;
    const limits = { maxWorkgroupBytes, maxBindingBytes: rt.device.limits.maxStorageBufferBindingSize };
    const choice = kernelChoices.forward;
    const walks = walkForwardApplies(dtypes, { T, D, E }, limits);
    const walkOptions = WALK_VARIANTS[choice as keyof typeof WALK_VARIANTS] as WalkVariant | undefined;
    const walk = walkOptions !== undefined && walks && (walkOptions.kernel !== "wide" || wideWalkApplies({ D, E }, rt.device.limits));
    // Blocked, with its output step on the walk kernel where that applies.
    const stored = (choice === "stored" || choice === "stored64") && walks ? (choice === "stored" ? 128 : 64) : undefined;
    if (!walk && !blockedForwardApplies(dtypes, { BH, T, D, E }, limits)) return null;
    return (f) => {
      if (f.reversed && !walk) {
        // The blocked forward reads time forwards only: it runs on reversed f32 copies, and its
        // output is reversed back.
        const [qr, kr, vr] = [f.q, f.k, f.v].map((x, i) => reversed(rt, x, { BH, T, W: i < 2 ? D : E }));
        const out = rt.acquire(BH * T * E * 4);
        blockedForward(rt, { q: qr, k: kr, v: vr, slopes, init: f.init, finalState: f.finalState, dims, out }, stored);
        reverseTime(rt, { storage: out, shape: [BH, T, E], dtype: "f32", size: BH * T * E }, f.out, { BH, T, W: E });
        for (const b of [qr.storage, kr.storage, vr.storage, out]) rt.release(b);
        return;
      }
      // f16/bf16 inputs are widened to f32 once: a few passes over q, k, v, small beside the products.
      const [qf, kf, vf] = [f.q, f.k, f.v].map((x) => (x.dtype === "f32" ? x : widenToF32(rt, x)));
      const args = { q: qf, k: kf, v: vf, slopes, init: f.init, finalState: f.finalState, dims, out: f.out };
      if (walk && walkOptions) {
        walkForward(rt, { ...args, touch: walkOptions.touch, kernel: walkOptions.kernel, rows: walkOptions.rows, products: walkOptions.products, ahead: walkOptions.ahead, reversed: f.reversed }, walkOptions.columns, walkOptions.staged ? kernelChoices.stageBytes : 0);
      } else {
        blockedForward(rt, args, stored);
      }
      for (const [wide, x] of [[qf, f.q], [kf, f.k], [vf, f.v]]) if (wide !== x) rt.release(wide.storage);
    };
  };

  // q, k: (B, H, T, D); v: (B, H, T, E); slopes: (H); initialState?: (B, H, D, E) → o: (B, H, T, E), state: (B, H, D, E)
  // No segment states (segmentTokens): these kernels keep none, and the backend never offers them
  // (it has no lightningSegmentTokens), so a call that asks is refused before any work.
  const lightningAttention: Kernel<"lightningAttention", GPUBuffer> = ({ inputs: [q, k, v, slopes, s0], outputs: [o, state], attrs }) => {
    if ((attrs.segmentTokens ?? 0) > 0) {
      argError("lightningAttention", "segmentTokens", "0 on the webgpu backend (it keeps no segment states; a backend that does says so through lightningSegmentTokens)", String(attrs.segmentTokens));
    }
    const { BH, H, T, D, E } = dimsOf(q, v);
    const fast = fastForward([q.dtype, k.dtype, v.dtype], { BH, H, T, D, E }, slopes);
    if (fast) {
      viaF32(rt, o, (out) => fast({ q, k, v, init: s0?.storage ?? null, out, finalState: state.storage }));
      return;
    }
    viaF32(rt, o, (out) =>
      scan(rt, maxWorkgroupBytes, {
        op: "lightningAttention",
        a: q,
        b: k,
        c: v,
        slopes: slopes,
        init: s0?.storage ?? null,
        out,
        finalState: state.storage,
        dims: { BH, H, T, Y: D, X: E },
        alpha: 1,
        beta: 0,
        reverse: false,
        transposed: false,
      }),
    );
  };

  // (q, k, v, slopes, dO, dFinalState[, initialState][, segmentStates]) → (dq, dk, dv, dInitialState)
  // Each sweep runs as a forward on the fast kernels where they take its shape (lightning-backward.ts),
  // else as the plain scan. The segment states are not read: the dq sweep makes its own.
  const lightningAttentionBackward: Kernel<"lightningAttentionBackward", GPUBuffer> = ({ inputs, outputs, attrs }) => {
    const [q, k, v, slopes, dO, dS] = inputs;
    const s0 = attrs.hasInitialState ? inputs[6] : undefined;
    const [dq, dk, dv, dS0] = outputs;
    const { BH, H, T, D, E } = dimsOf(q, v);
    const op = "lightningAttentionBackward";
    const dtypes = [q.dtype, k.dtype, v.dtype, dO.dtype];
    const forwards = kernelChoices.backward === "forwards";
    // The dq and dk sweeps read keys of width E and values of width D; dv's are the forward's.
    const swapped = forwards ? fastForward(dtypes, { BH, H, T, D: E, E: D }, slopes) : null;
    const forward = forwards ? fastForward(dtypes, { BH, H, T, D, E }, slopes) : null;
    // The dq and dk sweeps also produce a final state nobody needs.
    const discard = rt.acquire(BH * D * E * 4);
    const base = { op, slopes: slopes, finalState: discard };
    const states = { BH, H, R: D, C: E };
    if (swapped) {
      const init = s0 ? rt.acquire(BH * D * E * 4) : null;
      if (s0 && init) scaleState(rt, s0.storage, slopes, init, states, { transpose: true, power: 0 });
      viaF32(rt, dq, (out) => swapped({ q: dO, k: v, v: k, init, out, finalState: discard }));
      if (init) rt.release(init);
    } else {
      viaF32(rt, dq, (out) =>
        scan(rt, maxWorkgroupBytes, { ...base, a: dO, b: v, c: k, init: s0?.storage ?? null, out, dims: { BH, H, T, Y: E, X: D }, alpha: 1, beta: 0, reverse: false, transposed: true }),
      );
    }
    if (swapped) {
      const init = rt.acquire(BH * D * E * 4);
      scaleState(rt, dS.storage, slopes, init, states, { transpose: true, power: 1 });
      viaF32(rt, dk, (out) => swapped({ q: v, k: dO, v: q, init, out, finalState: discard, reversed: true }));
      rt.release(init);
    } else {
      viaF32(rt, dk, (out) =>
        scan(rt, maxWorkgroupBytes, { ...base, a: v, b: dO, c: q, init: dS.storage, out, dims: { BH, H, T, Y: E, X: D }, alpha: 0, beta: 1, reverse: true, transposed: true }),
      );
    }
    if (forward) {
      const init = rt.acquire(BH * D * E * 4);
      scaleState(rt, dS.storage, slopes, init, states, { transpose: false, power: 1 });
      const final = rt.acquire(BH * D * E * 4);
      viaF32(rt, dv, (out) => forward({ q: k, k: q, v: dO, init, out, finalState: final, reversed: true }));
      scaleState(rt, final, slopes, dS0.storage, states, { transpose: false, power: -1 });
      for (const b of [init, final]) rt.release(b);
    } else {
      viaF32(rt, dv, (out) =>
        scan(rt, maxWorkgroupBytes, {
          ...base,
          a: k,
          b: q,
          c: dO,
          init: dS.storage,
          out,
          finalState: dS0.storage,
          dims: { BH, H, T, Y: D, X: E },
          alpha: 0,
          beta: 1,
          reverse: true,
          transposed: false,
        }),
      );
    }
    rt.release(discard);
  };

  // q, k: (B, H, D); v: (B, H, E); slopes: (H); state: (B, H, D, E) → o: (B, H, E), newState: (B, H, D, E)
  // The new state may be the state's own storage (lightningStep with inPlace). WebGPU cannot bind
  // one buffer as read-only and read-write storage in one dispatch, so that case is its own
  // pipeline that binds the state once, read-write: each invocation reads a state element and then
  // writes it, and no other invocation touches it, so the bits are those of the two-buffer kernel.
  const lightningStep: Kernel<"lightningStep", GPUBuffer> = ({ inputs: [q, k, v, slopes, state, segments], outputs: [o, next] }) => {
    // With prompt segments q, k, v and o have N ≥ B token rows; each state row steps its earlier
    // tokens, then its own (tensor's lightningStep), with the arithmetic of as many one-token steps.
    const [N, H, D] = q.shape as [number, number, number];
    const B = state.shape[0];
    const E = v.shape[2];
    const dt = q.dtype;
    if (!rt.plainKernels && E % 4 === 0) {
      viaF32(rt, o, (out) => stepVec4(rt, { q, k, v, slopes, state, out, next: next.storage, segments }, { BH: B * H, H, D, E, N }));
      return;
    }
    const inPlace = next.storage === state.storage;
    const newState = inPlace ? "s" : "sn";
    const rows = segments ? "N" : "B";
    // The first token reads the state passed in, the later ones what the token before wrote.
    const previous = inPlace || !segments ? "let prev = s_f(at);" : "var prev: f32;\n      if (tj == 0u) { prev = s_f(at); } else { prev = bitcast<f32>(sn[at]); }";
    const token = (th: string) => `let ve = v_f(${th} * E + e);
    var acc = 0.0;
    for (var d = 0u; d < D; d = d + 1u) {
      let at = (bh * D + d) * E + e;
      ${previous}
      let sv = lambda * prev + k_f(${th} * D + d) * ve;
      ${newState}[at] = bitcast<u32>(sv);
      acc = acc + q_f(${th} * D + d) * sv;
    }
    o[${th} * E + e] = bitcast<u32>(acc);`;
    viaF32(rt, o, (out) =>
      rt.dispatch({
        key: `lightning_step:${dt}${inPlace ? ":in_place" : ""}${segments ? ":segments" : ""}`,
        shader: () => ({
          doc: [
            `q: (${rows}, H, D) ${dt}`,
            `k: (${rows}, H, D) ${dt}`,
            `v: (${rows}, H, E) ${dt}`,
            "slopes: (H) f32",
            inPlace ? "s: (B, H, D, E) f32, overwritten by the new state" : "s: (B, H, D, E) f32",
            `o: (${rows}, H, E) f32`,
            ...(inPlace ? [] : ["sn: (B, H, D, E) f32"]),
            ...(segments ? ["seg: (B + 1) i32", "err: (4) atomic u32"] : []),
          ],
          bindings: [
            { name: "q", dtype: dt, access: "read" },
            { name: "k", dtype: dt, access: "read" },
            { name: "v", dtype: dt, access: "read" },
            { name: "slopes", dtype: "f32", access: "read" },
            { name: "s", dtype: "f32", access: inPlace ? "rw" : "read" },
            { name: "o", access: "rw" },
            ...(inPlace ? [] : [{ name: "sn", access: "rw" } as const]),
            ...(segments ? SEGMENT_BINDINGS : []),
          ],
          workgroupSize: 256,
          ...(segments ? { decls: REPORT + SEGMENT_FNS } : {}),
          // One invocation per (batch·head, e): it walks the state column, so neighbours read
          // neighbouring words of each state row. Params: BH, H, D, E[, N, error code].
          body: segments
            ? `  let BH = pu(0u); let H = pu(1u); let D = pu(2u); let E = pu(3u);
  if (gid >= BH * E) { return; }
  let bh = gid / E; let e = gid % E;
  let B = BH / H; let N = pu(4u);
  let b = bh / H; let h = bh % H;
  let tk = tokens_of(b, B, N, h == 0u && e == 0u, pu(5u));
  let lambda = exp(-slopes_f(h));
  for (var tj = 0u; tj < tk.y; tj = tj + 1u) {
    let th = select(b, tk.x + tj, tj + 1u < tk.y) * H + h;
    ${token("th")}
  }
  if (b == B - 1u) {
    for (var r = unused_from(B, N); r < N; r = r + 1u) { o[(r * H + h) * E + e] = 0u; }
  }`
            : `  let BH = pu(0u); let H = pu(1u); let D = pu(2u); let E = pu(3u);
  if (gid >= BH * E) { return; }
  let bh = gid / E; let e = gid % E;
  let lambda = exp(-slopes_f(bh % H));
  ${token("bh")}`,
        }),
        bindings: [
          { buffer: q.storage, access: "read" },
          { buffer: k.storage, access: "read" },
          { buffer: v.storage, access: "read" },
          { buffer: slopes.storage, access: "read" },
          { buffer: state.storage, access: inPlace ? "rw" : "read" },
          { buffer: out, access: "rw" },
          ...(inPlace ? [] : [{ buffer: next.storage, access: "rw" } as const]),
          ...(segments ? segmentBuffers(rt, segments) : []),
        ],
        params: segments ? [B * H, H, D, E, N, ERROR_CODES.lightningStep] : [B * H, H, D, E],
        workgroups: groups(B * H * E),
      }),
    );
  };

  return { lightningAttention, lightningAttentionBackward, lightningStep } satisfies Partial<KernelTable<GPUBuffer>>;
}
