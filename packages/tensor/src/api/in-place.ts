/**
 * Writing into existing storage, for code whose buffers must keep their addresses (a decoder
 * replayed as a CUDA graph): `copyInto` copies elements between tensors on the device,
 * `copyIntoMany` runs several such copies (and zero fills) as one launch, and `leadingRows` is a
 * handle to the first rows of a tensor, sharing its storage.
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
  const c = checkedCopy("copyInto", "", { dst, src, ...checkedOptions("copyInto", options) });
  const be = c.dst.handle.backend;
  if (!be.copyWithin) {
    throw new Error(`copyInto: the ${be.name} backend cannot copy within device memory (it has no copyWithin); copy through the host with data() and a new tensor instead`);
  }
  notifyWrite("copyInto", [c.src!], c.dst);
  if (c.count === 0) return;
  const size = byteSize(c.dst.dtype);
  be.copyWithin(c.dst.handle.storage, c.dstOffset * size, c.src!.handle.storage, c.srcOffset * size, c.count * size);
}

/** One copy of `copyIntoMany`: as `copyInto`'s arguments, or zeros written where `src` is null (then `count` is required). */
export interface TensorCopy extends CopyIntoOptions {
  dst: Tensor;
  src: Tensor | null;
}

interface Checked {
  dst: Tensor;
  src: Tensor | null;
  dstOffset: number;
  srcOffset: number;
  count: number;
}

function checkedOptions(op: string, options: CopyIntoOptions): CopyIntoOptions {
  if (options === null || typeof options !== "object") argError(op, "options", "an object { dstOffset?, srcOffset?, count? }", String(options));
  return options;
}

/** The copy's tensors and offsets, checked as copyInto checks them; `at` prefixes the argument names (e.g. "copies[2].") */
function checkedCopy(op: string, at: string, c: TensorCopy): Checked {
  const opt = (name: string) => (at ? `${at}${name}` : `options.${name}`);
  const dst = liveTensor(op, `${at}dst`, c.dst);
  const src = c.src === null && at ? null : liveTensor(op, `${at}src`, c.src);
  const dstOffset = count(op, opt("dstOffset"), c.dstOffset, 0);
  if (src === null) {
    if (c.srcOffset !== undefined) argError(op, opt("srcOffset"), "nothing where src is null (zeros are written)", String(c.srcOffset));
    if (c.count === undefined) argError(op, opt("count"), "the elements to zero (src is null)", "undefined");
    const n = count(op, opt("count"), c.count, 0);
    if (dstOffset + n > dst.size) argError(op, opt("dstOffset"), `at most ${dst.size - n} (${n} elements into dst ${dst.describe()})`, String(dstOffset));
    return { dst, src, dstOffset, srcOffset: 0, count: n };
  }
  if (src.backend !== dst.backend) argError(op, `${at}src`, `a tensor on dst's backend (${dst.backend.name})`, `one on another ${src.backend.name} backend`);
  if (src.dtype !== dst.dtype) argError(op, `${at}src`, `a ${dst.dtype} tensor (dst's dtype)`, src.describe());
  const srcOffset = count(op, opt("srcOffset"), c.srcOffset, 0);
  if (srcOffset > src.size) argError(op, opt("srcOffset"), `at most ${src.size} (the elements of src ${src.describe()})`, String(srcOffset));
  const n = count(op, opt("count"), c.count, src.size - srcOffset);
  if (srcOffset + n > src.size) argError(op, opt("count"), `at most ${src.size - srcOffset} (src ${src.describe()} from element ${srcOffset})`, String(n));
  if (dstOffset + n > dst.size) argError(op, opt("dstOffset"), `at most ${dst.size - n} (${n} elements into dst ${dst.describe()})`, String(dstOffset));
  if (src.handle.storage === dst.handle.storage && overlap(srcOffset, dstOffset, n)) {
    argError(op, `${at}src`, "a range that does not overlap dst's (they share storage)", `elements [${srcOffset}, ${srcOffset + n}) over [${dstOffset}, ${dstOffset + n})`);
  }
  return { dst, src, dstOffset, srcOffset, count: n };
}

const overlap = (a: number, b: number, n: number, m = n) => n > 0 && m > 0 && a < b + m && b < a + n;

/**
 * Several copies between tensors of one backend, and zero fills (`src: null`), as one launch on a
 * backend with `copyMany` (CUDA: one kernel; else one copy or write each): moving or clearing one
 * row of every layer's state costs one launch, not one per layer. Each copy is checked as
 * `copyInto` checks it, and no copy may write where another reads or writes (they may run in any
 * order); `dst` and `src` of one copy may be tensors of different dtypes than another copy's.
 *
 * @example
 * // Clear row r of every layer's batch state [N, H, D, E], and move row 5 of each into row 2:
 * copyIntoMany(layers.map((t) => ({ dst: t, src: null, dstOffset: r * row, count: row })));
 * copyIntoMany(layers.map((t) => ({ dst: t, src: t, dstOffset: 2 * row, srcOffset: 5 * row, count: row })));
 */
export function copyIntoMany(copies: readonly TensorCopy[]): void {
  const op = "copyIntoMany";
  if (!Array.isArray(copies)) argError(op, "copies", "an array of { dst, src, dstOffset?, srcOffset?, count? }", typeof copies);
  const checked = copies.map((c: unknown, i) => {
    if (c === null || typeof c !== "object") argError(op, `copies[${i}]`, "an object { dst, src, dstOffset?, srcOffset?, count? }", String(c));
    return checkedCopy(op, `copies[${i}].`, c as TensorCopy);
  });
  if (checked.length === 0) return;
  const be = checked[0].dst.handle.backend;
  checked.forEach((c, i) => {
    if (c.dst.handle.backend !== be) argError(op, `copies[${i}].dst`, `a tensor on copies[0]'s backend (${be.name})`, `one on another ${c.dst.backend.name} backend`);
    // A destination may not meet another copy's destination or source: the copies run in any order.
    const storage = c.dst.handle.storage;
    for (let j = 0; j < i; j++) {
      const o = checked[j];
      if (o.dst.handle.storage === storage && overlapsBytes(c.dst, c.dstOffset, c.count, o.dst, o.dstOffset, o.count)) {
        argError(op, `copies[${i}].dstOffset`, `a range apart from copies[${j}]'s destination (one storage)`, `elements [${c.dstOffset}, ${c.dstOffset + c.count})`);
      }
    }
    for (let j = 0; j < checked.length; j++) {
      const o = checked[j];
      if (j !== i && o.src && o.src.handle.storage === storage && overlapsBytes(c.dst, c.dstOffset, c.count, o.src, o.srcOffset, o.count)) {
        argError(op, `copies[${i}].dstOffset`, `a range apart from copies[${j}]'s source (one storage)`, `elements [${c.dstOffset}, ${c.dstOffset + c.count})`);
      }
    }
  });
  for (const c of checked) notifyWrite(op, c.src ? [c.src] : [], c.dst);
  const bytes = checked.filter((c) => c.count > 0).map((c) => {
    const size = byteSize(c.dst.dtype);
    return { dst: c.dst.handle.storage, dstByteOffset: c.dstOffset * size, src: c.src ? c.src.handle.storage : null, srcByteOffset: c.srcOffset * size, byteLength: c.count * size };
  });
  if (bytes.length === 0) return;
  if (be.copyMany) {
    be.copyMany(bytes);
    return;
  }
  if (!be.copyWithin) throw new Error(`copyIntoMany: the ${be.name} backend cannot copy within device memory (it has no copyWithin or copyMany)`);
  // One copy each; zeros come from a zeroed scratch storage (a host write may not land on any byte
  // range: WebGPU writes whole words). Freed after the copies are enqueued, as storage may be.
  const most = Math.max(0, ...bytes.filter((b) => b.src === null).map((b) => b.byteLength));
  const scratchBytes = Math.ceil(most / 4) * 4;
  const zeros: unknown = scratchBytes > 0 ? be.allocate(scratchBytes) : null;
  try {
    if (zeros !== null) be.write(zeros, new Uint8Array(scratchBytes));
    for (const b of bytes) be.copyWithin(b.dst, b.dstByteOffset, b.src ?? zeros, b.src ? b.srcByteOffset : 0, b.byteLength);
  } finally {
    if (zeros !== null) be.free(zeros);
  }
}

/** Whether two element ranges of tensors on one storage (possibly of different dtypes) share a byte. */
function overlapsBytes(a: Tensor, aOffset: number, aCount: number, b: Tensor, bOffset: number, bCount: number): boolean {
  const [sa, sb] = [byteSize(a.dtype), byteSize(b.dtype)];
  return overlap(aOffset * sa, bOffset * sb, aCount * sa, bCount * sb);
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
