/**
 * Lightning Attention forward, blocked (docs/ALGORITHM.md LA-2 with blocks of C = 64 tokens), for
 * f32 q, k, v (f16/bf16 are widened first) with D and E multiples of 4. The plain scan (lightning.ts) walks the blocks of a
 * sequence in order inside one workgroup; here every block is independent work except one cheap
 * elementwise scan, so a single long sequence (B = 1) fills the GPU as well as many short ones:
 *
 * The blocks of a sequence are grouped in segments of G blocks (G up to 16, fewer where that leaves
 * too few workgroups to fill the GPU):
 *
 *   1. kv:  L_j = λ^{m_{j−1}} L_{j−1} + Σ_{p<m_{j−1}} λ^{m_{j−1}−1−p} k_pᵀ v_p over block j − 1, L = 0 at a
 *           segment's first block: the state entering block j from inside its segment, for every block,
 *           and the segment's own total R_g (its L after its last block)
 *                                                                 one workgroup per (b·h, segment, 128×128 tile of D×E),
 *                                                                 its blocks in order, L in registers
 *   2. scan: C_g = λ^{len_{g−1}} C_{g−1} + R_{g−1}, C_0 = initial  one invocation per (b·h, vec4 of D×E), g in order;
 *            R_g is overwritten by C_g (the state entering segment g), the last C is the final state
 *   3. out: o_p = Σ_{p'≤p} λ^{p−p'} (q_p · k_p') v_p' + λ^{p+1} q_p S_j,  S_j = L_j + λ^{64·(j − first block of g)} C_g
 *                                                                 one workgroup per (b·h, block, 128 columns of E)
 *
 * Block states are written once (step 1) and read once (step 3); only the 1/G as large segment
 * states go through the sequential scan, which would otherwise read and write every block state
 * once more (2 GiB of the forward's traffic at the benchmark shape).
 *
 * Steps 1 and 3 are register-tiled products (each invocation a 4×8 or 8×8 block of vec4
 * accumulators, operands staged through workgroup memory as vec4), the matmul kernel's scheme.
 * The block states take B·H·⌈T/64⌉·D·E·4 bytes of scratch (1 GiB at B·T = 65,536, H = 16,
 * D = E = 128), the segment states 1/G of that; above 256 MiB (or a storage binding) the batch·heads
 * run in chunks, and a single sequence whose states alone exceed that (T > 2^18 at D = E = 128)
 * takes the plain scan.
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C block size (64).
 */
import type { Runtime } from "../runtime.js";
import { accumulators, blockStages, groups, maskedScores, outerProductFma, type Ref, tileStores8x8, tileWorkgroup, TOUCHED_SUM, touchNextKv } from "./common.js";
import { kernelChoices } from "./choices.js";
import { walkStoredOut } from "./lightning-walk.js";

const C = 64;
/** Tile edge (state rows and columns, output columns) of steps 1 and 3. */
const TILE = 128;

/**
 * Most scratch bytes for block states at once: on the H200 (NVIDIA Vulkan) a copy runs at 4 TB/s
 * in buffers up to 256 MiB and at 1.6 TB/s from 384 MiB (0.14 TB/s at 1 GiB), so the benchmark
 * shape's 1 GiB of block states runs in four chunks of batch·heads.
 */
export const BLOCKED_SCRATCH_BYTES = 2 ** 28;
let scratchCap = BLOCKED_SCRATCH_BYTES;

/** Test hook: a small cap makes small inputs run in several chunks. */
export function setBlockedScratchBytes(bytes: number): void {
  scratchCap = bytes;
}

/** Most blocks per segment: step 1's sequential depth (16 · 64 tokens, a matmul of k = 1,024). */
const MAX_SEGMENT_BLOCKS = 16;
/** Step 1 workgroups below which segments shrink (several waves of two workgroups per SM). */
const STEP1_WORKGROUPS = 1024;
/** Blocks per segment forced by a test; null picks by size. */
let forcedSegmentBlocks: number | null = null;

/**
 * Blocks per segment for a chunk with this many (batch·head, block, tile) triples: as many as
 * leave step 1 at least STEP1_WORKGROUPS workgroups, at most MAX_SEGMENT_BLOCKS.
 */
export function segmentBlocks(blockTiles: number): number {
  return Math.max(1, Math.min(MAX_SEGMENT_BLOCKS, Math.floor(blockTiles / STEP1_WORKGROUPS)));
}

/** Test hook: small inputs get one-block segments by size; this makes them run in longer ones. */
export function setBlockedSegmentBlocks(blocks: number | null): void {
  forcedSegmentBlocks = blocks;
}

/** Workgroup bytes of the largest step (3: masked scores 64×64, a 1,024-vector staging area). */
export const BLOCKED_WORKGROUP_BYTES = (C * C + 1024 * 4) * 4;

export interface BlockedForward {
  q: Ref; // (B, H, T, D)
  k: Ref; // (B, H, T, D)
  v: Ref; // (B, H, T, E)
  slopes: Ref; // (H)
  init: GPUBuffer | null; // (B, H, D, E) f32
  out: GPUBuffer; // (B, H, T, E) f32
  finalState: GPUBuffer; // (B, H, D, E) f32
  dims: { BH: number; H: number; T: number; D: number; E: number };
}

/** Whether the blocked forward runs these inputs on a device with these limits. */
export function blockedForwardApplies(dtypes: readonly string[], d: { BH: number; T: number; D: number; E: number }, limits: { maxWorkgroupBytes: number; maxBindingBytes: number }): boolean {
  return (
    // f16/bf16 inputs are widened to f32 by the caller.
    dtypes.every((t) => t === "f32" || t === "f16" || t === "bf16") &&
    d.T > 0 &&
    d.D % 4 === 0 &&
    d.E % 4 === 0 &&
    BLOCKED_WORKGROUP_BYTES <= limits.maxWorkgroupBytes &&
    Math.ceil(d.T / C) * d.D * d.E * 4 <= Math.min(limits.maxBindingBytes, scratchCap)
  );
}

/**
 * The blocked forward; with `walkColumns` step 3 runs on the segment walk's kernel instead (one
 * block per walk, its entering state from the stored states; D ≤ 128), 128 or 64 columns of E per
 * workgroup.
 */
export function blockedForward(rt: Runtime, f: BlockedForward, walkColumns?: 64 | 128): void {
  const { BH, T, D, E } = f.dims;
  const perHead = Math.ceil(T / C) * D * E * 4;
  // Batch·heads run in chunks whose block states fit one binding and the scratch cap; a chunk
  // of one sequence or more keeps every step parallel over its blocks.
  const chunk = Math.max(1, Math.floor(Math.min(rt.device.limits.maxStorageBufferBindingSize, scratchCap) / perHead));
  for (let bh0 = 0; bh0 < BH; bh0 += chunk) blockedChunk(rt, f, bh0, Math.min(chunk, BH - bh0), walkColumns);
}

/**
 * WGSL: k rows (decayed to the end of their block: t0 … t0 + m) and v rows p0 … p0 + 15 of the
 * block into rk0, rk1, rv0, rv1: 16 × 32 vectors each, two per invocation.
 */
function kvFetch(t0: string, m: string, p0: string): string {
  return [0, 1]
    .map(
      (r) => `{ let e = lid + ${r * 256}u; let p = ${p0} + e / ${TILE / 4}u; let c4 = e % ${TILE / 4}u;
        rk${r} = vec4<f32>(0.0); rv${r} = vec4<f32>(0.0);
        if (p < ${m}) {
          let row = bh * T + ${t0} + p;
          if (d04 + c4 < D4) { rk${r} = exp(-slope * f32(${m} - 1u - p)) * bitcast<vec4<f32>>(k[row * D4 + d04 + c4]); }
          if (e04 + c4 < E4) { rv${r} = bitcast<vec4<f32>>(v[row * E4 + e04 + c4]); }
        } }`,
    )
    .join("\n      ");
}

function blockedChunk(rt: Runtime, f: BlockedForward, bh0: number, count: number, walkColumns?: 64 | 128): void {
  const { H, T, D, E } = f.dims;
  const nB = Math.ceil(T / C);
  const dTiles = Math.ceil(D / TILE);
  const eTiles = Math.ceil(E / TILE);
  const G = forcedSegmentBlocks ?? segmentBlocks(count * nB * dTiles * eTiles);
  const nSeg = Math.ceil(nB / G);
  const kv = rt.acquire(count * nB * D * E * 4);
  const seg = rt.acquire(count * nSeg * D * E * 4);
  const V = TILE / 4;
  const touching = kernelChoices.touchAhead;

  // 1. Per-block states from inside the segment (D × E), one 128×128 tile per workgroup, the
  //    segment's blocks in order; tokens are the inner dim of each block's product.
  rt.dispatch({
    key: `lightning_blocked_kv${touching ? "" : ":no_touch"}`,
    shader: () => ({
      doc: ["k: (BH, T, D/4) vec4 f32", "v: (BH, T, E/4) vec4 f32", "slopes: (H) f32", "kv: (BH, nB, D, E/4) vec4 f32, L_j", "seg: (BH, nSeg, D, E/4) vec4 f32, R_g"],
      bindings: [
        { name: "k", access: "read", vec4: true },
        { name: "v", access: "read", vec4: true },
        { name: "slopes", dtype: "f32", access: "read" },
        { name: "kv", access: "rw", vec4: true },
        { name: "seg", access: "rw", vec4: true },
      ],
      workgroupSize: 256,
      decls: `var<workgroup> As: array<vec4<f32>, ${16 * V}>;  // decayed k rows: [p][d/4]
var<workgroup> Bs: array<vec4<f32>, ${16 * V}>;  // v rows: [p][e/4]`,
      // Params: T, D, E, H, heads in this chunk, nB, dTiles, eTiles, first batch·head of the chunk, G, nSeg.
      body: `  let T = pu(0u); let D4 = pu(1u) / 4u; let E4 = pu(2u) / 4u; let nB = pu(5u); let eT = pu(7u);
  let G = pu(9u); let nSeg = pu(10u);
  ${tileWorkgroup("nSeg", V)}
  let D = D4 * 4u;
  ${accumulators(16)}
  let segEnd = min(nB, sg * G + G);
  // Each stage's k and v are fetched into registers while the previous stage is multiplied (the
  // next block's first stage during a block's last).
  var rk0: vec4<f32>; var rk1: vec4<f32>; var rv0: vec4<f32>; var rv1: vec4<f32>;
  ${kvFetch("sg * G * 64u", `min(${C}u, T - sg * G * 64u)`, "0u")}
  var sink = 0.0;
  for (var blk = sg * G; blk < segEnd; blk = blk + 1u) {
    ${tileStores8x8("d04 * 4u", "e04 * 4u", (d, e, acc) => `if (${d} < D && ${e} / 4u < E4) { kv[((lb * nB + blk) * D + ${d}) * E4 + ${e} / 4u] = bitcast<vec4<u32>>(${acc}); }`)}
    let t0 = blk * ${C}u;
    let m = min(${C}u, T - t0);
    let dm = exp(-slope * f32(m));
    ${Array.from({ length: 16 }, (_, i) => `acc${i} = dm * acc${i};`).join(" ")}
    // The next block's k and v rows, one word per 32-byte sector, loaded now and summed into a
    // sink after this block: they reach L2 a block ahead of their stage loads.
    ${touchNextKv(
      touching,
      (p) => `blk + 1u < segEnd && t0 + ${C}u + ${p} < T`,
      (p) => `bh * T + t0 + ${C}u + ${p}`,
    )}
    ${blockStages(V, kvFetch("t0", "m", "j0 + 16u"), kvFetch(`t0 + ${C}u`, `min(${C}u, T - t0 - ${C}u)`, "0u"))}
    sink = sink + ${TOUCHED_SUM};
  }
  // Keeps the touches' loads live: T is never 0 here.
  if (T == 0u && sink != 0.0) { seg[0] = vec4<u32>(bitcast<u32>(sink)); }
  ${tileStores8x8("d04 * 4u", "e04 * 4u", (d, e, acc) => `if (${d} < D && ${e} / 4u < E4) { seg[((lb * nSeg + sg) * D + ${d}) * E4 + ${e} / 4u] = bitcast<vec4<u32>>(${acc}); }`)}`,
    }),
    bindings: [
      { buffer: f.k.storage, access: "read" },
      { buffer: f.v.storage, access: "read" },
      { buffer: f.slopes.storage, access: "read" },
      { buffer: kv, access: "rw" },
      { buffer: seg, access: "rw" },
    ],
    params: [T, D, E, H, count, nB, dTiles, eTiles, bh0, G, nSeg],
    workgroups: count * nSeg * dTiles * eTiles,
  });

  // 2. The carried state: a sequential scan over segments, in parallel over every vec4 of every state.
  const vectors = (count * D * E) / 4;
  rt.dispatch({
    key: "lightning_blocked_scan",
    shader: () => ({
      doc: ["slopes: (H) f32", "s0: (BH, D, E/4) vec4 f32", "seg: (BH, nSeg, D, E/4) vec4 f32, in: R_g, out: C_g", "sT: (BH, D, E/4) vec4 f32"],
      bindings: [
        { name: "slopes", dtype: "f32", access: "read" },
        { name: "s0", access: "read", vec4: true },
        { name: "seg", access: "rw", vec4: true },
        { name: "sT", access: "rw", vec4: true },
      ],
      workgroupSize: 256,
      // Params: T, D·E/4, H, vectors in this chunk, nSeg, has initial state, first batch·head of the chunk, tokens per segment.
      body: `  let DE4 = pu(1u);
  if (gid >= pu(3u)) { return; }
  let T = pu(0u); let nSeg = pu(4u); let L = pu(7u);
  let lb = gid / DE4;
  let bh = pu(6u) + lb;
  let i = gid % DE4;
  let slope = slopes_f(bh % pu(2u));
  let full = exp(-slope * f32(L));
  var S = vec4<f32>(0.0);
  if (pu(5u) == 1u) { S = bitcast<vec4<f32>>(s0[bh * DE4 + i]); }
  // Four segments' loads are issued before their updates: the loop is bound by memory latency.
  for (var j0 = 0u; j0 < nSeg; j0 = j0 + 4u) {
    var tots: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j = j + 1u) {
      if (j0 + j < nSeg) { tots[j] = bitcast<vec4<f32>>(seg[(lb * nSeg + j0 + j) * DE4 + i]); }
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let g = j0 + j;
      if (g < nSeg) {
        seg[(lb * nSeg + g) * DE4 + i] = bitcast<vec4<u32>>(S);
        let len = min(L, T - g * L);
        S = select(exp(-slope * f32(len)), full, len == L) * S + tots[j];
      }
    }
  }
  sT[bh * DE4 + i] = bitcast<vec4<u32>>(S);`,
    }),
    bindings: [
      { buffer: f.slopes.storage, access: "read" },
      // An unused binding still needs a buffer; the shader never reads it without an initial state.
      { buffer: f.init ?? f.slopes.storage, access: "read" },
      { buffer: seg, access: "rw" },
      { buffer: f.finalState, access: "rw" },
    ],
    params: [T, (D * E) / 4, H, vectors, nSeg, f.init ? 1 : 0, bh0, G * C],
    workgroups: groups(vectors),
  });

  // 3. Outputs: masked, decayed intra-block scores times v, plus the decayed carried state term.
  if (walkColumns) {
    walkStoredOut(rt, f, kv, seg, { bh0, count, blocks: G, nSeg, columns: walkColumns });
    rt.release(kv);
    rt.release(seg);
    return;
  }
  rt.dispatch({
    key: "lightning_blocked_out",
    shader: () => ({
      doc: [
        "q: (BH, T, D/4) vec4 f32",
        "k: (BH, T, D/4) vec4 f32",
        "v: (BH, T, E/4) vec4 f32",
        "slopes: (H) f32",
        "st: (BH, nB, D, E/4) vec4 f32, L_j: the state entering each block from inside its segment",
        "sg: (BH, nSeg, D, E/4) vec4 f32, C_g: the state entering each segment",
        "o: (BH, T, E/4) vec4 f32",
      ],
      bindings: [
        { name: "q", access: "read", vec4: true },
        { name: "k", access: "read", vec4: true },
        { name: "v", access: "read", vec4: true },
        { name: "slopes", dtype: "f32", access: "read" },
        { name: "st", access: "read", vec4: true },
        { name: "sg", access: "read", vec4: true },
        { name: "o", access: "rw", vec4: true },
      ],
      workgroupSize: 256,
      decls: `var<workgroup> Ps: array<vec4<f32>, ${(C * C) / 4}>;  // masked decayed scores: [p'][p/4]
var<workgroup> St: array<vec4<f32>, 1024>;  // staging: q slice [d][p/4] at 0, k slice at 256, state rows [d][e/4] at 512; then v rows [p'][e/4] at 256`,
      // Params: T, D, E, H, heads in this chunk, nB, eTiles, first batch·head of the chunk, G, nSeg.
      body: `  let T = pu(0u); let D = pu(1u); let D4 = D / 4u; let E4 = pu(2u) / 4u; let nB = pu(5u); let eT = pu(6u);
  let perBh = nB * eT;
  let lb = wg / perBh;
  if (lb >= pu(4u)) { return; }
  let bh = pu(7u) + lb;
  let blk = (wg % perBh) / eT;
  let e04 = ((wg % perBh) % eT) * ${V}u;
  let t0 = blk * ${C}u;
  let m = min(${C}u, T - t0);
  let slope = slopes_f(bh % pu(3u));
  let G = pu(8u); let nSeg = pu(9u);
  let sgi = blk / G;
  // Blocks before this one in its segment are whole (only a sequence's last block is short).
  let segDecay = exp(-slope * f32((blk - sgi * G) * ${C}u));
  let ty = lid / 16u;
  let tx = lid % 16u;
  let srow = lid / 4u;
  let sq = lid % 4u;

  // One pass over d, 16 rows at a time, feeds both products of q: the scores q_p · k_p' of this
  // invocation's 4×4 (p = ty·4 + i, p' = tx·4 + c), and q_p S_j into acc{i·2 + h} (row p = ty·4 + i,
  // columns e04·4 + h·64 + tx·4 … + 3), so q is staged once.
  ${accumulators(4, "sc")}
  ${accumulators(8)}
  for (var d0 = 0u; d0 < D; d0 = d0 + 16u) {
    var qa = vec4<f32>(0.0);
    var kb = vec4<f32>(0.0);
    if (srow < m && d0 / 4u + sq < D4) {
      let at = (bh * T + t0 + srow) * D4 + d0 / 4u + sq;
      qa = bitcast<vec4<f32>>(q[at]);
      kb = bitcast<vec4<f32>>(k[at]);
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
      St[(sq * 4u + j) * 16u + srow / 4u][srow % 4u] = qa[j];
      St[256u + (sq * 4u + j) * 16u + srow / 4u][srow % 4u] = kb[j];
    }
    for (var rr = 0u; rr < 2u; rr = rr + 1u) {
      let e = lid + rr * 256u;
      let d = d0 + e / ${V}u;
      let c4 = e04 + e % ${V}u;
      var s = vec4<f32>(0.0);
      if (d < D && c4 < E4) {
        s = bitcast<vec4<f32>>(st[((lb * nB + blk) * D + d) * E4 + c4]) + segDecay * bitcast<vec4<f32>>(sg[((lb * nSeg + sgi) * D + d) * E4 + c4]);
      }
      St[512u + e] = s;
    }
    workgroupBarrier();
    for (var dd = 0u; dd < 16u; dd = dd + 1u) {
      let a0 = St[dd * 16u + ty];
      let kc = St[256u + dd * 16u + tx];
      let b0 = St[512u + dd * ${V}u + tx];
      let b1 = St[512u + dd * ${V}u + 16u + tx];
      ${outerProductFma(["a0"], ["kc"], "sc")}
      ${outerProductFma(["a0"], ["b0", "b1"])}
    }
    workgroupBarrier();
  }
  ${maskedScores("Ps")}
  ${[0, 1, 2, 3].map((i) => `acc${2 * i} = exp(-slope * f32(ty * 4u + ${i + 1}u)) * acc${2 * i};
  acc${2 * i + 1} = exp(-slope * f32(ty * 4u + ${i + 1}u)) * acc${2 * i + 1};`).join("\n  ")}
  // Σ_{p'} P[p][p'] v_p', the inner dim p' staged 16 rows at a time.
  for (var j0 = 0u; j0 < m; j0 = j0 + 16u) {
    for (var rr = 0u; rr < 2u; rr = rr + 1u) {
      let e = lid + rr * 256u;
      let p = j0 + e / ${V}u;
      let c4 = e04 + e % ${V}u;
      var vv = vec4<f32>(0.0);
      if (p < m && c4 < E4) { vv = bitcast<vec4<f32>>(v[(bh * T + t0 + p) * E4 + c4]); }
      St[256u + e] = vv;
    }
    workgroupBarrier();
    // Rows p = ty·4 … + 3 take only p' ≤ p: a whole stage above that is masked to zero, and the
    // invocations of early rows skip it (3/8 of this product's multiply-adds at C = 64).
    if (j0 <= ty * 4u + 3u) {
      for (var jj = 0u; jj < 16u; jj = jj + 1u) {
        let a0 = Ps[(j0 + jj) * 16u + ty];
        let b0 = St[256u + jj * ${V}u + tx];
        let b1 = St[256u + jj * ${V}u + 16u + tx];
        ${outerProductFma(["a0"], ["b0", "b1"])}
      }
    }
    workgroupBarrier();
  }
  ${[0, 1, 2, 3]
    .flatMap((i) => [0, 1].map((h) => `if (ty * 4u + ${i}u < m && e04 + ${h * 16}u + tx < E4) { o[(bh * T + t0 + ty * 4u + ${i}u) * E4 + e04 + ${h * 16}u + tx] = bitcast<vec4<u32>>(acc${i * 2 + h}); }`))
    .join("\n  ")}`,
    }),
    bindings: [
      { buffer: f.q.storage, access: "read" },
      { buffer: f.k.storage, access: "read" },
      { buffer: f.v.storage, access: "read" },
      { buffer: f.slopes.storage, access: "read" },
      { buffer: kv, access: "read" },
      { buffer: seg, access: "read" },
      { buffer: f.out, access: "rw" },
    ],
    params: [T, D, E, H, count, nB, eTiles, bh0, G, nSeg],
    workgroups: count * nB * eTiles,
  });
  rt.release(kv);
  rt.release(seg);
}
