/**
 * The op functions users call. They normalise arguments (negative axes, -1 in shapes, numbers
 * for tensors) and dispatch through the engine; ops that are not in the set (`transpose`, `split`,
 * `narrow` …) are written here once, from ops of the set, for every backend.
 */
import type { Backend } from "../backend.js";
import { byteSize, type DType, encode, isDType, type StorageArray } from "../dtype.js";
import { getBackend, run1, runOp } from "../engine.js";
import { argError, fmtShape } from "../errors.js";
import { checkShape, normalizeAxes, normalizeAxis, sizeOf } from "../shape.js";
import { type NestedArray, Tensor } from "../tensor.js";
import type { AdamwAttrs, BinaryOpName, CompareOpName, OpName, ReduceOpName, UnaryOpName } from "../ops/attrs.js";
import type * as self from "./ops.js";

export interface CreateOptions {
  dtype?: DType;
  backend?: Backend;
}

function inferShape(values: NestedArray): number[] {
  const shape: number[] = [];
  let v: NestedArray = values;
  while (Array.isArray(v)) {
    shape.push(v.length);
    v = v[0]!;
  }
  return shape;
}

function flatten(op: string, values: NestedArray, shape: readonly number[], depth = 0, out: number[] = []): number[] {
  if (depth === shape.length) {
    if (typeof values !== "number") argError(op, "values", "numbers at the innermost level", typeof values);
    out.push(values);
    return out;
  }
  if (!Array.isArray(values) || values.length !== shape[depth]) {
    argError(op, "values", `a regular nested array (length ${shape[depth]} at depth ${depth})`, Array.isArray(values) ? `length ${values.length}` : typeof values);
  }
  for (const v of values) flatten(op, v, shape, depth + 1, out);
  return out;
}

/** Bytes of a storage array, viewed without copying. */
function bytesOf(arr: StorageArray): Uint8Array {
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

/**
 * A tensor from JavaScript values: a number, nested arrays, or a flat array/typed array plus `shape`.
 *
 * @example
 * const x = tensor([[1, 2], [3, 4]]);            // f32 [2, 2]
 * const ids = tensor([5, 7, 9], [3], { dtype: "i32" });
 */
export function tensor(values: NestedArray | ArrayLike<number>, shape?: readonly number[], options: CreateOptions = {}): Tensor {
  const dtype = options.dtype ?? (values instanceof Int32Array ? "i32" : values instanceof Uint8Array ? "u8" : "f32");
  if (!isDType(dtype)) argError("tensor", "dtype", "one of f32, f64, f16, bf16, i32, u8", String(dtype));
  let flat: ArrayLike<number>;
  let s: number[];
  if (typeof values === "number") {
    flat = [values];
    s = shape ? checkShape("tensor", "shape", [...shape]) : [];
  } else if (Array.isArray(values) && (shape === undefined || Array.isArray(values[0]))) {
    s = inferShape(values);
    flat = flatten("tensor", values, s);
    if (shape && sizeOf(shape) === flat.length) s = [...shape];
  } else {
    flat = values as ArrayLike<number>;
    s = shape ? checkShape("tensor", "shape", [...shape]) : [flat.length];
  }
  if (sizeOf(s) !== flat.length) argError("tensor", "shape", `a shape of ${flat.length} elements`, fmtShape(s));
  return fromStorage(encode(dtype, flat), s, dtype, options.backend);
}

/** A tensor from raw storage (f16/bf16 as 16-bit patterns). The bytes are copied to the backend. */
export function fromStorage(data: StorageArray | Uint8Array, shape: readonly number[], dtype: DType, backend?: Backend): Tensor {
  const be = backend ?? getBackend();
  const bytes = data instanceof Uint8Array ? data : bytesOf(data);
  const want = sizeOf(shape) * byteSize(dtype);
  if (bytes.byteLength !== want) argError("fromStorage", "data", `${want} bytes for ${dtype} ${fmtShape(shape)}`, `${bytes.byteLength} bytes`);
  const storage: unknown = be.allocate(want);
  be.write(storage, bytes, 0);
  return new Tensor({ backend: be, storage, byteLength: want, refs: 0 }, [...shape], dtype);
}

export function full(shape: readonly number[], value: number, options: CreateOptions = {}): Tensor {
  return run1("fill", [], { shape: [...shape], dtype: options.dtype ?? "f32", value }, options.backend ?? getBackend());
}

export const zeros = (shape: readonly number[], options: CreateOptions = {}) => full(shape, 0, options);
export const ones = (shape: readonly number[], options: CreateOptions = {}) => full(shape, 1, options);
export const scalar = (value: number, options: CreateOptions = {}) => full([], value, options);

/** [start, start + step, …) below `stop`, like numpy.arange; i32 unless a dtype is given. */
export function arange(start: number, stop?: number, step = 1, options: CreateOptions = {}): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) argError("arange", "step", "a non-zero number", "0");
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const values = Array.from({ length: n }, (_, i) => start + i * step);
  return tensor(values, [n], { dtype: options.dtype ?? "i32", backend: options.backend });
}

export interface RandomOptions extends CreateOptions {
  seed: number;
  /** Counter offset into the stream of `seed` (default 0). */
  offset?: number;
}

/** Uniform values in [low, high) from a counter-based RNG: the same on every backend. */
export function randomUniform(shape: readonly number[], options: RandomOptions & { low?: number; high?: number }): Tensor {
  const { seed, offset = 0, low = 0, high = 1, dtype = "f32" } = options;
  return run1("randomUniform", [], { shape: [...shape], dtype, seed, offset, low, high }, options.backend ?? getBackend());
}

/** Normal values from a counter-based RNG (Box–Muller): the same on every backend. */
export function randomNormal(shape: readonly number[], options: RandomOptions & { mean?: number; std?: number }): Tensor {
  const { seed, offset = 0, mean = 0, std = 1, dtype = "f32" } = options;
  return run1("randomNormal", [], { shape: [...shape], dtype, seed, offset, mean, std }, options.backend ?? getBackend());
}

// ---------------------------------------------------------------------------------------------
// Elementwise

const unaryOp = (op: UnaryOpName) => (x: Tensor) => run1(op, [x], {});
export const neg = unaryOp("neg");
export const abs = unaryOp("abs");
export const exp = unaryOp("exp");
export const log = unaryOp("log");
export const sqrt = unaryOp("sqrt");
export const rsqrt = unaryOp("rsqrt");
export const square = unaryOp("square");
export const reciprocal = unaryOp("reciprocal");
export const relu = unaryOp("relu");
export const silu = unaryOp("silu");
export const sigmoid = unaryOp("sigmoid");
export const tanh = unaryOp("tanh");
export const cos = unaryOp("cos");
export const sin = unaryOp("sin");
export const sign = unaryOp("sign");

/** A number operand becomes a scalar tensor of the other operand's dtype and backend. */
function binaryOp(op: BinaryOpName | CompareOpName) {
  return (a: Tensor | number, b: Tensor | number): Tensor => {
    if (typeof a === "number" && typeof b === "number") argError(op, "a", "at least one Tensor", "two numbers");
    const like = (a instanceof Tensor ? a : b) as Tensor;
    // A disposed operand is reported by the engine below, so only read its backend when alive.
    const options = { dtype: like.dtype, backend: like.isDisposed ? undefined : like.backend };
    const ta = typeof a === "number" ? full([], a, options) : a;
    const tb = typeof b === "number" ? full([], b, options) : b;
    try {
      return run1(op, [ta, tb], {});
    } finally {
      if (ta !== a) ta.dispose();
      if (tb !== b) tb.dispose();
    }
  };
}
export const add = binaryOp("add");
export const sub = binaryOp("sub");
export const mul = binaryOp("mul");
export const div = binaryOp("div");
export const pow = binaryOp("pow");
export const maximum = binaryOp("maximum");
export const minimum = binaryOp("minimum");
export const equal = binaryOp("equal");
export const notEqual = binaryOp("notEqual");
export const less = binaryOp("less");
export const lessEqual = binaryOp("lessEqual");
export const greater = binaryOp("greater");
export const greaterEqual = binaryOp("greaterEqual");

/** Elements of `a` where `cond` is non-zero, else of `b`; all three broadcast. */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  return run1("where", [cond, a, b], {});
}

// ---------------------------------------------------------------------------------------------
// Reductions

const reduceOp = (op: ReduceOpName) => (x: Tensor, axes?: number | readonly number[], keepdims = false) =>
  run1(op, [x], { axes: normalizeAxes(op, axes, x.rank), keepdims });
export const sum = reduceOp("sum");
export const mean = reduceOp("mean");
export const max = reduceOp("max");
export const min = reduceOp("min");

export function argmax(x: Tensor, axis = -1, keepdims = false): Tensor {
  return run1("argmax", [x], { axis: normalizeAxis("argmax", "axis", axis, x.rank), keepdims });
}

// ---------------------------------------------------------------------------------------------
// Linear algebra

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/** (..., m, k) × (..., k, n) → (..., m, n); batch dims broadcast; transposes apply to the last two dims. */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  return run1("matmul", [a, b], { transA: options.transA ?? false, transB: options.transB ?? false });
}

// ---------------------------------------------------------------------------------------------
// Movement

/** Same data, new shape; one entry may be -1. Shares storage with `x`. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const free = shape.indexOf(-1);
  let s = [...shape];
  if (free >= 0) {
    const known = sizeOf(shape.filter((_, i) => i !== free));
    if (known === 0 || x.size % known !== 0) argError("reshape", "shape", `a shape of ${x.size} elements`, fmtShape(shape));
    s[free] = x.size / known;
  }
  s = checkShape("reshape", "shape", s);
  return run1("reshape", [x], { shape: s });
}

export function permute(x: Tensor, perm: readonly number[]): Tensor {
  return run1("permute", [x], { perm: perm.map((p) => normalizeAxis("permute", "perm", p, x.rank)) });
}

/** Swaps two axes (the last two by default). */
export function transpose(x: Tensor, axis0 = -2, axis1 = -1): Tensor {
  const a = normalizeAxis("transpose", "axis0", axis0, x.rank);
  const b = normalizeAxis("transpose", "axis1", axis1, x.rank);
  const perm = Array.from({ length: x.rank }, (_, i) => i);
  [perm[a], perm[b]] = [perm[b], perm[a]];
  return permute(x, perm);
}

/**
 * `x[begin[0]:end[0], begin[1]:end[1], …]` like numpy: negative values count from the end,
 * missing entries take the whole axis, out-of-range values are clamped.
 */
export function slice(x: Tensor, begin: readonly number[], end?: readonly (number | undefined)[]): Tensor {
  if (begin.length > x.rank) argError("slice", "begin", `at most ${x.rank} entries`, `${begin.length}`);
  const clamp = (v: number, d: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
  const b = x.shape.map((d, i) => clamp(begin[i] ?? 0, d));
  const e = x.shape.map((d, i) => Math.max(b[i], clamp(end?.[i] ?? d, d)));
  return run1("slice", [x], { begin: b, end: e });
}

/** `length` elements of `axis` from `start`. */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normalizeAxis("narrow", "axis", axis, x.rank);
  if (start < 0 || length < 0 || start + length > x.shape[a]) {
    argError("narrow", "start", `a range inside [0, ${x.shape[a]}) on axis ${a}`, `${start}..${start + length}`);
  }
  const begin = x.shape.map(() => 0);
  const end = [...x.shape];
  begin[a] = start;
  end[a] = start + length;
  return run1("slice", [x], { begin, end });
}

/** Zero padding: `widths[i] = [before, after]` for axis i (missing axes are not padded). */
export function pad(x: Tensor, widths: readonly (readonly [number, number])[]): Tensor {
  if (widths.length > x.rank) argError("pad", "widths", `at most ${x.rank} pairs`, `${widths.length}`);
  return run1("pad", [x], { before: x.shape.map((_, i) => widths[i]?.[0] ?? 0), after: x.shape.map((_, i) => widths[i]?.[1] ?? 0) });
}

export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) argError("concat", "xs", "at least one tensor", "an empty list");
  return run1("concat", xs, { axis: normalizeAxis("concat", "axis", axis, xs[0].rank) });
}

/** Splits along `axis` into `sections` equal parts, or into parts of the given sizes. */
export function split(x: Tensor, sections: number | readonly number[], axis = 0): Tensor[] {
  const a = normalizeAxis("split", "axis", axis, x.rank);
  const d = x.shape[a];
  let sizes: number[];
  if (typeof sections === "number") {
    if (!Number.isInteger(sections) || sections < 1 || d % sections !== 0) {
      argError("split", "sections", `a divisor of ${d} (axis ${a} of ${fmtShape(x.shape)})`, String(sections));
    }
    sizes = Array.from({ length: sections }, () => d / sections);
  } else {
    sizes = [...sections];
    if (sizes.reduce((p, q) => p + q, 0) !== d || sizes.some((s) => s < 0)) {
      argError("split", "sections", `sizes summing to ${d}`, JSON.stringify(sections));
    }
  }
  let start = 0;
  return sizes.map((s) => {
    const part = narrow(x, a, start, s);
    start += s;
    return part;
  });
}

/** Broadcasts `x` to `shape` (a materialised copy). */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  return run1("expand", [x], { shape: checkShape("expand", "shape", [...shape]) });
}
export const broadcastTo = expand;

/** A contiguous copy with its own storage. */
export function copy(x: Tensor): Tensor {
  return run1("copy", [x], {});
}

/**
 * `x` on another backend (another device), with a gradient that copies back; the same tensor's
 * storage when `backend` is x's own.
 *
 * @example
 * const y = copyTo(x, gpu1); // x stays on its backend
 */
export function copyTo(x: Tensor, backend: Backend): Tensor {
  return run1("copyTo", [x], { backend });
}

export function cast(x: Tensor, dtype: DType): Tensor {
  return run1("cast", [x], { dtype });
}

// ---------------------------------------------------------------------------------------------
// Indexing

/** Takes entries of `x` along `axis` at `indices` (i32), like numpy.take; out-of-range indices throw. */
export function gather(x: Tensor, indices: Tensor, axis = 0): Tensor {
  return run1("gather", [x, indices], { axis: normalizeAxis("gather", "axis", axis, x.rank) });
}

/** The adjoint of `gather`: zeros of `size` along `axis`, with `updates` added at `indices`. */
export function scatterAdd(updates: Tensor, indices: Tensor, axis: number, size: number): Tensor {
  return run1("scatterAdd", [updates, indices], { axis, size });
}

/** Rows of `weight` [V, M] for `ids` (i32, any shape) → [...ids.shape, M]. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  return run1("embedding", [weight, ids], {});
}

export function embeddingBackward(dy: Tensor, ids: Tensor, vocabSize: number): Tensor {
  return run1("embeddingBackward", [dy, ids], { vocabSize });
}

// ---------------------------------------------------------------------------------------------
// Fused

export function softmax(x: Tensor, axis = -1): Tensor {
  return run1("softmax", [x], { axis: normalizeAxis("softmax", "axis", axis, x.rank) });
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return run1("logSoftmax", [x], { axis: normalizeAxis("logSoftmax", "axis", axis, x.rank) });
}

export interface CrossEntropyOptions {
  /** Label value whose rows are ignored (loss 0, no gradient); PyTorch's default, -100. */
  ignoreIndex?: number;
}

/** Per-row loss of logits [N, V] against labels i32 [N] → f32 [N] (0 on ignored rows). */
export function softmaxCrossEntropy(logits: Tensor, labels: Tensor, options: CrossEntropyOptions = {}): Tensor {
  return run1("softmaxCrossEntropy", [logits, labels], { ignoreIndex: options.ignoreIndex ?? -100 });
}

export function softmaxCrossEntropyBackward(logits: Tensor, labels: Tensor, dloss: Tensor, options: CrossEntropyOptions = {}): Tensor {
  return run1("softmaxCrossEntropyBackward", [logits, labels, dloss], { ignoreIndex: options.ignoreIndex ?? -100 });
}

/** TNL's SRMSNorm over the last axis, without weight: x / sqrt(mean(x²) + eps). */
export function rmsNorm(x: Tensor, eps = 1e-6): Tensor {
  return run1("rmsNorm", [x], { eps });
}

export function rmsNormBackward(x: Tensor, dy: Tensor, eps = 1e-6): Tensor {
  return run1("rmsNormBackward", [x, dy], { eps });
}

/** The gradient of silu: dy·σ(x)·(1 + x·(1 − σ(x))), one kernel where the backend has it. */
export function siluBackward(x: Tensor, dy: Tensor): Tensor {
  return run1("siluBackward", [x, dy], {});
}

// ---------------------------------------------------------------------------------------------
// Optimizers

export interface AdamwOptions {
  lr: number;
  /** The step count t, from 1 (the bias corrections are 1 − β₁ᵗ and 1 − β₂ᵗ). */
  step: number;
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay λ; default 0.01. */
  weightDecay?: number;
  /** Also return the new parameter rounded to this dtype, made in the same pass (`half`). */
  castTo?: "bf16" | "f16";
}

export interface AdamwResult {
  param: Tensor;
  expAvg: Tensor;
  expAvgSq: Tensor;
  /** The new parameter rounded to `castTo`, when asked for. */
  half?: Tensor;
}

/**
 * The scalars of an AdamW update, computed in float64 from the attributes exactly as
 * packages/autograd/src/optim/adamw.ts computes them; each becomes an f32 (or f64) operand. The
 * decomposition (api/decompositions.ts) and the GPU kernels take them from here, so that they
 * agree to the bit.
 */
export function adamwScalars(a: AdamwAttrs) {
  return {
    beta1: a.beta1,
    oneMinusBeta1: 1 - a.beta1,
    beta2: a.beta2,
    oneMinusBeta2: 1 - a.beta2,
    /** 1 − lr·λ; the multiply is skipped when λ = 0. */
    decay: 1 - a.lr * a.weightDecay,
    /** √(1 − β₂ᵗ), which divides √v. */
    sqrtCorrection2: Math.sqrt(1 - a.beta2 ** a.step),
    eps: a.eps,
    /** lr / (1 − β₁ᵗ). */
    stepSize: a.lr / (1 - a.beta1 ** a.step),
  };
}

/**
 * One AdamW update of a parameter and its moments, in PyTorch's form (see `AdamwAttrs`), as one
 * kernel where the backend has one. New tensors come back; the inputs stay the caller's.
 *
 * @example
 * const r = adamwUpdate(master, grad, expAvg, expAvgSq, { lr: 3e-4, step: 1, weightDecay: 0.1, castTo: "bf16" });
 * // r.param, r.expAvg, r.expAvgSq: f32; r.half: the new weight in bf16
 */
export function adamwUpdate(param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, options: AdamwOptions): AdamwResult {
  const { lr, step, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01, castTo } = options;
  const attrs: AdamwAttrs = { lr, beta1, beta2, eps, weightDecay, step, ...(castTo ? { castTo } : {}) };
  const [p, m, v, half] = runOp("adamwUpdate", [param, grad, expAvg, expAvgSq], attrs);
  return { param: p, expAvg: m, expAvgSq: v, ...(half ? { half } : {}) };
}

/** Every op of UNARY_OPS, BINARY_OPS, COMPARE_OPS and REDUCE_OPS has its function here: a compile error names one that does not. */
type WithoutFunction = Exclude<UnaryOpName | BinaryOpName | CompareOpName | ReduceOpName, keyof typeof self>;
const everyListedOpHasAFunction: Record<WithoutFunction, never> = {};
void everyListedOpHasAFunction;

/** All ops of the set, re-exported for code that dispatches by name (autograd, tests). */
export { runOp, run1 };
export type { OpName };
