/**
 * Lightning Attention forward by segment walks (docs/ALGORITHM.md LA-2 with blocks of C = 64
 * tokens), for f32 q, k, v with D ≤ 128 and D, E multiples of 4. No block state goes through
 * memory: a workgroup walks the blocks of one segment (G blocks) in order and carries the state
 * S (D × 128 or 64 columns of E) in registers, as the CUDA kernels do; only one state per segment
 * is stored.
 *
 *   1. totals: R_g = Σ_{p in g} λ^{L_g − 1 − p} k_pᵀ v_p for every segment but the last (L_g tokens):
 *              a product of kᵀ (D × L_g) and v (L_g × E) with decayed k rows, the matmul kernel's
 *              128×128 register tile with the next slice fetched while the current one is used
 *                                                           one workgroup per (b·h, segment, tile of D×E)
 *   2. scan:   C_0 = initial state, C_{g+1} = λ^{L_g} C_g + R_g, C_g overwriting R_g
 *                                                           one invocation per (b·h, vec4 of D×E)
 *   3. walk:   from S = C_g, for each block j of segment g (tokens t0 …, m of them):
 *                o_p = Σ_{p'≤p} λ^{p−p'} (q_p · k_p') v_p' + λ^{p+1} q_p S     (p, p' within the block)
 *                S  ← λ^m S + Σ_p λ^{m−1−p} k_pᵀ v_p
 *              the final state is the last segment's S after its last block
 *                                                           one workgroup per (b·h, segment, 128 columns of E)
 *
 * With one segment per sequence (short T, or many sequences) steps 1 and 2 are skipped and the walk
 * starts from the initial state: the forward's minimum of arithmetic. A long sequence is split
 * into as few segments as fill the GPU, and step 1 repeats the state products of all but the last
 * segment (the price of not storing a state per block; the blocked forward pays in bytes instead).
 *
 * With block products first (`products`), step 1 is instead one pass over every block of every
 * segment, in parallel: it stores each block's product P_j = Σ_p λ^{m−1−p} k_pᵀ v_p (BH, nB, D, E)
 * and, for all but the last segment, R_g = Σ_j λ^{L_g − t_j − m_j} P_j from the same registers; the
 * walk then updates S ← λ^m S + P_j from memory instead of multiplying kᵀ v itself. No state product
 * is made twice, at any number of segments, for one state's bytes per block written and read once.
 *
 * In the walk, S lives in registers as the matmul's 8×8 tile (rows d = ty·4 + r and 64 + ty·4 + r,
 * columns tx·4 and 64 + tx·4 of the E tile). q_p S needs all of d for one column, so S passes
 * through workgroup memory 32 rows at a time, beside the same 32 columns of q and k, which also
 * give the scores q_p · k_p'. The products with v share one staging of v: P·v into the output tile
 * and the state update into S. Global loads are fetched a stage ahead, and the next block's rows
 * are touched a block ahead into L2 (touchNextBlock).
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C block size (64),
 * G blocks per segment.
 */
import type { Binding, Runtime } from "../runtime.js";
import { kernelChoices } from "./choices.js";
import { accumulators, blockStages, component, copyWords, groups, maskedScores, outerProductFma, type Ref, stagedProduct, tileStores8x8, tileWorkgroup, TOUCHED_SUM, touchNextKv } from "./common.js";
import { wideWalk } from "./lightning-walk-wide.js";

export { wideWalkApplies } from "./lightning-walk-wide.js";

const C = 64;
/** Tile edge of the state (rows of D, columns of E). */
const TILE = 128;
const V = TILE / 4;
/** Blocks per segment forced by a test; null picks by size. */
let forcedSegmentBlocks: number | null = null;
/** Most bytes of segment states at once; above it the batch·heads run in chunks. */
let scratchCap = 2 ** 30;

/** Workgroup bytes of the walk (its largest step). */
export const WALK_WORKGROUP_BYTES = 2048 * 16;

/** Test hook: blocks per segment (null: by size). */
export function setWalkSegmentBlocks(blocks: number | null): void {
  forcedSegmentBlocks = blocks;
}

/** Test hook: a small cap makes small inputs run in several chunks of batch·heads. */
export function setWalkScratchBytes(bytes: number): void {
  scratchCap = bytes;
}

/**
 * The totals pass's time against the walk's for the same blocks, all products repeated: on the H200
 * the totals over 15/16 of the sequence took 1.09 ms beside the walk's 4.0 (T = 65,536).
 */
const TOTALS_SHARE = 0.3;

/**
 * Blocks per segment for `sequences` sequences of `blocks` blocks and `eTiles` column tiles: as
 * long as leaves at least `kernelChoices.walkWorkgroups` (256: about two waves over the 132 SMs
 * of an H100/H200 at one workgroup per SM, whose registers hold a 128×128 state, an output tile
 * and the scores) walk workgroups (fewer segments repeat less of the state products in step 1),
 * the whole sequence where that is already enough. A sequence is not split where its unsplit walks
 * take no more waves of blocks (a wave: half of `walkWorkgroups`) than the split ones with their
 * totals pass: at T = 8,192 of the benchmark shape, 128 sequences are one wave of 128 blocks each,
 * which two segments make two waves of 64 blocks plus the totals (4.05 against 4.70 ms on the H200).
 */
export function walkSegmentBlocks(sequences: number, blocks: number, eTiles: number): number {
  const walks = sequences * eTiles;
  const segments = Math.max(1, Math.ceil(kernelChoices.walkWorkgroups / walks));
  const G = Math.max(1, Math.ceil(blocks / segments));
  if (G >= blocks) return blocks;
  const waves = (workgroups: number) => Math.ceil(workgroups / Math.max(1, kernelChoices.walkWorkgroups / 2));
  const n = Math.ceil(blocks / G);
  const split = waves(walks * n) * G * (1 + (TOTALS_SHARE * (n - 1)) / n);
  return waves(walks) * blocks <= split ? blocks : G;
}

export interface WalkForward {
  q: Ref; // (B, H, T, D)
  k: Ref; // (B, H, T, D)
  v: Ref; // (B, H, T, E)
  slopes: Ref; // (H)
  init: GPUBuffer | null; // (B, H, D, E) f32
  out: GPUBuffer; // (B, H, T, E) f32
  finalState: GPUBuffer; // (B, H, D, E) f32
  dims: { BH: number; H: number; T: number; D: number; E: number };
  /** Whether to touch the next block ahead into L2 (default: `kernelChoices.touchAhead`). */
  touch?: boolean;
  /** Step 3 on 256-invocation workgroups (`walk`, the default) or 512 (`wide`, lightning-walk-wide.ts; 128 columns only). */
  kernel?: "walk" | "wide";
  /** The 256-invocation walk loads q and k by whole rows (see `walk`); the wide one always does. */
  rows?: boolean;
  /** Every block's state product made first, in a pass of its own, and read by the walk (256 invocations only). */
  products?: boolean;
  /**
   * Stages whose global loads are in flight (1, the default, or 2: two register slots, used with
   * 256 invocations, no touches and no block products where D > 96 or 32 < D ≤ 64; elsewhere 1).
   */
  ahead?: 1 | 2;
  /**
   * q, k and v are read, and o written, in reversed time: the walk runs the sequence x'[t] =
   * x[T − 1 − t] of each batch·head without a reversed copy (the backward's dk and dv sweeps).
   */
  reversed?: boolean;
}

/**
 * WGSL: the storage row of token t of batch·head bh (bound from io0), in time order or reversed
 * (`WalkForward.reversed`).
 */
export function tokenRow(reversed: boolean | undefined): (t: string) => string {
  return reversed ? (t) => `((bh - io0) * T + T - 1u - (${t}))` : (t) => `((bh - io0) * T + ${t})`;
}

/** How each forward variant of `kernelChoices.forward` that walks segments runs. */
export interface WalkVariant {
  columns: 64 | 128;
  /** q, k and v copied into buffers of at most `kernelChoices.stageBytes` first. */
  staged: boolean;
  touch?: boolean;
  kernel: "walk" | "wide";
  rows?: boolean;
  /** Block products first (see `WalkForward.products`). */
  products?: boolean;
  /** Stages of global loads in flight (see `WalkForward.ahead`). */
  ahead?: 1 | 2;
}

export const WALK_VARIANTS = {
  walk: { columns: 128, staged: false, kernel: "walk" },
  walk64: { columns: 64, staged: false, kernel: "walk" },
  "walk-notouch": { columns: 128, staged: false, touch: false, kernel: "walk" },
  "walk-rows": { columns: 128, staged: false, touch: false, kernel: "walk", rows: true },
  "walk-rows2": { columns: 128, staged: false, touch: false, kernel: "walk", rows: true, ahead: 2 },
  wide: { columns: 128, staged: false, kernel: "wide" },
  staged: { columns: 128, staged: true, kernel: "walk" },
  staged64: { columns: 64, staged: true, kernel: "walk" },
  "staged-notouch": { columns: 128, staged: true, touch: false, kernel: "walk" },
  "staged-wide": { columns: 128, staged: true, kernel: "wide" },
  "staged-rows": { columns: 128, staged: true, kernel: "walk", rows: true },
  products: { columns: 128, staged: false, kernel: "walk", products: true },
  products64: { columns: 64, staged: false, kernel: "walk", products: true },
} as const satisfies Record<string, WalkVariant>;

/** Whether the walk runs these inputs on a device with these limits. */
export function walkForwardApplies(dtypes: readonly string[], d: { T: number; D: number; E: number }, limits: { maxWorkgroupBytes: number; maxBindingBytes: number }): boolean {
  return (
    dtypes.every((t) => t === "f32" || t === "f16" || t === "bf16") &&
    d.T > 0 &&
    d.D <= TILE &&
    d.D % 4 === 0 &&
    d.E % 4 === 0 &&
    WALK_WORKGROUP_BYTES <= limits.maxWorkgroupBytes &&
    d.D * d.E * 4 <= Math.min(limits.maxBindingBytes, scratchCap)
  );
}

/**
 * The forward by segment walks, each walk workgroup owning `columns` (128 or 64) columns of E:
 * with 64, twice the workgroups and half the state registers (more workgroups per SM, fewer
 * segments), but the scores of a block computed once per 64 columns instead of 128.
 */
export function walkForward(rt: Runtime, f: WalkForward, columns: 64 | 128 = 128, stageBytes = 0): void {
  const { BH, T, D, E } = f.dims;
  const nB = Math.ceil(T / C);
  // With `kernelChoices.bindCapBytes`, q, k, v and o are bound a chunk of batch·heads at a time,
  // at most that many bytes each (where the chunks start at aligned offsets). With `stageBytes`,
  // each chunk's q, k and v are first copied into buffers of at most that size, and its output
  // computed in one and copied out: a probe of whether large allocations are what is slow.
  const align = rt.device.limits.minStorageBufferOffsetAlignment;
  const headBytes = T * Math.max(D, E) * 4;
  const aligned = (T * D * 4) % align === 0 && (T * E * 4) % align === 0;
  const bindCap = stageBytes > 0 ? stageBytes : kernelChoices.bindCapBytes;
  const mode: IoMode = bindCap > 0 && BH * headBytes > bindCap && aligned ? (stageBytes > 0 ? "staged" : "sliced") : "whole";
  const ioChunk = mode === "whole" ? BH : Math.max(1, Math.floor(bindCap / headBytes));
  let G = forcedSegmentBlocks ?? walkSegmentBlocks(Math.min(BH, ioChunk), nB, Math.ceil(E / columns));
  // Segment states of one sequence that alone exceed the cap (or a binding) take fewer, longer segments.
  const cap = Math.min(rt.device.limits.maxStorageBufferBindingSize, scratchCap);
  const maxSegments = Math.max(1, Math.floor(cap / (D * E * 4)));
  if (Math.ceil(nB / G) > maxSegments) G = Math.ceil(nB / maxSegments);
  const nSeg = Math.ceil(nB / G);
  // Block products need one sequence's nB states in one binding, and are not combined with staging;
  // where they do not apply, the walk multiplies kᵀ v itself (the same sums).
  const products = f.products === true && mode !== "staged" && f.kernel !== "wide" && nB * D * E * 4 <= cap;
  // States stored per sequence: none with one segment (all batch·heads run at once), else one per
  // segment, or with block products one per block (the segments' states are smaller).
  const stored = products ? nB : nSeg === 1 ? 0 : nSeg;
  const chunk = Math.min(ioChunk, stored === 0 ? BH : Math.max(1, Math.floor(cap / (stored * D * E * 4))));
  for (let bh0 = 0; bh0 < BH; bh0 += chunk) {
    const count = Math.min(chunk, BH - bh0);
    if (mode !== "staged") {
      walkChunk(rt, { ...f, products }, ioBindings(f, bh0, count, mode === "sliced"), bh0, count, G, columns);
      continue;
    }
    const [q, k, v] = [f.q, f.k, f.v].map((x) => {
      const width = x === f.v ? E : D;
      const storage = rt.acquire(count * T * width * 4);
      copyWords(rt, x.storage, bh0 * T * width, storage, count * T * width);
      return storage;
    });
    const out = rt.acquire(count * T * E * 4);
    const io = { q: { buffer: q, access: "read" as const }, k: { buffer: k, access: "read" as const }, v: { buffer: v, access: "read" as const }, o: { buffer: out, access: "rw" as const }, io0: bh0 };
    walkChunk(rt, f, io, bh0, count, G, columns);
    copyWords(rt, out, 0, f.out, count * T * E, bh0 * T * E);
    for (const b of [q, k, v, out]) rt.release(b);
  }
}

type IoMode = "whole" | "sliced" | "staged";

/** The walk kernels' bindings (the 256- and 512-invocation walks share them), `cseg` described by `cseg`. */
export function walkShaderIo(cseg: string) {
  return {
    doc: [
      "q: (BH, T, D/4) vec4 f32",
      "k: (BH, T, D/4) vec4 f32",
      "v: (BH, T, E/4) vec4 f32",
      "slopes: (H) f32",
      "cin: (BH, nSeg, D, E/4) vec4 f32, C_g: the state entering each segment",
      cseg,
      "o: (BH, T, E/4) vec4 f32",
      "sT: (BH, D, E/4) vec4 f32",
    ],
    bindings: [
      { name: "q", access: "read", vec4: true },
      { name: "k", access: "read", vec4: true },
      { name: "v", access: "read", vec4: true },
      { name: "slopes", dtype: "f32", access: "read" },
      { name: "cin", access: "read", vec4: true },
      { name: "cseg", access: "read", vec4: true },
      { name: "o", access: "rw", vec4: true },
      { name: "sT", access: "rw", vec4: true },
    ] as const,
  };
}

export type IoBindings = ReturnType<typeof ioBindings>;

/** Bindings of q, k, v and o: whole, or only the rows of batch·heads bh0 … bh0 + count − 1. */
function ioBindings(f: WalkForward, bh0: number, count: number, sliced: boolean) {
  const { T, D, E } = f.dims;
  const rows = (buffer: GPUBuffer, width: number, access: "read" | "rw"): Binding =>
    sliced ? { buffer, access, offset: bh0 * T * width * 4, size: count * T * width * 4 } : { buffer, access };
  return { q: rows(f.q.storage, D, "read"), k: rows(f.k.storage, D, "read"), v: rows(f.v.storage, E, "read"), o: rows(f.out, E, "rw"), io0: sliced ? bh0 : 0 };
}

function walkChunk(rt: Runtime, f: WalkForward, io: IoBindings, bh0: number, count: number, G: number, columns: number): void {
  const { H, T, D, E } = f.dims;
  const nB = Math.ceil(T / C);
  const nSeg = Math.ceil(nB / G);
  const dTiles = Math.ceil(D / TILE);
  const eTiles = Math.ceil(E / TILE);
  const L = G * C;
  const seg = nSeg > 1 ? rt.acquire(count * nSeg * D * E * 4) : null;
  const products = f.products === true ? rt.acquire(count * nB * D * E * 4) : null;
  if (products) blockProducts(rt, f, products, seg, io, { bh0, count, nSeg, L, dTiles, eTiles });
  if (seg) {
    if (!products) segmentTotals(rt, f, seg, io, { bh0, count, nSeg, L, dTiles, eTiles });
    const vectors = (count * D * E) / 4;
    rt.dispatch({
      key: "lightning_walk_scan",
      shader: () => ({
        doc: ["slopes: (H) f32", "s0: (BH, D, E/4) vec4 f32", "seg: (BH, nSeg, D, E/4) vec4 f32, in: R_g (g < nSeg − 1), out: C_g"],
        bindings: [
          { name: "slopes", dtype: "f32", access: "read" },
          { name: "s0", access: "read", vec4: true },
          { name: "seg", access: "rw", vec4: true },
        ],
        workgroupSize: 256,
        // Params: D·E/4, H, vectors in this chunk, nSeg, has initial state, first batch·head of the chunk, tokens per segment.
        body: `  let DE4 = pu(0u);
  if (gid >= pu(2u)) { return; }
  let nSeg = pu(3u);
  let lb = gid / DE4;
  let bh = pu(5u) + lb;
  let i = gid % DE4;
  let full = exp(-slopes_f(bh % pu(1u)) * f32(pu(6u)));
  var S = vec4<f32>(0.0);
  if (pu(4u) == 1u) { S = bitcast<vec4<f32>>(s0[bh * DE4 + i]); }
  // Four totals are loaded before their updates: the loop is bound by memory latency.
  for (var g0 = 0u; g0 < nSeg; g0 = g0 + 4u) {
    var tots: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j = j + 1u) {
      if (g0 + j + 1u < nSeg) { tots[j] = bitcast<vec4<f32>>(seg[(lb * nSeg + g0 + j) * DE4 + i]); }
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
      if (g0 + j < nSeg) {
        seg[(lb * nSeg + g0 + j) * DE4 + i] = bitcast<vec4<u32>>(S);
        S = full * S + tots[j];
      }
    }
  }`,
      }),
      bindings: [
        { buffer: f.slopes.storage, access: "read" },
        // An unused binding still needs a buffer; the shader never reads it without an initial state.
        { buffer: f.init ?? f.slopes.storage, access: "read" },
        { buffer: seg, access: "rw" },
      ],
      params: [(D * E) / 4, H, vectors, nSeg, f.init ? 1 : 0, bh0, L],
      workgroups: groups(vectors),
    });
  }
  // The walk's entering states: C_g, or with one segment the initial state itself ((BH, 1, D, E)
  // is the layout of (BH, D, E)).
  const entering = seg ?? f.init;
  const shape: WalkShape = { bh0, count, nSeg, G, eTiles: Math.ceil(E / columns), columns, enter: seg ? 1 : f.init ? 2 : 0, products };
  (f.kernel === "wide" ? wideWalk : walk)(rt, f, entering, io, shape);
  if (seg) rt.release(seg);
  if (products) rt.release(products);
}

interface ChunkShape {
  bh0: number;
  count: number;
  nSeg: number;
  L: number;
  dTiles: number;
  eTiles: number;
}

/** Step 1: R_g of every segment but the last into seg (a register-tiled kᵀ v per tile). */
function segmentTotals(rt: Runtime, f: WalkForward, seg: GPUBuffer, io: IoBindings, c: ChunkShape): void {
  const { H, T, D, E } = f.dims;
  const touch = f.touch ?? kernelChoices.touchAhead;
  // Heads of at most 64 by 64 take a 64 × 64 tile, 4 × 4 per invocation, instead of a quarter of
  // the 128 × 128 one (whose other three quarters would multiply zeros); dTiles and eTiles are 1
  // either way. Not with the touches ahead, which cover a 128-column tile.
  const narrow = !touch && D <= 64 && E <= 64;
  const VT = narrow ? 16 : V;
  const per = narrow ? [0] : [0, 1];
  // Each stage: 16 tokens of k (16 rows of the tile's D) and v (16 rows of its E), one or two vectors
  // of each per invocation; the next stage (with loads two ahead, the one after it too, in a second
  // set of registers) is fetched into registers before the current one is multiplied.
  const ahead2 = f.ahead === 2 && !touch;
  const rowOf = tokenRow(f.reversed);
  const fetch = (p0: string, slot = "r") =>
    per
      .map(
        (r) => `{ let e = lid + ${r * 256}u; let p = ${p0} + e / ${VT}u; let c4 = e % ${VT}u;
      ${slot}k${r} = vec4<f32>(0.0); ${slot}v${r} = vec4<f32>(0.0);
      if (p < len) {
        let row = ${rowOf("s0 + p")};
        if (d04 + c4 < D4) { ${slot}k${r} = exp(-slope * f32(len - 1u - p)) * bitcast<vec4<f32>>(k[row * D4 + d04 + c4]); }
        if (e04 + c4 < E4) { ${slot}v${r} = bitcast<vec4<f32>>(v[row * E4 + e04 + c4]); }
      } }`,
      )
      .join("\n    ");
  const product = narrow
    ? `for (var pp = 0u; pp < 16u; pp = pp + 1u) {
        let a0 = As[pp * 16u + ty];
        let b0 = Bs[pp * 16u + tx];
        ${outerProductFma(["a0"], ["b0"])}
      }`
    : stagedProduct(V);
  const stage = (slot: string, next: string) => `${per.map((r) => `As[lid + ${r * 256}u] = ${slot}k${r}; Bs[lid + ${r * 256}u] = ${slot}v${r};`).join(" ")}
      workgroupBarrier();
      if (${next} < len) {
      ${fetch(next, slot)}
      }
      ${product}
      workgroupBarrier();`;
  const registers = (slot: string) => per.map((r) => `var ${slot}k${r}: vec4<f32>; var ${slot}v${r}: vec4<f32>;`).join(" ");
  // Two stages a turn of the loop, each refilling its registers with the stage two after it; a
  // segment's tokens are a whole number of 64-token blocks, and a stage past them loads zeros.
  const twoAhead = `${registers("r")}
  ${registers("s")}
  ${fetch("0u")}
  ${fetch("16u", "s")}
  for (var p0 = 0u; p0 < len; p0 = p0 + 32u) {
    ${stage("r", "p0 + 32u")}
    ${stage("s", "p0 + 48u")}
  }`;
  const oneAhead = `${registers("r")}
  ${fetch("0u")}
  // 64 tokens at a time: their k and v rows are touched (one word per 32-byte sector, summed into
  // a sink 64 tokens later) while the 64 before them are multiplied, which brings them into L2
  // ahead of the stage loads (see touchNextBlock).
  var sink = 0.0;
  for (var c0 = 0u; c0 < len; c0 = c0 + 64u) {
    ${touchNextKv(
      touch,
      (p) => `c0 + 64u + ${p} < len`,
      (p) => rowOf(`s0 + c0 + 64u + ${p}`),
    )}
    for (var p0 = c0; p0 < c0 + 64u; p0 = p0 + 16u) {
      ${stage("r", "p0 + 16u")}
    }
    sink = sink + ${TOUCHED_SUM};
  }
  // Keeps the touches' loads live: T is never 0 here.
  if (T == 0u && sink != 0.0) { seg[0] = vec4<u32>(bitcast<u32>(sink)); }`;
  const store = (d: string, e: string, acc: string) => `if (${d} < D && ${e} / 4u < E4) { seg[((lb * nSeg + sg) * D + ${d}) * E4 + ${e} / 4u] = bitcast<vec4<u32>>(${acc}); }`;
  const stores = narrow ? [0, 1, 2, 3].map((r) => store(`(d04 * 4u + ty * 4u + ${r}u)`, "(e04 * 4u + tx * 4u)", `acc${r}`)).join("\n  ") : tileStores8x8("d04 * 4u", "e04 * 4u", store);
  rt.dispatch({
    key: `lightning_walk_totals${narrow ? "64" : ""}${touch ? "" : ":no_touch"}${ahead2 ? ":ahead2" : ""}${f.reversed ? ":reversed" : ""}`,
    shader: () => ({
      doc: ["k: (BH, T, D/4) vec4 f32", "v: (BH, T, E/4) vec4 f32", "slopes: (H) f32", "seg: (BH, nSeg, D, E/4) vec4 f32, R_g"],
      bindings: [
        { name: "k", access: "read", vec4: true },
        { name: "v", access: "read", vec4: true },
        { name: "slopes", dtype: "f32", access: "read" },
        { name: "seg", access: "rw", vec4: true },
      ],
      workgroupSize: 256,
      decls: `var<workgroup> As: array<vec4<f32>, ${16 * VT}>;  // decayed k rows: [p][d/4]
var<workgroup> Bs: array<vec4<f32>, ${16 * VT}>;  // v rows: [p][e/4]`,
      // Params: T, D, E, H, heads in this chunk, nSeg, dTiles, eTiles, first batch·head of the chunk,
      // tokens per segment, first batch·head of the bound k and v.
      body: `  let T = pu(0u); let D = pu(1u); let D4 = D / 4u; let E4 = pu(2u) / 4u; let nSeg = pu(5u); let eT = pu(7u);
  ${tileWorkgroup("(nSeg - 1u)", VT)}
  let len = pu(9u);
  let io0 = pu(10u);
  let s0 = sg * len;
  ${accumulators(narrow ? 4 : 16)}
  ${ahead2 ? twoAhead : oneAhead}
  ${stores}`,
    }),
    bindings: [io.k, io.v, { buffer: f.slopes.storage, access: "read" }, { buffer: seg, access: "rw" }],
    params: [T, D, E, H, c.count, c.nSeg, c.dTiles, c.eTiles, c.bh0, c.L, io.io0],
    workgroups: c.count * (c.nSeg - 1) * c.dTiles * c.eTiles,
  });
}

/**
 * Block products first: P_j of every block into `products` (BH, nB, D, E/4) and, where there are
 * several segments, R_g of every segment but the last into `seg`, from the same register tile:
 * R ← λ^m R + P_j after each block (m its tokens), which is R_g's sum with each token's weight split
 * in two exact factors. The stages are the totals' (16 tokens of k and v, the next fetched while
 * the current is multiplied), with each block's k rows decayed within the block.
 *                                                one workgroup per (b·h, segment, tile of D×E)
 */
function blockProducts(rt: Runtime, f: WalkForward, products: GPUBuffer, seg: GPUBuffer | null, io: IoBindings, c: ChunkShape): void {
  const { H, T, D, E } = f.dims;
  const touch = f.touch ?? kernelChoices.touchAhead;
  const totals = seg !== null;
  const rowOf = tokenRow(f.reversed);
  // Stage j0 of the block at token t: 16 tokens, two vectors of k and of v per invocation.
  const fetch = (t: string, j0: string, m: string) =>
    [0, 1]
      .map(
        (r) => `{ let e = lid + ${r * 256}u; let p = ${j0} + e / ${V}u; let c4 = e % ${V}u;
      rk${r} = vec4<f32>(0.0); rv${r} = vec4<f32>(0.0);
      if (p < ${m}) {
        let row = ${rowOf(`${t} + p`)};
        if (d04 + c4 < D4) { rk${r} = exp(-slope * f32(${m} - 1u - p)) * bitcast<vec4<f32>>(k[row * D4 + d04 + c4]); }
        if (e04 + c4 < E4) { rv${r} = bitcast<vec4<f32>>(v[row * E4 + e04 + c4]); }
      } }`,
      )
      .join("\n    ");
  rt.dispatch({
    key: `lightning_walk_block_products${totals ? "_totals" : ""}${touch ? "" : ":no_touch"}${f.reversed ? ":reversed" : ""}`,
    shader: () => ({
      doc: ["k: (BH, T, D/4) vec4 f32", "v: (BH, T, E/4) vec4 f32", "slopes: (H) f32", ...(totals ? ["seg: (BH, nSeg, D, E/4) vec4 f32, R_g"] : []), "kv: (BH, nB, D, E/4) vec4 f32, P_j"],
      bindings: [
        { name: "k", access: "read", vec4: true },
        { name: "v", access: "read", vec4: true },
        { name: "slopes", dtype: "f32", access: "read" },
        ...(totals ? [{ name: "seg", access: "rw", vec4: true } as const] : []),
        { name: "kv", access: "rw", vec4: true },
      ],
      workgroupSize: 256,
      decls: `var<workgroup> As: array<vec4<f32>, ${16 * V}>;  // decayed k rows: [p][d/4]
var<workgroup> Bs: array<vec4<f32>, ${16 * V}>;  // v rows: [p][e/4]`,
      // Params: T, D, E, H, heads in this chunk, nSeg, dTiles, eTiles, first batch·head of the chunk,
      // blocks per segment, first batch·head of the bound k and v, nB.
      body: `  let T = pu(0u); let D = pu(1u); let D4 = D / 4u; let E4 = pu(2u) / 4u; let nSeg = pu(5u); let eT = pu(7u);
  let nB = pu(11u);
  ${tileWorkgroup("nSeg", V)}
  let G = pu(9u);
  let io0 = pu(10u);
  let segEnd = min(nB, sg * G + G);
  ${accumulators(16)}
  ${totals ? accumulators(16, "tot") : ""}
  var rk0: vec4<f32>; var rk1: vec4<f32>; var rv0: vec4<f32>; var rv1: vec4<f32>;
  ${fetch("sg * G * 64u", "0u", "min(64u, T - sg * G * 64u)")}
  var sink = 0.0;
  for (var blk = sg * G; blk < segEnd; blk = blk + 1u) {
    let t0 = blk * 64u;
    let m = min(64u, T - t0);
    // The next block's k and v rows are touched (one word per 32-byte sector, summed into a sink
    // at the block's end) while this one is multiplied, bringing them into L2 ahead of the stages.
    ${touchNextKv(
      touch,
      (p) => `blk + 1u < segEnd && t0 + 64u + ${p} < T`,
      (p) => rowOf(`t0 + 64u + ${p}`),
    )}
    ${blockStages(V, fetch("t0", "j0 + 16u", "m"), fetch("t0 + 64u", "0u", "min(64u, T - t0 - 64u)"))}
    ${tileStores8x8("d04 * 4u", "e04 * 4u", (d, e, acc) => `if (${d} < D && ${e} / 4u < E4) { kv[((lb * nB + blk) * D + ${d}) * E4 + ${e} / 4u] = bitcast<vec4<u32>>(${acc}); }`)}
    ${totals ? `let dm = exp(-slope * f32(m));\n    ${Array.from({ length: 16 }, (_, i) => `tot${i} = dm * tot${i} + acc${i}; acc${i} = vec4<f32>(0.0);`).join("\n    ")}` : Array.from({ length: 16 }, (_, i) => `acc${i} = vec4<f32>(0.0);`).join(" ")}
    sink = sink + ${TOUCHED_SUM};
  }
  // Keeps the touches' loads live: T is never 0 here.
  if (T == 0u && sink != 0.0) { kv[0] = vec4<u32>(bitcast<u32>(sink)); }
  ${totals ? `if (sg + 1u < nSeg) {
    ${tileStores8x8("d04 * 4u", "e04 * 4u", (d, e, acc) => `if (${d} < D && ${e} / 4u < E4) { seg[((lb * nSeg + sg) * D + ${d}) * E4 + ${e} / 4u] = bitcast<vec4<u32>>(${acc.replace("acc", "tot")}); }`)}
  }` : ""}`,
    }),
    bindings: [io.k, io.v, { buffer: f.slopes.storage, access: "read" }, ...(seg ? [{ buffer: seg, access: "rw" } as const] : []), { buffer: products, access: "rw" }],
    params: [T, D, E, H, c.count, c.nSeg, c.dTiles, c.eTiles, c.bh0, c.L / C, io.io0, Math.ceil(T / C)],
    workgroups: c.count * c.nSeg * c.dTiles * c.eTiles,
  });
}

/**
 * WGSL: the state rows of quarter qd (d = 32·qd … + 31) into W[d − 32·qd][e/4]. Rows ty·4 + r
 * (r < 4) lie in quarter ty / 8, rows 64 + ty·4 + r in quarter 2 + ty / 8.
 */
function stateQuarter(halves: number): string {
  const rows = (first: number) => {
    const stores: string[] = [];
    for (let r = 0; r < 4; r++) {
      for (let h = 0; h < halves; h++) stores.push(`W[(lr + ${r}u) * ${16 * halves}u + ${h * 16}u + tx] = acc${(first + r) * halves + h};`);
    }
    return stores.join("\n        ");
  };
  return `if (ty / 8u == qd % 2u) {
      if (qd < 2u) {
        ${rows(0)}
      } else {
        ${rows(4)}
      }
    }`;
}

/**
 * WGSL, unrolled: one statement per vec4 of this invocation's part of the state tile: rows
 * ty·4 + r and 64 + ty·4 + r (r < 4), columns (e04 + h·16 + tx)·4 for each 64-column half h.
 */
function stateTile(halves: number, statement: (row: string, col4: string, acc: string) => string): string {
  const lines: string[] = [];
  for (let r = 0; r < 8; r++) {
    for (let h = 0; h < halves; h++) lines.push(statement(`(${r < 4 ? "" : "64u + "}ty * 4u + ${r % 4}u)`, `(e04 + ${h * 16}u + tx)`, `acc${r * halves + h}`));
  }
  return lines.join("\n  ");
}

/**
 * The outputs of the blocked forward by the walk kernel, one workgroup per (b·h, block, column
 * tile): `blockStates` (BH, nB, D, E) holds each block's state from inside its segment,
 * `segmentStates` (BH, nSeg, D, E) each segment's entering state (segments of `blocks` blocks);
 * the final state is written again from the last block.
 */
export function walkStoredOut(rt: Runtime, f: WalkForward, blockStates: GPUBuffer, segmentStates: GPUBuffer, c: { bh0: number; count: number; blocks: number; nSeg: number; columns: 64 | 128 }): void {
  const nB = Math.ceil(f.dims.T / C);
  walk(rt, f, blockStates, ioBindings(f, c.bh0, c.count, false), { bh0: c.bh0, count: c.count, nSeg: nB, G: 1, eTiles: Math.ceil(f.dims.E / c.columns), columns: c.columns, enter: 3, stored: { states: segmentStates, blocks: c.blocks, nSeg: c.nSeg } });
}

/**
 * Names of the values `touchNextBlock` loads: 4 of q, 4 of k and 2 or 4 of v per invocation.
 */
function touchNames(halves: number): string[] {
  return [...[0, 1, 2, 3].map((i) => `tq${i}`), ...[0, 1, 2, 3].map((i) => `tk${i}`), ...Array.from({ length: 2 * halves }, (_, i) => `tv${i}`)];
}

/**
 * WGSL: one word of every 32-byte sector of the next block's q, k and v rows (this workgroup's
 * columns of v), loaded now and summed into a sink only at the end of this block. On the H200
 * through Vulkan the kernels that read DRAM one stage ahead ran as if each load waited ~15 µs
 * (the 3,072³ and 4,096³ matmul steps, the state products here), while a copy with many loads in
 * flight reached 1.6–4 TB/s; these loads bring the next block into L2 a whole block ahead, so
 * that its stage loads hit there.
 */
function touchNextBlock(halves: number, rowOf: (t: string) => string): string {
  const VE = 16 * halves;
  const lines = [
    `let nt0 = t0 + ${C}u;`,
    `let nm = select(0u, min(${C}u, T - min(T, nt0)), blk + 1u < segEnd);`,
    ...touchNames(halves).map((n) => `var ${n} = 0.0;`),
  ];
  for (let i = 0; i < 4; i++) {
    // 64 rows × 16 sectors of q and of k (D = 128; fewer where D is smaller).
    lines.push(`{ let sct = lid + ${i * 256}u; let row = sct / 16u; let c4 = (sct % 16u) * 2u;
      if (row < nm && c4 < D4) { let at = ${rowOf("nt0 + row")} * D4 + c4; tq${i} = bitcast<f32>(q[at].x); tk${i} = bitcast<f32>(k[at].x); } }`);
  }
  for (let i = 0; i < 2 * halves; i++) {
    // 64 rows × VE/2 sectors of this workgroup's columns of v.
    lines.push(`{ let sct = lid + ${i * 256}u; let row = sct / ${VE / 2}u; let c4 = (sct % ${VE / 2}u) * 2u;
      if (row < nm && e04 + c4 < E4) { tv${i} = bitcast<f32>(v[${rowOf("nt0 + row")} * E4 + e04 + c4].x); } }`);
  }
  return lines.join("\n    ");
}

export interface WalkShape {
  bh0: number;
  count: number;
  nSeg: number;
  G: number;
  eTiles: number;
  /** Columns of E per workgroup: 128 or 64. */
  columns: number;
  /**
   * The entering states: 0 none (zero), 1 per segment of this chunk, 2 the initial state by
   * batch·head, 3 per block of this chunk (segments of one block) plus the decayed state entering
   * the block's segment of `stored`.
   */
  enter: 0 | 1 | 2 | 3;
  /** With enter 3: the states entering the segments of `blocks` blocks (nSeg of them) of the stored block states. */
  stored?: { states: GPUBuffer; blocks: number; nSeg: number };
  /** Every block's state product (BH, nB, D, E/4), made by `blockProducts`: the walk adds it instead of multiplying kᵀ v. */
  products?: GPUBuffer | null;
}

/** Step 3: each workgroup walks one segment's blocks for 64 or 128 columns of E, S in registers. */
function walk(rt: Runtime, f: WalkForward, entering: GPUBuffer | null, io: IoBindings, s: WalkShape): void {
  const { H, T, D, E } = f.dims;
  const touch = f.touch ?? kernelChoices.touchAhead;
  const rows = f.rows === true;
  const products = s.products != null;
  // Two stages ahead where a block's quarters of d are all in the unrolled sequence and few of
  // them empty: four quarters for D > 96, two for 32 < D ≤ 64 (an even number of stages a block,
  // so each stage keeps its register slot from block to block); one ahead elsewhere.
  const quarters = D > 96 ? 4 : D > 32 && D <= 64 ? 2 : 0;
  const ahead2 = f.ahead === 2 && !touch && !products && quarters > 0;
  const rowOf = tokenRow(f.reversed);
  const halves = s.columns / 64;
  const VE = s.columns / 4;
  const cols = (name: string) => Array.from({ length: halves }, (_, h) => `${name}${h}`);
  // q and k columns of one quarter of D (32) for the 64 rows of a block: 512 vectors each, two of
  // each per invocation (row p = e mod 64, vector c = e / 64), stored transposed as [d][p/4]. The
  // 32 invocations of a subgroup take 32 rows, so their scalar stores fall in 32 different banks
  // (rows 8 to a subgroup would conflict 8 ways); their loads take half of each 32-byte sector,
  // the other half of which the next vector's loads take from the cache. With `rows`, the loads
  // take whole rows instead (row p = e / 8, vector e mod 8: 32 neighbours read 4 rows of 128
  // bytes, 4 wavefronts of the L1 pipe instead of 32), and the vector p/4 of row d is stored at
  // (p/4) xor (d/4 mod 8) of that row, so the 8 neighbours storing one p for 8 vectors of d write
  // 8 different banks.
  // Registers a stage's global loads land in: q (or v) in x0, x1 and k in y0, y1.
  const QK = { x: ["rq0", "rq1"], y: ["rk0", "rk1"] };
  const fetchQk = (qd: string, t0 = "t0", m = "m", to = QK) =>
    [0, 1]
      .map(
        (r) => `{ let e = lid + ${r * 256}u; ${rows ? "let p = e / 8u;" : "let p = e % 64u;"} let c4 = (${qd}) * 8u + ${rows ? "e % 8u" : "e / 64u"};
      ${to.x[r]} = vec4<f32>(0.0); ${to.y[r]} = vec4<f32>(0.0);
      if (p < ${m} && c4 < D4) { let at = ${rowOf(`${t0} + p`)} * D4 + c4; ${to.x[r]} = bitcast<vec4<f32>>(q[at]); ${to.y[r]} = bitcast<vec4<f32>>(k[at]); } }`,
      )
      .join("\n    ");
  const stageQk = (from = QK) =>
    [0, 1]
      .map(
        (r) => `{ let e = lid + ${r * 256}u; ${rows ? "let p = e / 8u; let c4 = e % 8u; let x = (p / 4u) ^ c4;" : "let p = e % 64u; let c4 = e / 64u; let x = p / 4u;"}
      ${[0, 1, 2, 3].map((j) => `Qs[(c4 * 4u + ${j}u) * 16u + x][p % 4u] = ${from.x[r]}.${component(j)}; Ks[(c4 * 4u + ${j}u) * 16u + x][p % 4u] = ${from.y[r]}.${component(j)};`).join("\n      ")} }`,
      )
      .join("\n    ");
  // v and decayed k rows of 16 tokens of the block: 16 × columns/4 vectors of v (row p = e / VE,
  // one per invocation and half) and 512 of k (row p = e / 32, two per invocation), stored as
  // [p][e/4] and [p][d/4].
  const VK = { x: ["rv0", "rv1"], y: ["rk0", "rk1"] };
  const fetchVk = (j0: string, t0 = "t0", m = "m", to = VK) =>
    [
      ...Array.from(
        { length: halves },
        (_, r) => `{ let e = lid + ${r * 256}u; let p = ${j0} + e / ${VE}u; let c4 = e % ${VE}u;
      ${to.x[r]} = vec4<f32>(0.0);
      if (p < ${m} && e04 + c4 < E4) { ${to.x[r]} = bitcast<vec4<f32>>(v[${rowOf(`${t0} + p`)} * E4 + e04 + c4]); } }`,
      ),
      // With block products the walk needs no k rows here.
      ...[0, 1]
        .filter(() => !products)
        .map(
          (r) => `{ let e = lid + ${r * 256}u; let p = ${j0} + e / ${V}u; let c4 = e % ${V}u;
      ${to.y[r]} = vec4<f32>(0.0);
      if (p < ${m} && c4 < D4) { ${to.y[r]} = exp(-slope * f32(${m} - 1u - p)) * bitcast<vec4<f32>>(k[${rowOf(`${t0} + p`)} * D4 + c4]); } }`,
        ),
    ].join("\n    ");
  // The products of one quarter of d (32 rows): the scores and q S, from Qs, Ks and the S quarter in W.
  const quarterProducts = `    for (var dd = 0u; dd < 32u; dd = dd + 1u) {
      let a0 = Qs[dd * 16u + ${rows ? "(ty ^ (dd / 4u))" : "ty"}];
      let kc = Ks[dd * 16u + ${rows ? "(tx ^ (dd / 4u))" : "tx"}];
      ${cols("b").map((b, h) => `let ${b} = W[dd * ${VE}u + ${h * 16}u + tx];`).join(" ")}
      ${outerProductFma(["a0"], ["kc"], "sc")}
      ${outerProductFma(["a0"], cols("b"), "o")}
    }`;
  // After the quarters: o's decay, the masked scores into W, and S decayed for the block's update.
  const afterScores = `    ${[0, 1, 2, 3].map((i) => `{ let x = exp(-slope * f32(ty * 4u + ${i + 1}u)); ${cols("").map((_, h) => `o${i * halves + h} = x * o${i * halves + h};`).join(" ")} }`).join("\n    ")}
    ${maskedScores("W")}
    // The state update is needed after every block but a segment's last, except for the final state.
    let upd = blk + 1u < segEnd || sg + 1u == nSeg;
    let dm = exp(-slope * f32(m));
    ${
      products
        ? `// The block's product, loaded now and added after the block's outputs.
    let pj = (lb * nB + blk) * D;
    ${stateTile(halves, (d, c4, acc) => `var p${acc} = vec4<f32>(0.0); if (upd && ${d} < D && ${c4} < E4) { p${acc} = bitcast<vec4<f32>>(cseg[(pj + ${d}) * E4 + ${c4}]); }`)}`
        : Array.from({ length: 8 * halves }, (_, i) => `acc${i} = dm * acc${i};`).join(" ")
    }`;
  // The products of one stage of 16 tokens (first j0): P·v into o and the state update, from v in
  // Qs and decayed k in Ks.
  const stageProducts = `      // Rows p = ty·4 … + 3 take only p' ≤ p: a stage wholly above that is masked to zero.
      let causal = j0 <= ty * 4u + 3u;
      for (var jj = 0u; jj < 16u; jj = jj + 1u) {
        ${cols("b").map((b, h) => `let ${b} = Qs[jj * ${VE}u + ${h * 16}u + tx];`).join(" ")}
        if (causal) {
          let p0 = W[(j0 + jj) * 16u + ty];
          ${outerProductFma(["p0"], cols("b"), "o")}
        }
        ${
          products
            ? ""
            : `if (upd) {
          let a0 = Ks[jj * ${V}u + ty];
          let a1 = Ks[jj * ${V}u + 16u + ty];
          ${outerProductFma(["a0", "a1"], cols("b"))}
        }`
        }
      }`;
  // With block products, the block's product added to S; then the block's output rows.
  const storeO = `    ${products ? `if (upd) { ${Array.from({ length: 8 * halves }, (_, i) => `acc${i} = dm * acc${i} + pacc${i};`).join(" ")} }` : ""}
    ${[0, 1, 2, 3]
      .flatMap((i) => cols("").map((_, h) => `if (ty * 4u + ${i}u < m && e04 + ${h * 16}u + tx < E4) { o[${rowOf(`t0 + ty * 4u + ${i}u`)} * E4 + e04 + ${h * 16}u + tx] = bitcast<vec4<u32>>(o${i * halves + h}); }`))
      .join("\n    ")}`;
  const oneAhead = `  // Global loads are issued one stage ahead, across the phases and blocks too: the first quarter
  // of q and k during the previous block's last stage, the first rows of v and k during the
  // last quarter.
  var rq0: vec4<f32>; var rq1: vec4<f32>; var rk0: vec4<f32>; var rk1: vec4<f32>;
  ${cols("rv").map((r) => `var ${r}: vec4<f32>;`).join(" ")}
  ${fetchQk("0u", "sg * G * 64u", "min(64u, T - sg * G * 64u)")}
  var sink = 0.0;
  for (var blk = sg * G; blk < segEnd; blk = blk + 1u) {
    let t0 = blk * ${C}u;
    let m = min(${C}u, T - t0);
    ${touch ? touchNextBlock(halves, rowOf) : ""}
    // Scores q_p · k_p' (sc{i}: row p = ty·4 + i, columns p' = tx·4 …) and q_p S (o{i·halves + h}:
    // row p = ty·4 + i, columns e04·4 + h·64 + tx·4 …), over d a quarter (32) at a time.
    ${accumulators(4, "sc")}
    ${accumulators(4 * halves, "o")}
    for (var qd = 0u; qd * 32u < D; qd = qd + 1u) {
    ${stateQuarter(halves)}
    ${stageQk()}
    workgroupBarrier();
    if (qd * 32u + 32u < D) {
    ${fetchQk("qd + 1u")}
    } else {
    ${fetchVk("0u")}
    }
    ${quarterProducts}
    workgroupBarrier();
    }
    ${afterScores}
    for (var j0 = 0u; j0 < m; j0 = j0 + 16u) {
      ${cols("rv").map((r, h) => `Qs[lid + ${h * 256}u] = ${r};`).join(" ")}
      ${products ? "" : "Ks[lid] = rk0; Ks[lid + 256u] = rk1;"}
      workgroupBarrier();
      if (j0 + 16u < m) {
    ${fetchVk("j0 + 16u")}
      } else if (blk + 1u < segEnd) {
    ${fetchQk("0u", "t0 + 64u", "min(64u, T - t0 - 64u)")}
      }
      ${stageProducts}
      workgroupBarrier();
    }
    ${storeO}
    ${touch ? `sink = sink + ${touchNames(halves).join(" + ")};` : ""}
  }
`;
  // Two stages ahead: a block is 4 + 4 or 2 + 4 stages (`quarters` quarters of d, then 4 of 16
  // tokens, whichever of them D and the block's tokens leave empty load zeros), and stage s lands
  // in slot s mod 2 (A or B) while stage s + 1's loads are in flight; stage s's registers take
  // stage s + 2's loads as soon as they are in workgroup memory (the last two stages take the next
  // block's first two quarters).
  const slots = [
    { x: ["ra0", "ra1"], y: ["ra2", "ra3"] },
    { x: ["rb0", "rb1"], y: ["rb2", "rb3"] },
  ];
  const sequence = [...Array.from({ length: quarters }, (_, q) => ({ q })), ...[0, 1, 2, 3].map((j) => ({ j }))];
  const fetchStage = (i: number) => {
    const slot = slots[i % 2];
    const next = sequence[i + 2];
    if (next === undefined) return fetchQk(`${i + 2 - sequence.length}u`, "nt0", "nm", slot);
    return "q" in next ? fetchQk(`${next.q}u`, "t0", "m", slot) : fetchVk(`${16 * next.j}u`, "t0", "m", slot);
  };
  const quarterFetch = Array.from({ length: quarters }, (_, i) => fetchStage(i));
  const stageFetch = [0, 1, 2, 3].map((j) => fetchStage(quarters + j));
  const twoAhead = `${slots.flatMap((sl) => [...sl.x, ...sl.y]).map((r) => `var ${r}: vec4<f32>;`).join(" ")}
  {
    let t0 = sg * G * 64u;
    let m = min(64u, T - t0);
    ${fetchQk("0u", "t0", "m", slots[0])}
    ${fetchQk("1u", "t0", "m", slots[1])}
  }
  var sink = 0.0;
  for (var blk = sg * G; blk < segEnd; blk = blk + 1u) {
    let t0 = blk * ${C}u;
    let m = min(${C}u, T - t0);
    let nt0 = t0 + ${C}u;
    let nm = select(0u, min(${C}u, T - min(T, nt0)), blk + 1u < segEnd);
    ${accumulators(4, "sc")}
    ${accumulators(4 * halves, "o")}
    ${quarterFetch
      .map(
        (fetch, i) => `{
    let qd = ${i}u;
    ${stateQuarter(halves)}
    ${stageQk(slots[i % 2])}
    workgroupBarrier();
    ${fetch}
    ${quarterProducts}
    workgroupBarrier();
    }`,
      )
      .join("\n    ")}
    ${afterScores}
    ${stageFetch
      .map(
        (fetch, i) => `{
      let j0 = ${16 * i}u;
      ${cols("").map((_, h) => `Qs[lid + ${h * 256}u] = ${slots[i % 2].x[h]};`).join(" ")}
      Ks[lid] = ${slots[i % 2].y[0]}; Ks[lid + 256u] = ${slots[i % 2].y[1]};
      workgroupBarrier();
      ${fetch}
      ${stageProducts}
      workgroupBarrier();
    }`,
      )
      .join("\n    ")}
    ${storeO}
  }
`;
  rt.dispatch({
    key: `${s.columns === TILE ? "lightning_walk" : `lightning_walk${s.columns}`}${s.enter === 3 ? "_stored" : ""}${products ? "_products" : ""}${touch ? "" : ":no_touch"}${rows ? ":rows" : ""}${ahead2 ? `:ahead2${quarters === 4 ? "" : `q${quarters}`}` : ""}${f.reversed ? ":reversed" : ""}`,
    shader: () => ({
      ...walkShaderIo(
        products
          ? "cseg: (BH, nB, D, E/4) vec4 f32, every block's state product P_j (block products first)"
          : "cseg: (BH, nSegS, D, E/4) vec4 f32, with stored block states: the state entering each of their segments",
      ),
      workgroupSize: 256,
      decls: `var<workgroup> W: array<vec4<f32>, 1024>;  // a quarter of S [d][e/4]; then the masked scores [p'][p/4]
var<workgroup> Qs: array<vec4<f32>, 512>;  // q columns of a quarter [d][p/4]; then v rows [p][e/4]
var<workgroup> Ks: array<vec4<f32>, 512>;  // k columns of a quarter [d][p/4]; then decayed k rows [p][d/4]`,
      // Params: T, D, E, H, heads in this chunk, nB, eTiles, first batch·head of the chunk, G, nSeg,
      // entering state (WalkShape.enter), blocks per segment and segments of the stored states (enter 3),
      // first batch·head of the bound q, k, v and o.
      body: `  let T = pu(0u); let D = pu(1u); let D4 = D / 4u; let E4 = pu(2u) / 4u; let nB = pu(5u); let eT = pu(6u);
  let G = pu(8u); let nSeg = pu(9u); let io0 = pu(13u);
  let perBh = nSeg * eT;
  let lb = wg / perBh;
  if (lb >= pu(4u)) { return; }
  let bh = pu(7u) + lb;
  let sg = (wg % perBh) / eT;
  let e04 = ((wg % perBh) % eT) * ${VE}u;
  let slope = slopes_f(bh % pu(3u));
  let ty = lid / 16u;
  let tx = lid % 16u;
  let lr = (ty % 8u) * 4u;
  ${accumulators(8 * halves)}
  let enter = pu(10u);
  if (enter != 0u) {
    let base = select(bh, lb * nSeg + sg, enter != 2u) * D;
    ${stateTile(halves, (d, c4, acc) => `if (${d} < D && ${c4} < E4) { ${acc} = bitcast<vec4<f32>>(cin[(base + ${d}) * E4 + ${c4}]); }`)}
  }
  if (enter == 3u) {
    // The block's state from inside its segment plus the segment's entering state, decayed over
    // the segment's blocks before this one (all whole).
    let gs = sg / pu(11u);
    let decay = exp(-slope * f32((sg - gs * pu(11u)) * ${C}u));
    let base = (lb * pu(12u) + gs) * D;
    ${stateTile(halves, (d, c4, acc) => `if (${d} < D && ${c4} < E4) { ${acc} = ${acc} + decay * bitcast<vec4<f32>>(cseg[(base + ${d}) * E4 + ${c4}]); }`)}
  }
  let segEnd = min(nB, sg * G + G);
  ${ahead2 ? twoAhead : oneAhead}
  // Keeps the touches' loads live: T is never 0 here.
  if (T == 0u && sink != 0.0) { sT[0] = vec4<u32>(bitcast<u32>(sink)); }
  if (sg + 1u == nSeg) {
    ${stateTile(halves, (d, c4, acc) => `if (${d} < D && ${c4} < E4) { sT[(bh * D + ${d}) * E4 + ${c4}] = bitcast<vec4<u32>>(${acc}); }`)}
  }`,
    }),
    bindings: [
      io.q,
      io.k,
      io.v,
      { buffer: f.slopes.storage, access: "read" },
      // An unused binding still needs a buffer; the shader never reads it without an entering state.
      { buffer: entering ?? f.slopes.storage, access: "read" },
      { buffer: s.stored?.states ?? s.products ?? f.slopes.storage, access: "read" },
      io.o,
      { buffer: f.finalState, access: "rw" },
    ],
    params: [T, D, E, H, s.count, Math.ceil(T / C), s.eTiles, s.bh0, s.G, s.nSeg, s.enter, s.stored?.blocks ?? 0, s.stored?.nSeg ?? 0, io.io0],
    workgroups: s.count * s.nSeg * s.eTiles,
  });
}
