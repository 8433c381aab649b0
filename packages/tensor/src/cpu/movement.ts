/** Movement kernels: permute, slice, pad, concat, expand. They move raw storage, whatever the dtype. */
import type { Kernel, KernelTable } from "../backend.js";
import { stridesOf, sizeOf } from "../shape.js";
import { forEachBroadcastRow } from "./iterate.js";
import { type CpuStorage, view } from "./storage.js";

/**
 * Copies a strided view of `src` into contiguous `dst`: element at multi-index i of `shape` reads
 * src[base + Σ i_d · strides_d].
 */
function gatherStrided(
  src: ArrayLike<number>,
  dst: { [i: number]: number },
  dstOffset: number,
  shape: readonly number[],
  strides: readonly number[],
  base: number,
): void {
  const n = sizeOf(shape);
  if (n === 0) return;
  const r = shape.length;
  if (r === 0) {
    dst[dstOffset] = src[base]!;
    return;
  }
  const inner = shape[r - 1];
  const si = strides[r - 1];
  const counter = new Array<number>(r).fill(0);
  let off = base;
  for (let row = 0; row < n / inner; row++) {
    const o = dstOffset + row * inner;
    for (let j = 0; j < inner; j++) dst[o + j] = src[off + j * si]!;
    for (let d = r - 2; d >= 0; d--) {
      counter[d]++;
      off += strides[d];
      if (counter[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      counter[d] = 0;
    }
  }
}

const permute: Kernel<"permute", CpuStorage> = ({ inputs: [x], outputs: [y], attrs: { perm } }) => {
  const s = stridesOf(x.shape);
  gatherStrided(view(x), view(y), 0, y.shape, perm.map((p) => s[p]), 0);
};

const slice: Kernel<"slice", CpuStorage> = ({ inputs: [x], outputs: [y], attrs: { begin } }) => {
  const s = stridesOf(x.shape);
  const base = begin.reduce((acc, b, i) => acc + b * s[i], 0);
  gatherStrided(view(x), view(y), 0, y.shape, s, base);
};

/** Writes `x` into the interior of the zeroed output: the adjoint of slice. */
const pad: Kernel<"pad", CpuStorage> = ({ inputs: [x], outputs: [y], attrs: { before } }) => {
  const out = view(y);
  out.fill(0);
  const ys = stridesOf(y.shape);
  const base = before.reduce((acc, b, i) => acc + b * ys[i], 0);
  // Scatter: walk x contiguously and place each row at its strided destination in y.
  const src = view(x);
  const r = x.shape.length;
  if (x.size === 0) return;
  if (r === 0) {
    out[0] = src[0]!;
    return;
  }
  const inner = x.shape[r - 1];
  const counter = new Array<number>(r).fill(0);
  let off = base;
  for (let row = 0; row < x.size / inner; row++) {
    out.set(src.subarray(row * inner, row * inner + inner), off);
    for (let d = r - 2; d >= 0; d--) {
      counter[d]++;
      off += ys[d];
      if (counter[d] < x.shape[d]) break;
      off -= ys[d] * x.shape[d];
      counter[d] = 0;
    }
  }
};

const concat: Kernel<"concat", CpuStorage> = ({ inputs, outputs: [y], attrs: { axis } }) => {
  const out = view(y);
  const outer = sizeOf(y.shape.slice(0, axis));
  const rowOut = sizeOf(y.shape.slice(axis));
  let start = 0;
  for (const x of inputs) {
    const src = view(x);
    const rowIn = sizeOf(x.shape.slice(axis));
    for (let o = 0; o < outer; o++) out.set(src.subarray(o * rowIn, (o + 1) * rowIn), o * rowOut + start);
    start += rowIn;
  }
};

const expand: Kernel<"expand", CpuStorage> = ({ inputs: [x], outputs: [y] }) => {
  const src = view(x);
  const out = view(y);
  forEachBroadcastRow(y.shape, [x.shape], (o, [i], n, [s]) => {
    for (let j = 0; j < n; j++) out[o + j] = src[i + j * s]!;
  });
};

export const movementKernels = { permute, slice, pad, concat, expand } satisfies Pick<
  KernelTable<CpuStorage>,
  "permute" | "slice" | "pad" | "concat" | "expand"
>;
