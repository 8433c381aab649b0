/** Index iteration shared by CPU kernels. */
import { broadcastStrides, type Shape, sizeOf } from "../shape.js";

/**
 * Calls `row(outOffset, inOffsets, n, innerStrides)` for every row (last dim) of `outShape`, with
 * each input's offset into its own storage when broadcast to `outShape`.
 */
export function forEachBroadcastRow(
  outShape: Shape,
  inShapes: readonly Shape[],
  row: (outOffset: number, inOffsets: readonly number[], n: number, innerStrides: readonly number[]) => void,
): void {
  const size = sizeOf(outShape);
  if (size === 0) return;
  const r = outShape.length;
  if (r === 0) {
    row(0, inShapes.map(() => 0), 1, inShapes.map(() => 0));
    return;
  }
  const strides = inShapes.map((s) => broadcastStrides(s, outShape));
  const inner = outShape[r - 1];
  const innerStrides = strides.map((s) => s[r - 1]);
  const counter = new Array<number>(r).fill(0);
  const offs = inShapes.map(() => 0);
  const rows = size / inner;
  for (let i = 0; i < rows; i++) {
    row(i * inner, offs, inner, innerStrides);
    for (let d = r - 2; d >= 0; d--) {
      counter[d]++;
      for (let j = 0; j < offs.length; j++) offs[j] += strides[j][d];
      if (counter[d] < outShape[d]) break;
      for (let j = 0; j < offs.length; j++) offs[j] -= strides[j][d] * outShape[d];
      counter[d] = 0;
    }
  }
}

/** Splits `shape` around `axis` into (outer, n, inner) for kernels that work along one axis. */
export function aroundAxis(shape: Shape, axis: number): { outer: number; n: number; inner: number } {
  return { outer: sizeOf(shape.slice(0, axis)), n: shape[axis], inner: sizeOf(shape.slice(axis + 1)) };
}
