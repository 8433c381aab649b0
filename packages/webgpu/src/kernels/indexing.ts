/**
 * Indexing kernels: gather and its adjoint scatterAdd, embedding and its backward.
 *
 * An index out of range cannot throw where the kernel is encoded (the indices live on the GPU), so
 * the kernel records the first bad one in the runtime's error buffer, writes 0 in its place, and the
 * next read or sync throws an error naming the op, the value and its position.
 *
 * scatterAdd and embeddingBackward accumulate with a compare-and-swap loop on f32 bits (WGSL has
 * no float atomics): the order of additions varies, so results may differ in the last bits run to
 * run; the CPU accumulates in float64.
 */
import { type Kernel, type KernelTable } from "@lightning-ts/tensor";
import { ERROR_CODES, type Runtime } from "../runtime.js";
import { wordCount, wordLoop } from "../wgsl.js";
import { groups, type Ref, storeF32As, WG } from "./common.js";

export const REPORT = /* wgsl */ `
fn report(code: u32, value: i32, pos: u32, bound: u32) {
  let r = atomicCompareExchangeWeak(&err[0], 0u, code);
  if (r.exchanged) { atomicStore(&err[1], bitcast<u32>(value)); atomicStore(&err[2], pos); atomicStore(&err[3], bound); }
}
`;

const ATOMIC_ADD = /* wgsl */ `
fn atomic_add_f32(at: u32, v: f32) {
  var old = atomicLoad(&acc[at]);
  loop {
    let r = atomicCompareExchangeWeak(&acc[at], old, bitcast<u32>(bitcast<f32>(old) + v));
    if (r.exchanged) { break; }
    old = r.old_value;
  }
}
`;

/** out[o, k, i] = x[o, idx[k], i] with (outer, n, inner) around the axis; raw bits, any dtype. */
function take(rt: Runtime, op: "gather" | "embedding", x: Ref, idx: Ref, y: Ref, n: number, inner: number): void {
  const K = idx.size;
  const nw = wordCount(y.dtype, y.size);
  rt.dispatch({
    key: `take:${y.dtype}`,
    shader: () => ({
      doc: [`x: (outer, n, inner) ${x.dtype}`, "idx: (K) i32", `y: (outer, K, inner) ${y.dtype}`, "err: (4) atomic u32"],
      bindings: [
        { name: "x", dtype: x.dtype, access: "read" },
        { name: "idx", dtype: "i32", access: "read" },
        { name: "y", access: "rw" },
        { name: "err", access: "atomic" },
      ],
      workgroupSize: WG,
      decls: `${REPORT}
// Params: total, words, n, K, inner, error code.
fn elem(e: u32) -> u32 {
  let n = pu(2u); let K = pu(3u); let inner = pu(4u);
  let o = e / (K * inner);
  let k = (e / inner) % K;
  let v = idx_i(k);
  if (v < 0 || u32(v) >= n) { report(pu(5u), v, k, n); return 0u; }
  return x_raw((o * n + u32(v)) * inner + e % inner);
}`,
      body: wordLoop("y", y.dtype, "elem(i)"),
    }),
    bindings: [
      { buffer: x.storage, access: "read" },
      { buffer: idx.storage, access: "read" },
      { buffer: y.storage, access: "rw" },
      { buffer: rt.errorBuffer, access: "atomic" },
    ],
    params: [y.size, nw, n, K, inner, ERROR_CODES[op]],
    workgroups: groups(nw),
  });
}

/** acc[o, idx[k], i] += u[o, k, i], in f32, then stored in y's dtype. */
function scatter(rt: Runtime, op: "scatterAdd" | "embeddingBackward", u: Ref, idx: Ref, y: Ref, size: number, inner: number): void {
  const K = idx.size;
  const acc = y.dtype === "f32" ? y.storage : rt.acquire(y.size * 4);
  rt.dispatch({
    key: "zero",
    shader: () => ({ bindings: [{ name: "y", access: "rw" }], workgroupSize: WG, body: "  if (gid < pu(0u)) { y[gid] = 0u; }" }),
    bindings: [{ buffer: acc, access: "rw" }],
    params: [y.size],
    workgroups: groups(y.size),
  });
  rt.dispatch({
    key: `scatter:${u.dtype}`,
    shader: () => ({
      doc: [`u: (outer, K, inner) ${u.dtype}`, "idx: (K) i32", "acc: (outer, size, inner) f32 bits", "err: (4) atomic u32"],
      bindings: [
        { name: "u", dtype: u.dtype, access: "read" },
        { name: "idx", dtype: "i32", access: "read" },
        { name: "acc", access: "atomic" },
        { name: "err", access: "atomic" },
      ],
      workgroupSize: WG,
      decls: REPORT + ATOMIC_ADD,
      // Params: total, size, K, inner, error code.
      body: `  if (gid >= pu(0u)) { return; }
  let size = pu(1u); let K = pu(2u); let inner = pu(3u);
  let o = gid / (K * inner);
  let k = (gid / inner) % K;
  let v = idx_i(k);
  if (v < 0 || u32(v) >= size) { report(pu(4u), v, k, size); return; }
  atomic_add_f32((o * size + u32(v)) * inner + gid % inner, u_f(gid));`,
    }),
    bindings: [
      { buffer: u.storage, access: "read" },
      { buffer: idx.storage, access: "read" },
      { buffer: acc, access: "atomic" },
      { buffer: rt.errorBuffer, access: "atomic" },
    ],
    params: [u.size, size, K, inner, ERROR_CODES[op]],
    workgroups: groups(u.size),
  });
  if (acc !== y.storage) {
    storeF32As(rt, acc, y);
    rt.release(acc);
  }
}

export function indexingKernels(rt: Runtime) {
  const gather: Kernel<"gather", GPUBuffer> = ({ inputs: [x, idx], outputs: [y], attrs: { axis } }) => {
    const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    take(rt, "gather", x, idx, y, x.shape[axis], inner);
  };

  const scatterAdd: Kernel<"scatterAdd", GPUBuffer> = ({ inputs: [u, idx], outputs: [y], attrs: { axis, size } }) => {
    const inner = u.shape.slice(axis + idx.shape.length).reduce((a, b) => a * b, 1);
    scatter(rt, "scatterAdd", u, idx, y, size, inner);
  };

  const embedding: Kernel<"embedding", GPUBuffer> = ({ inputs: [w, ids], outputs: [y] }) => {
    const [V, M] = w.shape as [number, number];
    take(rt, "embedding", w, ids, y, V, M);
  };

  const embeddingBackward: Kernel<"embeddingBackward", GPUBuffer> = ({ inputs: [dy, ids], outputs: [dw], attrs: { vocabSize } }) => {
    scatter(rt, "embeddingBackward", dy, ids, dw, vocabSize, dw.shape[1]);
  };

  return { gather, scatterAdd, embedding, embeddingBackward } satisfies Partial<KernelTable<GPUBuffer>>;
}
