/**
 * matmul: C (..., m, n) = op(A) (..., m, k) · op(B) (..., k, n), op an optional transpose of the
 * last two dims, batch dims broadcast NumPy-style.
 *
 * Two kernels. The plain one: a workgroup of 16×16 invocations computes a 64×64 tile of C, each
 * invocation a 4×4 block, stepping through k in slices of 16 staged in workgroup memory; f16/bf16
 * inputs are decoded as they are staged; accumulation is f32. It runs every shape and dtype.
 *
 * The tiled one (f32, where each operand's contiguous dim and n are multiples of 4, and C is at
 * least 64×64): a 128×128 tile per workgroup, each invocation an 8×8 block held in registers as
 * 16 vec4 accumulators, operands read from global memory as vec4 and staged in workgroup memory as
 * vec4 so one k step costs four 16-byte workgroup loads for 64 fused multiply-adds (the plain
 * kernel spends eight scalar loads on 16). An invocation's rows are ty·4… and 64 + ty·4… (likewise
 * its columns), so neighbouring invocations read neighbouring vectors. Workgroups take output
 * tiles in groups of 8 tile rows (`kernelChoices.matmulOrder`), so that operands larger than L2
 * are read from DRAM about once per group rather than once per tile row; `rotated` also starts
 * each workgroup's walk over k at a slice of its own.
 */
import { type Kernel, type KernelTable, matmulDims } from "@lightning-ts/tensor";
import type { Runtime } from "../runtime.js";
import { stridedIndexFn } from "../wgsl.js";
import { kernelChoices } from "./choices.js";
import { accumulators, checkRank, component, outerProductFma, padded, type Ref, tileStores8x8, viaF32 } from "./common.js";

const TILE = 64;
const BK = 16;
/** Tile edge of the tiled kernel, and its k slice. */
const FT = 128;
const FK = 16;
/** Tile rows per group of the grouped workgroup order. */
const GROUP = 8;

// Element strides of an operand's batch dims within the broadcast batch shape, 0 where it is broadcast.
function batchStrides(shape: readonly number[], batch: readonly number[], mat: number): number[] {
  const own = shape.slice(0, -2);
  const out = new Array<number>(batch.length).fill(0);
  let s = mat;
  for (let i = own.length - 1; i >= 0; i--) {
    const at = batch.length - own.length + i;
    out[at] = own[i] === 1 ? 0 : s;
    s *= own[i];
  }
  return padded(out);
}

interface Dims {
  m: number;
  n: number;
  k: number;
  batch: number[];
  batches: number;
}

/** Whether the tiled kernel runs this product (its vector loads and stores need these). */
export function tiledMatmulApplies(dtypes: readonly string[], d: { m: number; n: number; k: number }, transA: boolean, transB: boolean): boolean {
  return (
    dtypes.every((t) => t === "f32") &&
    d.m >= 64 &&
    d.n >= 64 &&
    (transA ? d.m : d.k) % 4 === 0 &&
    (transB ? d.k : d.n) % 4 === 0 &&
    d.n % 4 === 0
  );
}

function tiledMatmul(rt: Runtime, a: Ref, b: Ref, c: Ref, d: Dims, transA: boolean, transB: boolean): void {
  const V = FT / 4; // vec4 per tile row
  // Each operand tile is FK × FT values = FK·V vectors, two per invocation (r = 0, 1), stored
  // [k][m/4] and [k][n/4]. An operand whose vectors run along k (A as (m, k), B as (n, k)) is
  // spread into four k rows. The next slice is fetched into registers (ra·, rb·) before the
  // current one is multiplied, so its loads are in flight during the arithmetic.
  const wide = (r: number) => `lid + ${r * 256}u`; // e, this invocation's vector of the tile
  const fetch = (op: "a" | "b", r: number, k: string) => {
    const [rc, R, off, reg] = op === "a" ? ["row0", "M", "aOff", `ra${r}`] : ["col0", "N", "bOff", `rb${r}`];
    const alongK = op === "a" ? !transA : transB;
    return alongK
      ? `{ let gx = ${rc} + (${wide(r)}) / ${FK / 4}u; let gk = ${k} + ((${wide(r)}) % ${FK / 4}u) * 4u;
      ${reg} = vec4<f32>(0.0); if (gx < ${R} && gk < K) { ${reg} = bitcast<vec4<f32>>(${op}[(${off} + gx * K + gk) / 4u]); } }`
      : `{ let gk = ${k} + (${wide(r)}) / ${V}u; let gx = ${rc} + ((${wide(r)}) % ${V}u) * 4u;
      ${reg} = vec4<f32>(0.0); if (gk < K && gx < ${R}) { ${reg} = bitcast<vec4<f32>>(${op}[(${off} + gk * ${R} + gx) / 4u]); } }`;
  };
  const stage = (op: "a" | "b", r: number) => {
    const [S, reg] = op === "a" ? ["As", `ra${r}`] : ["Bs", `rb${r}`];
    const alongK = op === "a" ? !transA : transB;
    if (!alongK) return `${S}[${wide(r)}] = ${reg};`;
    const rows = [0, 1, 2, 3].map((j) => `${S}[(kq * 4u + ${j}u) * ${V}u + x / 4u][x % 4u] = ${reg}.${component(j)};`);
    return `{ let x = (${wide(r)}) / ${FK / 4}u; let kq = (${wide(r)}) % ${FK / 4}u;
      ${rows.join("\n      ")} }`;
  };
  const fetchAll = (k: string) => [fetch("a", 0, k), fetch("a", 1, k), fetch("b", 0, k), fetch("b", 1, k)].join("\n    ");
  // One word of every 32-byte sector of an operand's tile over k … k + 63 (1,024 sectors, four per
  // invocation), loaded 64 values of k ahead of use and summed into a sink only after them: it
  // brings the tile into L2 before its slices are fetched (on the H200 a fetch one slice ahead
  // alone left the 3,072³ and 4,096³ products waiting on DRAM).
  const touch = (op: "a" | "b", k: string) => {
    const [rc, R, off] = op === "a" ? ["row0", "M", "aOff"] : ["col0", "N", "bOff"];
    const alongK = op === "a" ? !transA : transB;
    return [0, 1, 2, 3]
      .map((i) => {
        const sct = `(lid + ${i * 256}u)`;
        const at = alongK
          ? `let gx = ${rc} + ${sct} / 8u; let gk = ${k} + (${sct} % 8u) * 8u; if (gx < ${R} && gk < K) { t${op}${i} = bitcast<f32>(${op}[(${off} + gx * K + gk) / 4u].x); }`
          : `let gk = ${k} + ${sct} / 16u; let gx = ${rc} + (${sct} % 16u) * 8u; if (gk < K && gx < ${R}) { t${op}${i} = bitcast<f32>(${op}[(${off} + gk * ${R} + gx) / 4u].x); }`;
        return `var t${op}${i} = 0.0; { ${at} }`;
      })
      .join("\n      ");
  };
  const { m, n, k, batch, batches } = d;
  const order = kernelChoices.matmulOrder;
  const grouped = order !== "linear";
  const rotated = order === "rotated";
  const touching = kernelChoices.touchAhead && !rotated;
  const stages = [stage("a", 0), stage("a", 1), stage("b", 0), stage("b", 1)].join("\n    ");
  const multiply = `for (var kk = 0u; kk < ${FK}u; kk = kk + 1u) {
      let a0 = As[kk * ${V}u + ty];
      let a1 = As[kk * ${V}u + 16u + ty];
      let b0 = Bs[kk * ${V}u + tx];
      let b1 = Bs[kk * ${V}u + 16u + tx];
      ${outerProductFma(["a0", "a1"], ["b0", "b1"])}
    }`;
  // One slice of k at k0: store the fetched operands, fetch the next slice, multiply this one.
  const step = `${stages}
    workgroupBarrier();
    if (k0 + ${FK}u < K) {
    ${fetchAll(`k0 + ${FK}u`)}
    }
    ${multiply}
    workgroupBarrier();`;
  const kLoop = rotated
    ? `// Each workgroup starts its walk over k at its own slice (its tile index), wrapping around, so
  // that the workgroups running at once read different DRAM pages of operands whose rows lie a
  // power of two apart.
  let slices = (K + ${FK - 1}u) / ${FK}u;
  let rot = t % slices;
  ${fetchAll(`rot * ${FK}u`)}
  for (var i = 0u; i < slices; i = i + 1u) {
    ${stages}
    workgroupBarrier();
    if (i + 1u < slices) {
    ${fetchAll(`((i + 1u + rot) % slices) * ${FK}u`)}
    }
    ${multiply}
    workgroupBarrier();
  }`
    : touching
      ? `var sink = 0.0;
  ${fetchAll("0u")}
  for (var c0 = 0u; c0 < K; c0 = c0 + 64u) {
    ${touch("a", "c0 + 64u")}
    ${touch("b", "c0 + 64u")}
    for (var k0 = c0; k0 < min(K, c0 + 64u); k0 = k0 + ${FK}u) {
    ${step}
    }
    sink = sink + ${[0, 1, 2, 3].map((i) => `ta${i} + tb${i}`).join(" + ")};
  }
  // Keeps the touches' loads live: M is never 0 here.
  if (M == 0u && sink != 0.0) { c[0] = vec4<u32>(bitcast<u32>(sink)); }`
      : `${fetchAll("0u")}
  for (var k0 = 0u; k0 < K; k0 = k0 + ${FK}u) {
    ${step}
  }`;
  rt.dispatch({
    key: `matmul_tiled:${transA}:${transB}${order === "grouped" ? "" : `:${order}`}${touching || rotated ? "" : ":no_touch"}`,
    shader: () => ({
      doc: [`a: (..., ${transA ? "k, m" : "m, k"}) f32 as vec4`, `b: (..., ${transB ? "n, k" : "k, n"}) f32 as vec4`, "c: (batch, m, n) f32 as vec4"],
      bindings: [
        { name: "a", access: "read", vec4: true },
        { name: "b", access: "read", vec4: true },
        { name: "c", access: "rw", vec4: true },
      ],
      workgroupSize: 256,
      // Params: M, N, K, batches, batch rank@4, batch shape@5, A batch strides@13, B batch strides@21.
      decls: `${stridedIndexFn("a_batch", 4, 5, 13)}
${stridedIndexFn("b_batch", 4, 5, 21)}
var<workgroup> As: array<vec4<f32>, ${FK * V}>;
var<workgroup> Bs: array<vec4<f32>, ${FK * V}>;`,
      body: `  let M = pu(0u); let N = pu(1u); let K = pu(2u);
  let tilesN = (N + ${FT - 1}u) / ${FT}u;
  let perBatch = ((M + ${FT - 1}u) / ${FT}u) * tilesN;
  let bi = wg / perBatch;
  if (bi >= pu(3u)) { return; }
  let t = wg % perBatch;
  ${
    grouped
      ? `// Groups of ${GROUP} tile rows, walked column by column: the workgroups running at once
  // read a few panels of A and of B, which stay in L2, instead of one panel of A and all of B.
  let tilesM = perBatch / tilesN;
  let inGroups = ${GROUP}u * tilesN;
  let firstRow = (t / inGroups) * ${GROUP}u;
  let rows = min(tilesM - firstRow, ${GROUP}u);
  let row0 = (firstRow + (t % inGroups) % rows) * ${FT}u;
  let col0 = ((t % inGroups) / rows) * ${FT}u;`
      : `let row0 = (t / tilesN) * ${FT}u;
  let col0 = (t % tilesN) * ${FT}u;`
  }
  let aOff = a_batch(bi);
  let bOff = b_batch(bi);
  let ty = lid / 16u;
  let tx = lid % 16u;
  // acc{r·2 + h}: row r of this invocation's 8, columns of half h (4 each).
  ${accumulators(16)}
  var ra0: vec4<f32>; var ra1: vec4<f32>; var rb0: vec4<f32>; var rb1: vec4<f32>;
  ${kLoop}
  ${tileStores8x8("row0", "col0", (row, col, acc) => `if (${row} < M && ${col} < N) { c[((bi * M + ${row}) * N + ${col}) / 4u] = bitcast<vec4<u32>>(${acc}); }`)}`,
    }),
    bindings: [
      { buffer: a.storage, access: "read" },
      { buffer: b.storage, access: "read" },
      { buffer: c.storage, access: "rw" },
    ],
    params: [m, n, k, batches, batch.length, ...padded(batch), ...batchStrides(a.shape, batch, m * k), ...batchStrides(b.shape, batch, k * n)],
    workgroups: batches * Math.ceil(m / FT) * Math.ceil(n / FT),
  });
}

export function matmulKernels(rt: Runtime) {
  const matmul: Kernel<"matmul", GPUBuffer> = ({ inputs: [a, b], outputs: [c], attrs: { transA, transB } }) => {
    const { m, n, k, batch } = matmulDims(a.shape, b.shape, transA, transB);
    checkRank("matmul", batch);
    const batches = batch.reduce((x, y) => x * y, 1);
    if (batches * m * n === 0) return;
    if (k > 0 && !rt.plainKernels && tiledMatmulApplies([a.dtype, b.dtype, c.dtype], { m, n, k }, transA, transB)) {
      tiledMatmul(rt, a, b, c, { m, n, k, batch, batches }, transA, transB);
      return;
    }
    const tiles = Math.ceil(m / TILE) * Math.ceil(n / TILE);
    // A stored (m, k) or, transposed, (k, m); B stored (k, n) or (n, k). Loads walk the contiguous dim.
    const loadA = transA
      ? `let kk = e / ${TILE}u; let mm = e % ${TILE}u; let gm = row0 + mm; let gk = k0 + kk;
      var v = 0.0; if (gm < M && gk < K) { v = a_f(aOff + gk * M + gm); }`
      : `let mm = e / ${BK}u; let kk = e % ${BK}u; let gm = row0 + mm; let gk = k0 + kk;
      var v = 0.0; if (gm < M && gk < K) { v = a_f(aOff + gm * K + gk); }`;
    const loadB = transB
      ? `let nn = e / ${BK}u; let kk = e % ${BK}u; let gn = col0 + nn; let gk = k0 + kk;
      var v = 0.0; if (gn < N && gk < K) { v = b_f(bOff + gn * K + gk); }`
      : `let kk = e / ${TILE}u; let nn = e % ${TILE}u; let gn = col0 + nn; let gk = k0 + kk;
      var v = 0.0; if (gn < N && gk < K) { v = b_f(bOff + gk * N + gn); }`;
    viaF32(rt, c, (target) =>
      rt.dispatch({
        key: `matmul:${a.dtype}:${transA}:${transB}`,
        shader: () => ({
          doc: [
            `a: (..., ${transA ? "k, m" : "m, k"}) ${a.dtype}`,
            `b: (..., ${transB ? "n, k" : "k, n"}) ${b.dtype}`,
            "c: (batch, m, n) f32",
          ],
          bindings: [
            { name: "a", dtype: a.dtype, access: "read" },
            { name: "b", dtype: b.dtype, access: "read" },
            { name: "c", access: "rw" },
          ],
          workgroupSize: 256,
          // Params: M, N, K, batches, batch rank@4, batch shape@5, A batch strides@13, B batch strides@21.
          decls: `${stridedIndexFn("a_batch", 4, 5, 13)}
${stridedIndexFn("b_batch", 4, 5, 21)}
var<workgroup> As: array<f32, ${TILE * BK}>;
var<workgroup> Bs: array<f32, ${TILE * BK}>;`,
          body: `  let M = pu(0u); let N = pu(1u); let K = pu(2u);
  let tilesN = (N + ${TILE - 1}u) / ${TILE}u;
  let perBatch = ((M + ${TILE - 1}u) / ${TILE}u) * tilesN;
  let bi = wg / perBatch;
  if (bi >= pu(3u)) { return; }
  let t = wg % perBatch;
  let row0 = (t / tilesN) * ${TILE}u;
  let col0 = (t % tilesN) * ${TILE}u;
  let aOff = a_batch(bi);
  let bOff = b_batch(bi);
  let ty = lid / 16u;
  let tx = lid % 16u;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < K; k0 = k0 + ${BK}u) {
    for (var r = 0u; r < ${(TILE * BK) / 256}u; r = r + 1u) {
      let e = lid + r * 256u;
      ${loadA}
      As[kk * ${TILE}u + mm] = v;
    }
    for (var r = 0u; r < ${(TILE * BK) / 256}u; r = r + 1u) {
      let e = lid + r * 256u;
      ${loadB}
      Bs[kk * ${TILE}u + nn] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk = kk + 1u) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i = i + 1u) { av[i] = As[kk * ${TILE}u + ty * 4u + i]; bv[i] = Bs[kk * ${TILE}u + tx * 4u + i]; }
      for (var i = 0u; i < 4u; i = i + 1u) {
        for (var j = 0u; j < 4u; j = j + 1u) { acc[i * 4u + j] = acc[i * 4u + j] + av[i] * bv[j]; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i = i + 1u) {
    let row = row0 + ty * 4u + i;
    for (var j = 0u; j < 4u; j = j + 1u) {
      let col = col0 + tx * 4u + j;
      if (row < M && col < N) { c[(bi * M + row) * N + col] = bitcast<u32>(acc[i * 4u + j]); }
    }
  }`,
        }),
        bindings: [
          { buffer: a.storage, access: "read" },
          { buffer: b.storage, access: "read" },
          { buffer: target, access: "rw" },
        ],
        params: [m, n, k, batches, batch.length, ...padded(batch), ...batchStrides(a.shape, batch, m * k), ...batchStrides(b.shape, batch, k * n)],
        workgroups: batches * tiles,
      }),
    );
  };
  return { matmul } satisfies Partial<KernelTable<GPUBuffer>>;
}
