/** Indexing kernels: gather and its adjoint scatterAdd, embedding and its backward. */
import type { Kernel, KernelTable } from "../backend.js";
import { argError } from "../errors.js";
import { sizeOf } from "../shape.js";
import { type CpuStorage, type FloatArray, readFloat, storeAs, view } from "./storage.js";

function checkIndex(op: string, arg: string, v: number, k: number, n: number): void {
  if (v < 0 || v >= n) argError(op, arg, `values in [0, ${n})`, `${v} at position ${k}`);
}

/** out[o, k, i] = x[o, idx[k], i] with (outer, n, inner) around the axis. Raw storage, any dtype. */
function take(op: string, arg: string, src: ArrayLike<number>, out: { [i: number]: number }, idx: Int32Array, outer: number, n: number, inner: number): void {
  const K = idx.length;
  for (let k = 0; k < K; k++) checkIndex(op, arg, idx[k], k, n);
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < K; k++) {
      const from = (o * n + idx[k]) * inner;
      const to = (o * K + k) * inner;
      for (let i = 0; i < inner; i++) out[to + i] = src[from + i]!;
    }
  }
}

/** acc[o, idx[k], i] += u[o, k, i], in float64. */
function scatter(op: string, arg: string, u: FloatArray, idx: Int32Array, outer: number, size: number, inner: number): Float64Array {
  const K = idx.length;
  for (let k = 0; k < K; k++) checkIndex(op, arg, idx[k], k, size);
  const acc = new Float64Array(outer * size * inner);
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < K; k++) {
      const to = (o * size + idx[k]) * inner;
      const from = (o * K + k) * inner;
      for (let i = 0; i < inner; i++) acc[to + i] += u[from + i];
    }
  }
  return acc;
}

const gather: Kernel<"gather", CpuStorage> = ({ inputs: [x, idx], outputs: [y], attrs: { axis } }) => {
  const outer = sizeOf(x.shape.slice(0, axis));
  const inner = sizeOf(x.shape.slice(axis + 1));
  take("gather", "indices", view(x), view(y), view(idx) as Int32Array, outer, x.shape[axis], inner);
};

const scatterAdd: Kernel<"scatterAdd", CpuStorage> = ({ inputs: [u, idx], outputs: [y], attrs: { axis, size } }) => {
  const outer = sizeOf(u.shape.slice(0, axis));
  const inner = sizeOf(u.shape.slice(axis + idx.shape.length));
  storeAs(y, scatter("scatterAdd", "indices", readFloat(u), view(idx) as Int32Array, outer, size, inner));
};

const embedding: Kernel<"embedding", CpuStorage> = ({ inputs: [w, ids], outputs: [y] }) => {
  const [V, M] = w.shape as [number, number];
  take("embedding", "ids", view(w), view(y), view(ids) as Int32Array, 1, V, M);
};

const embeddingBackward: Kernel<"embeddingBackward", CpuStorage> = ({ inputs: [dy, ids], outputs: [dw], attrs: { vocabSize } }) => {
  const M = dw.shape[1];
  storeAs(dw, scatter("embeddingBackward", "ids", readFloat(dy), view(ids) as Int32Array, 1, vocabSize, M));
};

export const indexingKernels = { gather, scatterAdd, embedding, embeddingBackward } satisfies Pick<
  KernelTable<CpuStorage>,
  "gather" | "scatterAdd" | "embedding" | "embeddingBackward"
>;
