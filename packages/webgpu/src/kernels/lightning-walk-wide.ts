/**
 * The segment walk's step 3 (lightning-walk.ts) with 512 invocations a workgroup instead of 256:
 * the same 128 × 128 state (D × 128 columns of E) in registers, but 32 values of it per
 * invocation instead of 64, and likewise half the output tile and half the scores. An SM then
 * runs 16 warps of one workgroup instead of 8, so twice the warps hide the latency of the
 * workgroup-memory and global loads and of the barriers, which the 256-invocation walk (one
 * workgroup an SM: its ~170 registers an invocation, by count of its live values, leave room for
 * no second one) runs into with 2 warps a scheduler.
 *
 * Invocation lid: lane = lid mod 32, w = lid / 32; a = (w / 4)·4 + lane / 8 (0…15), c = (w mod 4)·8
 * + lane mod 8 (0…31). It holds
 *   S:      rows d = 4a + r and 64 + 4a + r (r < 4), columns 4c … 4c + 3 of the tile (acc0 … acc7)
 *   output: rows p = 4a + i (i < 4) of the block, columns 4c … 4c + 3 (o0 … o3)
 *   scores: rows p = 4a + i, columns p' = c and c + 32 (scA, scB: vec4 over i)
 * so 32 neighbouring invocations read 4 vectors of q rows and 8 of S or v columns from workgroup
 * memory at each step (two 128-byte wavefronts), not 32 different ones.
 *
 * Per block: q S and the scores over D a quarter (32) at a time, with q and k read by whole rows
 * and stored transposed [d][p/4] (vectors swizzled within a row) and the S quarter [d][c]; then
 * P·v and the state update over 16 tokens at a time, v rows [p][c] and decayed k rows [p][d/4].
 * Global loads are issued one stage ahead, as in the 256-invocation walk; there are no touches
 * ahead.
 *
 * Letters: as in lightning-walk.ts (B, H, T, D, E, C = 64).
 */
import type { Runtime } from "../runtime.js";
import { component } from "./common.js";
import { type IoBindings, tokenRow, type WalkForward, type WalkShape, walkShaderIo } from "./lightning-walk.js";

const C = 64;
const THREADS = 512;
/** Workgroup bytes: q and k of a quarter (512 vectors each) and an S quarter or the scores (1024). */
export const WIDE_WORKGROUP_BYTES = 2048 * 16;

/** Whether the device runs 512-invocation workgroups with this workgroup memory, for D ≤ 128. */
export function wideWalkApplies(d: { D: number; E: number }, limits: GPUSupportedLimits): boolean {
  return d.D <= 128 && limits.maxComputeInvocationsPerWorkgroup >= THREADS && limits.maxComputeWorkgroupSizeX >= THREADS && limits.maxComputeWorkgroupStorageSize >= WIDE_WORKGROUP_BYTES;
}

const rows8 = (fn: (d: string, acc: string) => string) =>
  Array.from({ length: 8 }, (_, r) => fn(`(${r < 4 ? "" : "64u + "}4u * a + ${r % 4}u)`, `acc${r}`)).join("\n  ");

/** WGSL: this invocation's part of the rows of quarter qd of S into W[d − 32·qd][c]. */
const stateQuarter = () => {
  const stores = (first: number) => [0, 1, 2, 3].map((r) => `W[(4u * (a % 8u) + ${r}u) * 32u + c] = acc${first + r};`).join(" ");
  return `if (a / 8u == qd % 2u) {
      if (qd < 2u) { ${stores(0)} } else { ${stores(4)} }
    }`;
};

/** Step 3 of the segment walk on 512-invocation workgroups, 128 columns of E each. */
export function wideWalk(rt: Runtime, f: WalkForward, entering: GPUBuffer | null, io: IoBindings, s: WalkShape): void {
  const { H, T, D, E } = f.dims;
  if (s.columns !== 128 || s.enter === 3 || s.products) throw new Error(`wideWalk: expected 128 columns and neither stored block states nor block products, got ${s.columns} columns, entering states ${s.enter}${s.products ? ", block products" : ""}`);
  const rowOf = tokenRow(f.reversed);
  // q and k of quarter qd for the block's 64 rows: one vector of each per invocation (row p = lid
  // / 8, vector lid mod 8 of the quarter), so 32 neighbours read 4 whole 128-byte rows. Stored
  // transposed, [d][p/4], with the vector p/4 of row d at (p/4) xor (d/4 mod 8): the 8 neighbours
  // that store the same p for 8 vectors of d then write 8 different banks, and a row's 16 vectors
  // stay in that row, so the reads of 4 neighbouring vectors remain one wavefront.
  const fetchQk = (qd: string, t0 = "t0", m = "m") => `{ let p = lid / 8u; let c4 = (${qd}) * 8u + lid % 8u;
      rq = vec4<f32>(0.0); rk = vec4<f32>(0.0);
      if (p < ${m} && c4 < D4) { let at = ${rowOf(`${t0} + p`)} * D4 + c4; rq = bitcast<vec4<f32>>(q[at]); rk = bitcast<vec4<f32>>(k[at]); } }`;
  const stageQk = `{ let p = lid / 8u; let c4 = lid % 8u; let x = (p / 4u) ^ c4;
      ${[0, 1, 2, 3].map((j) => `Qs[(c4 * 4u + ${j}u) * 16u + x][p % 4u] = rq.${component(j)}; Ks[(c4 * 4u + ${j}u) * 16u + x][p % 4u] = rk.${component(j)};`).join("\n      ")} }`;
  // v (row p = lid / 32, 32 vectors of the tile) and decayed k (row p = lid / 32, vector lid mod
  // 32 of D) of 16 tokens: one vector of each per invocation.
  const fetchVk = (j0: string) => `{ let p = ${j0} + lid / 32u; let c4 = lid % 32u;
      rv = vec4<f32>(0.0); rd = vec4<f32>(0.0);
      if (p < m) {
        let row = ${rowOf("t0 + p")};
        if (e04 + c4 < E4) { rv = bitcast<vec4<f32>>(v[row * E4 + e04 + c4]); }
        if (c4 < D4) { rd = exp(-slope * f32(m - 1u - p)) * bitcast<vec4<f32>>(k[row * D4 + c4]); }
      } }`;
  const masked = (sc: string, pc: string) => `{
      let pc = ${pc};
      var col = vec4<f32>(0.0);
      ${[0, 1, 2, 3].map((i) => `if (pc <= 4u * a + ${i}u) { col.${component(i)} = exp(-slope * f32(4u * a + ${i}u - pc)) * ${sc}.${component(i)}; }`).join("\n      ")}
      W[pc * 16u + a] = col;
    }`;
  rt.dispatch({
    key: `lightning_walk_wide${f.reversed ? ":reversed" : ""}`,
    shader: () => ({
      ...walkShaderIo("cseg: unused (the 256-invocation walk's stored block states)"),
      workgroupSize: THREADS,
      decls: `var<workgroup> W: array<vec4<f32>, 1024>;  // a quarter of S [d][c]; then the masked scores [p'][p/4]
var<workgroup> Qs: array<vec4<f32>, 512>;  // q columns of a quarter [d][p/4]; then v rows [p][c]
var<workgroup> Ks: array<vec4<f32>, 512>;  // k columns of a quarter [d][p/4]; then decayed k rows [p][d/4]`,
      // Params as the 256-invocation walk's: T, D, E, H, heads in this chunk, nB, eTiles, first
      // batch·head of the chunk, G, nSeg, entering state (0 none, 1 per segment, 2 initial),
      // two unused, first batch·head of the bound q, k, v and o.
      body: `  let T = pu(0u); let D = pu(1u); let D4 = D / 4u; let E4 = pu(2u) / 4u; let nB = pu(5u); let eT = pu(6u);
  let G = pu(8u); let nSeg = pu(9u); let io0 = pu(13u);
  let perBh = nSeg * eT;
  let lb = wg / perBh;
  if (lb >= pu(4u)) { return; }
  let bh = pu(7u) + lb;
  let sg = (wg % perBh) / eT;
  let e04 = ((wg % perBh) % eT) * 32u;
  let slope = slopes_f(bh % pu(3u));
  let lane = lid % 32u;
  let a = (lid / 128u) * 4u + lane / 8u;
  let c = ((lid / 32u) % 4u) * 8u + lane % 8u;
  // The P·v stages rows p' of which no row of this warp (p up to (lid / 128)·16 + 15) takes any.
  let lastRow = (lid / 128u) * 16u + 15u;
  ${Array.from({ length: 8 }, (_, i) => `var acc${i} = vec4<f32>(0.0);`).join(" ")}
  let enter = pu(10u);
  if (enter != 0u) {
    let base = select(bh, lb * nSeg + sg, enter != 2u) * D;
    ${rows8((d, acc) => `if (${d} < D && e04 + c < E4) { ${acc} = bitcast<vec4<f32>>(cin[(base + ${d}) * E4 + e04 + c]); }`)}
  }
  let segEnd = min(nB, sg * G + G);
  var rq: vec4<f32>; var rk: vec4<f32>; var rv: vec4<f32>; var rd: vec4<f32>;
  ${fetchQk("0u", "sg * G * 64u", "min(64u, T - sg * G * 64u)")}
  for (var blk = sg * G; blk < segEnd; blk = blk + 1u) {
    let t0 = blk * ${C}u;
    let m = min(${C}u, T - t0);
    // Scores (scA: p' = c, scB: p' = c + 32) and q S (o{i}: row p = 4a + i), over d a quarter at a time.
    var scA = vec4<f32>(0.0); var scB = vec4<f32>(0.0);
    ${[0, 1, 2, 3].map((i) => `var o${i} = vec4<f32>(0.0);`).join(" ")}
    for (var qd = 0u; qd * 32u < D; qd = qd + 1u) {
    ${stateQuarter()}
    ${stageQk}
    workgroupBarrier();
    if (qd * 32u + 32u < D) {
    ${fetchQk("qd + 1u")}
    } else {
    ${fetchVk("0u")}
    }
    for (var dd = 0u; dd < 32u; dd = dd + 1u) {
      let sw = dd / 4u;
      let qa = Qs[dd * 16u + (a ^ sw)];
      let kA = Ks[dd * 16u + ((c / 4u) ^ sw)][c % 4u];
      let kB = Ks[dd * 16u + ((8u + c / 4u) ^ sw)][c % 4u];
      let sv = W[dd * 32u + c];
      scA = fma(qa, vec4<f32>(kA), scA);
      scB = fma(qa, vec4<f32>(kB), scB);
      ${[0, 1, 2, 3].map((i) => `o${i} = fma(vec4<f32>(qa.${component(i)}), sv, o${i});`).join("\n      ")}
    }
    workgroupBarrier();
    }
    ${[0, 1, 2, 3].map((i) => `o${i} = exp(-slope * f32(4u * a + ${i + 1}u)) * o${i};`).join(" ")}
    ${masked("scA", "c")}
    ${masked("scB", "c + 32u")}
    // The state update is needed after every block but a segment's last, except for the final state.
    let upd = blk + 1u < segEnd || sg + 1u == nSeg;
    let dm = exp(-slope * f32(m));
    ${Array.from({ length: 8 }, (_, i) => `acc${i} = dm * acc${i};`).join(" ")}
    for (var j0 = 0u; j0 < m; j0 = j0 + 16u) {
      Qs[lid] = rv;
      Ks[lid] = rd;
      workgroupBarrier();
      if (j0 + 16u < m) {
    ${fetchVk("j0 + 16u")}
      } else if (blk + 1u < segEnd) {
    ${fetchQk("0u", "t0 + 64u", "min(64u, T - t0 - 64u)")}
      }
      let causal = j0 <= lastRow;
      for (var jj = 0u; jj < 16u; jj = jj + 1u) {
        let vv = Qs[jj * 32u + c];
        if (causal) {
          let pp = W[(j0 + jj) * 16u + a];
          ${[0, 1, 2, 3].map((i) => `o${i} = fma(vec4<f32>(pp.${component(i)}), vv, o${i});`).join("\n          ")}
        }
        if (upd) {
          let ka = Ks[jj * 32u + a];
          let kb = Ks[jj * 32u + 16u + a];
          ${[0, 1, 2, 3].map((r) => `acc${r} = fma(vec4<f32>(ka.${component(r)}), vv, acc${r}); acc${4 + r} = fma(vec4<f32>(kb.${component(r)}), vv, acc${4 + r});`).join("\n          ")}
        }
      }
      workgroupBarrier();
    }
    ${[0, 1, 2, 3].map((i) => `if (4u * a + ${i}u < m && e04 + c < E4) { o[${rowOf(`t0 + 4u * a + ${i}u`)} * E4 + e04 + c] = bitcast<vec4<u32>>(o${i}); }`).join("\n    ")}
  }
  if (sg + 1u == nSeg) {
    ${rows8((d, acc) => `if (${d} < D && e04 + c < E4) { sT[(bh * D + ${d}) * E4 + e04 + c] = bitcast<vec4<u32>>(${acc}); }`)}
  }`,
    }),
    bindings: [
      io.q,
      io.k,
      io.v,
      { buffer: f.slopes.storage, access: "read" },
      // An unused binding still needs a buffer; the shader never reads it without an entering state.
      { buffer: entering ?? f.slopes.storage, access: "read" },
      { buffer: f.slopes.storage, access: "read" },
      io.o,
      { buffer: f.finalState, access: "rw" },
    ],
    params: [T, D, E, H, s.count, Math.ceil(T / C), s.eTiles, s.bh0, s.G, s.nSeg, s.enter, 0, 0, io.io0],
    workgroups: s.count * s.nSeg * s.eTiles,
  });
}
