/**
 * matmul: C (..., m, n) = op(A) (..., m, k) · op(B) (..., k, n), op an optional transpose of the
 * last two dims, batch dims broadcast NumPy-style.
 *
 * A workgroup of 16×16 invocations computes a 64×64 tile of C, each invocation a 4×4 block, stepping
 * through k in slices of 16 staged in workgroup memory. f16/bf16 inputs are decoded as they are
 * staged; accumulation is f32.
 */
import { type Kernel, type KernelTable, matmulDims } from "@lightning-ts/tensor";
import type { Runtime } from "../runtime.js";
import { stridedIndexFn } from "../wgsl.js";
import { checkRank, padded, viaF32 } from "./common.js";

const TILE = 64;
const BK = 16;

export function matmulKernels(rt: Runtime) {
  const matmul: Kernel<"matmul", GPUBuffer> = ({ inputs: [a, b], outputs: [c], attrs: { transA, transB } }) => {
    const { m, n, k, batch } = matmulDims(a.shape, b.shape, transA, transB);
    checkRank("matmul", batch);
    const batches = batch.reduce((x, y) => x * y, 1);
    if (batches * m * n === 0) return;
    // Element strides of each operand's batch dims, 0 where it is broadcast.
    const batchStrides = (shape: readonly number[], mat: number) => {
      const own = shape.slice(0, -2);
      const out = new Array<number>(batch.length).fill(0);
      let s = mat;
      for (let i = own.length - 1; i >= 0; i--) {
        const at = batch.length - own.length + i;
        out[at] = own[i] === 1 ? 0 : s;
        s *= own[i];
      }
      return padded(out);
    };
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
        params: [m, n, k, batches, batch.length, ...padded(batch), ...batchStrides(a.shape, m * k), ...batchStrides(b.shape, k * n)],
        workgroups: batches * tiles,
      }),
    );
  };
  return { matmul } satisfies Partial<KernelTable<GPUBuffer>>;
}
