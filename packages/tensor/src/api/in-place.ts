/**
 * Writing into existing storage, for code whose buffers must keep their addresses (a decoder
 * replayed as a CUDA graph): `copyInto` copies elements between tensors on the device, and
 * `leadingRows` is a handle to the first rows of a tensor, sharing its storage.
 *
 * Neither is an op: no gradient flows through them. A gradient tape refuses a `copyInto` that reads
 * or overwrites what it differentiates or keeps; use them on values no gradient flows through
 * (decoding state, caches).
 */
import { byteSize } from "../dtype.js";
import { notifyWrite } from "../engine.js";
import { argError, fmtShape } from "../errors.js";
import { Tensor } from "../tensor.js";

export interface CopyIntoOptions {
  /** First element of `dst` written (row-major; default 0). */
  dstOffset?: number;
  /** First element of `src` read (row-major; default 0). */
  srcOffset?: number;
  /** Elements copied (default: the rest of `src` from `srcOffset`). */
  count?: number;
}

function liveTensor(op: string, name: string, t: unknown): Tensor {
  if (!(t instanceof Tensor)) argError(op, name, "a Tensor", t === null ? "null" : typeof t);
  if (t.isDisposed) argError(op, name, "a live tensor", `tensor #${t.id} that was disposed`);
  return t;
}

function count(op: string, name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) argError(op, name, "a non-negative integer", typeof value === "number" ? String(value) : typeof value);
  return value;
}

/**
 * Copies `count` elements of `src` from `srcOffset` into `dst` at `dstOffset` (row-major element
 * offsets), in place on the device: `dst`'s storage keeps its address and nothing passes through
 * the host. Both tensors have one dtype and live on one backend; by default the whole of `src` goes
 * to the start of `dst`. The two ranges may not overlap. The copy is ordered after the work
 * enqueued so far, like any op.
 *
 * @example
 * // Row r of a batch state [N, H, D, E] from one sequence's state [1, H, D, E]:
 * const row = H * D * E;
 * copyInto(batchState, seqState, { dstOffset: r * row });
 * // ...and back out:
 * copyInto(seqState, batchState, { srcOffset: r * row, count: row });
 */
export function copyInto(dst: Tensor, src: Tensor, options: CopyIntoOptions = {}): void {
  const op = "copyInto";
  liveTensor(op, "dst", dst);
  liveTensor(op, "src", src);
  if (options === null || typeof options !== "object") argError(op, "options", "an object { dstOffset?, srcOffset?, count? }", String(options));
  if (src.backend !== dst.backend) argError(op, "src", `a tensor on dst's backend (${dst.backend.name})`, `one on another ${src.backend.name} backend`);
  if (src.dtype !== dst.dtype) argError(op, "src", `a ${dst.dtype} tensor (dst's dtype)`, src.describe());
  const srcOffset = count(op, "options.srcOffset", options.srcOffset, 0);
  const dstOffset = count(op, "options.dstOffset", options.dstOffset, 0);
  if (srcOffset > src.size) argError(op, "options.srcOffset", `at most ${src.size} (the elements of src ${src.describe()})`, String(srcOffset));
  const n = count(op, "options.count", options.count, src.size - srcOffset);
  if (srcOffset + n > src.size) {
    argError(op, "options.count", `at most ${src.size - srcOffset} (src ${src.describe()} from element ${srcOffset})`, String(n));
  }
  if (dstOffset + n > dst.size) {
    argError(op, "options.dstOffset", `at most ${dst.size - n} (${n} elements into dst ${dst.describe()})`, String(dstOffset));
  }
  const s = src.handle;
  const d = dst.handle;
  if (s.storage === d.storage && srcOffset < dstOffset + n && dstOffset < srcOffset + n) {
    argError(op, "src", "a range that does not overlap dst's (they share storage)", `elements [${srcOffset}, ${srcOffset + n}) over [${dstOffset}, ${dstOffset + n})`);
  }
  const be = d.backend;
  if (!be.copyWithin) {
    throw new Error(`copyInto: the ${be.name} backend cannot copy within device memory (it has no copyWithin); copy through the host with data() and a new tensor instead`);
  }
  notifyWrite(op, [src], dst);
  if (n === 0) return;
  const size = byteSize(dst.dtype);
  be.copyWithin(d.storage, dstOffset * size, s.storage, srcOffset * size, n * size);
}

/**
 * A handle to the first `n` rows of `x`: shape [n, ...x.shape.slice(1)], on x's storage (which it
 * shares, like a reshape, and keeps alive until disposed). Ops read only those rows, and ops that
 * write in place through it (`copyInto`, `lightningStep`'s `inPlace`) change x. For running a
 * step on the first n rows of a buffer sized for the largest batch.
 *
 * @example
 * const state = zeros([maxBatch, H, D, E]);
 * const active = leadingRows(state, 3);                    // [3, H, D, E], the same storage
 * lightningStep(q, k, v, slopes, active, { inPlace: true }); // updates rows 0..2 of state
 * active.dispose();
 */
export function leadingRows(x: Tensor, n: number): Tensor {
  const op = "leadingRows";
  liveTensor(op, "x", x);
  if (x.rank === 0) argError(op, "x", "a tensor of rank 1 or more", `a scalar ${x.describe()}`);
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > x.shape[0]) {
    argError(op, "n", `an integer in [0, ${x.shape[0]}] (the rows of x ${fmtShape(x.shape)})`, String(n));
  }
  return new Tensor(x.handle, [n, ...x.shape.slice(1)], x.dtype);
}
