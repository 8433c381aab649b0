/**
 * Op specs: for each op, the names of its inputs and a function that validates the inputs and
 * attributes and infers the output shapes and dtypes. The engine runs the spec before any kernel,
 * so kernels can trust their arguments.
 */
import { type DType, isDType, isFloat } from "../dtype.js";
import { argError, fmtShape } from "../errors.js";
import { broadcastShapes, type Shape, sizeOf } from "../shape.js";
import {
  type AdamwAttrs,
  BINARY_OPS,
  COMPARE_OPS,
  type OpAttrs,
  type OpName,
  QKV_ACTIVATIONS,
  REDUCE_OPS,
  type ReduceAttrs,
  type SplitQkvuAttrs,
  UNARY_OPS,
} from "./attrs.js";

export interface TensorInfo {
  shape: number[];
  dtype: DType;
}

export interface OpSpec<K extends OpName> {
  /** Input names, used in error messages. A name ending in `...` takes the remaining inputs. */
  inputs: readonly string[];
  /** Names of optional trailing inputs (present or not according to the attributes). */
  optional?: readonly string[];
  /**
   * The optional inputs present under `attrs`, in order, where they are not simply the first ones
   * of `optional` (error messages name input i by it). Reads attrs defensively: runOp calls it
   * before `infer` has checked them.
   */
  present?(attrs: OpAttrs[K]): readonly string[];
  infer(inputs: readonly TensorInfo[], attrs: OpAttrs[K]): TensorInfo[];
}

/** The names of an op's inputs under these attributes, for error messages. */
export function inputNames<K extends OpName>(spec: OpSpec<K>, attrs: OpAttrs[K]): string[] {
  return [...spec.inputs, ...(spec.present ? spec.present(attrs) : (spec.optional ?? []))];
}

export type OpSpecTable = { [K in OpName]: OpSpec<K> };

const typeName = (t: TensorInfo) => `${t.dtype} ${fmtShape(t.shape)}`;

function requireFloat(op: string, arg: string, t: TensorInfo): void {
  if (!isFloat(t.dtype)) argError(op, arg, "a float tensor (f32, f64, f16 or bf16)", typeName(t));
}

function requireDType(op: string, arg: string, t: TensorInfo, dtype: DType): void {
  if (t.dtype !== dtype) argError(op, arg, `dtype ${dtype}`, typeName(t));
}

function requireRank(op: string, arg: string, t: TensorInfo, rank: number): void {
  if (t.shape.length !== rank) argError(op, arg, `rank ${rank}`, `rank ${t.shape.length} ${fmtShape(t.shape)}`);
}

function requireSameDType(op: string, arg: string, a: TensorInfo, b: TensorInfo): void {
  if (a.dtype !== b.dtype) argError(op, arg, `dtype ${a.dtype} (as the first input)`, b.dtype);
}

function requireShape(op: string, arg: string, t: TensorInfo, shape: Shape): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    argError(op, arg, `shape ${fmtShape(shape)}`, fmtShape(t.shape));
  }
}

/**
 * Prompt segments of a decode step (lightningStep, decodeLayer): i32 [B + 1] for a state of B rows
 * and N ≥ B token rows. Returns B. The offsets themselves are data: kernels check them as they read.
 */
function checkSegments(op: string, segments: TensorInfo, state: TensorInfo, N: number): number {
  requireDType(op, "segments", segments, "i32");
  requireRank(op, "segments", segments, 1);
  requireRank(op, "state", state, 4);
  const B = state.shape[0];
  requireShape(op, "segments", segments, [B + 1]);
  if (N < B) argError(op, "segments", `a state of at most ${N} rows (one token row per state row at least, N = ${N})`, `a state of ${B} rows`);
  return B;
}

const unary = <K extends OpName>(op: K): OpSpec<K> => ({
  inputs: ["x"],
  infer([x]) {
    requireFloat(op, "x", x);
    return [{ shape: [...x.shape], dtype: x.dtype }];
  },
});

const binary = <K extends OpName>(op: K, out?: DType): OpSpec<K> => ({
  inputs: ["a", "b"],
  infer([a, b]) {
    requireSameDType(op, "b", a, b);
    if (!out && a.dtype === "u8") argError(op, "a", "a float or i32 tensor", typeName(a));
    return [{ shape: broadcastShapes(op, a.shape, b.shape), dtype: out ?? a.dtype }];
  },
});

function reducedShape(shape: Shape, axes: readonly number[], keepdims: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

const reduce = <K extends OpName>(op: K): OpSpec<K> => ({
  inputs: ["x"],
  infer([x], attrs) {
    const { axes, keepdims } = attrs as ReduceAttrs;
    if (x.dtype === "u8") argError(op, "x", "a float or i32 tensor", typeName(x));
    if (op === "mean") requireFloat(op, "x", x);
    for (const a of axes) if (a < 0 || a >= x.shape.length) argError(op, "axes", `axes in [0, ${x.shape.length - 1}]`, String(a));
    if ((op === "max" || op === "min") && axes.some((a) => x.shape[a] === 0)) {
      argError(op, "x", "non-empty reduced axes", fmtShape(x.shape));
    }
    return [{ shape: reducedShape(x.shape, axes, keepdims), dtype: x.dtype }];
  },
});

/** Losses are f32 (f64 for f64 logits, so gradient checks stay in float64). */
const lossDType = (logits: DType): DType => (logits === "f64" ? "f64" : "f32");

function checkAxis(op: string, axis: number, rank: number): void {
  if (!Number.isInteger(axis) || axis < 0 || axis >= rank) argError(op, "axis", `an axis in [0, ${rank - 1}]`, String(axis));
}

function checkEps(op: string, eps: number): void {
  if (!(eps > 0) || !Number.isFinite(eps)) argError(op, "eps", "a positive finite number", String(eps));
}

/**
 * The split of TNL's qkvu [B, W] (W = 4·H·hd) into q, k [B, H, D], v [B, H, hd], u [B, H·hd], with
 * D = 2·hd under LRPE (theta [H, hd], positions [B] in `rest`): the checks and output shapes of
 * splitQkvu and of qkvuProjection, whose W is the weight's row count (`arg`, `what` name it).
 */
function inferSplit(op: string, arg: string, [B, W]: [number, number], shown: string, what: string, attrs: SplitQkvuAttrs, rest: readonly TensorInfo[], dtype: DType): TensorInfo[] {
  const { heads: H, activation, lrpe } = attrs;
  if (!Number.isInteger(H) || H < 1) argError(op, "heads", "a positive integer", String(H));
  if (!(QKV_ACTIVATIONS as readonly string[]).includes(activation)) argError(op, "activation", QKV_ACTIVATIONS.map((a) => `'${a}'`).join(", "), String(activation));
  if (typeof lrpe !== "boolean") argError(op, "lrpe", "a boolean", String(lrpe));
  if (W % (4 * H) !== 0 || W === 0) argError(op, arg, `${what} that is a positive multiple of 4·heads = ${4 * H}`, shown);
  const hd = W / (4 * H);
  if (rest.length !== (lrpe ? 2 : 0)) argError(op, "theta", lrpe ? "theta and positions (lrpe is true)" : "no theta or positions (lrpe is false)", `${rest.length} more inputs`);
  if (lrpe) {
    const [theta, positions] = rest;
    requireFloat(op, "theta", theta);
    requireShape(op, "theta", theta, [H, hd]);
    requireDType(op, "positions", positions, theta.dtype === "f64" ? "f64" : "f32");
    requireShape(op, "positions", positions, [B]);
  }
  const D = lrpe ? 2 * hd : hd;
  return [
    { shape: [B, H, D], dtype },
    { shape: [B, H, D], dtype },
    { shape: [B, H, hd], dtype },
    { shape: [B, H * hd], dtype },
  ];
}

function checkCreation(op: string, shape: unknown, dtype: unknown): void {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    argError(op, "shape", "an array of non-negative integers", JSON.stringify(shape));
  }
  if (!isDType(dtype)) argError(op, "dtype", "one of f32, f64, f16, bf16, i32, u8", String(dtype));
}

function checkRandom(op: string, a: OpAttrs["randomUniform"] | OpAttrs["randomNormal"]): void {
  checkCreation(op, a.shape, a.dtype);
  if (!isFloat(a.dtype)) argError(op, "dtype", "a float dtype", a.dtype);
  if (!Number.isSafeInteger(a.seed) || a.seed < 0) argError(op, "seed", "a non-negative safe integer", String(a.seed));
  if (!Number.isSafeInteger(a.offset) || a.offset < 0) argError(op, "offset", "a non-negative safe integer", String(a.offset));
}

/** Matmul operand shapes after the transposes: a (..., m, k), b (..., k, n). */
export function matmulDims(
  a: Shape,
  b: Shape,
  transA: boolean,
  transB: boolean,
): { m: number; k: number; n: number; batch: number[] } {
  const m = transA ? a[a.length - 1] : a[a.length - 2];
  const k = transA ? a[a.length - 2] : a[a.length - 1];
  const kb = transB ? b[b.length - 1] : b[b.length - 2];
  const n = transB ? b[b.length - 2] : b[b.length - 1];
  if (k !== kb) argError("matmul", "b", `inner dimension ${k} (from a ${fmtShape(a)})`, `${kb} (b ${fmtShape(b)})`);
  const batch = broadcastShapes("matmul", a.slice(0, -2), b.slice(0, -2));
  return { m, k, n, batch };
}

function lightningShapes(op: string, q: TensorInfo, k: TensorInfo, v: TensorInfo, slopes: TensorInfo, first = "q") {
  requireFloat(op, first, q);
  requireRank(op, first, q, 4);
  requireSameDType(op, "k", q, k);
  requireSameDType(op, "v", q, v);
  requireRank(op, "k", k, 4);
  requireRank(op, "v", v, 4);
  const [B, H, T, D] = q.shape as [number, number, number, number];
  requireShape(op, "k", k, [B, H, T, D]);
  if (v.shape[0] !== B || v.shape[1] !== H || v.shape[2] !== T) {
    argError(op, "v", `shape [${B}, ${H}, ${T}, E] (B, H, T as ${first})`, fmtShape(v.shape));
  }
  const E = v.shape[3];
  requireDType(op, "slopes", slopes, "f32");
  requireShape(op, "slopes", slopes, [H]);
  return { B, H, T, D, E };
}

/** Recurrent states are f32, or f64 for f64 inputs so that float64 gradient checks stay exact. */
export const stateDType = (q: DType): DType => (q === "f64" ? "f64" : "f32");

/**
 * Checks the attributes and the input count: `base` inputs, the initial state with hasInitialState,
 * and where `segmentInput` (the backward) the segment states last when segmentTokens > 0.
 */
function checkLightningAttrs(op: string, a: OpAttrs["lightningAttention"], given: number, base: number, segmentInput = false): void {
  if (!Number.isInteger(a.blockSize) || a.blockSize < 1) argError(op, "blockSize", "a positive integer", String(a.blockSize));
  if (!["chunked", "recurrent", "quadratic"].includes(a.impl)) {
    argError(op, "impl", "'chunked', 'recurrent' or 'quadratic'", String(a.impl));
  }
  const L = a.segmentTokens;
  if (L !== undefined && !(Number.isInteger(L) && L >= 0 && L % 64 === 0)) argError(op, "segmentTokens", "a non-negative multiple of 64 (0: off)", String(L));
  const segments = segmentInput && (L ?? 0) > 0;
  const want = base + (a.hasInitialState ? 1 : 0) + (segments ? 1 : 0);
  if (given === want) return;
  if (segments) argError(op, "segmentStates", `${want} inputs (the segment states last, after ${a.hasInitialState ? "initialState" : "dFinalState"})`, `${given}`);
  argError(op, "initialState", `${want} inputs`, `${given}`);
}

/** The entries of the segment states for T tokens in segments of L: ⌈T/L⌉. */
const segmentCount = (T: number, L: number) => Math.ceil(T / L);

function checkAdamwAttrs(op: string, a: AdamwAttrs): void {
  const finite = (name: keyof AdamwAttrs, x: number, lowest: number, what: string) => {
    if (typeof x !== "number" || !Number.isFinite(x) || x < lowest) argError(op, name, what, String(x));
  };
  finite("lr", a.lr, 0, "a non-negative finite number");
  finite("eps", a.eps, 0, "a non-negative finite number");
  finite("weightDecay", a.weightDecay, 0, "a non-negative finite number");
  for (const name of ["beta1", "beta2"] as const) {
    if (typeof a[name] !== "number" || !(a[name] >= 0 && a[name] < 1)) argError(op, name, "a number in [0, 1)", String(a[name]));
  }
  if (!Number.isSafeInteger(a.step) || a.step < 1) argError(op, "step", "a positive integer (the step count t, from 1)", String(a.step));
  if (a.castTo !== undefined && a.castTo !== "bf16" && a.castTo !== "f16") argError(op, "castTo", "'bf16', 'f16' or nothing", String(a.castTo));
}

export const OP_SPECS: OpSpecTable = {
  ...(Object.fromEntries(UNARY_OPS.map((op) => [op, unary(op)])) as { [K in (typeof UNARY_OPS)[number]]: OpSpec<K> }),
  ...(Object.fromEntries(BINARY_OPS.map((op) => [op, binary(op)])) as { [K in (typeof BINARY_OPS)[number]]: OpSpec<K> }),
  ...(Object.fromEntries(COMPARE_OPS.map((op) => [op, binary(op, "u8")])) as {
    [K in (typeof COMPARE_OPS)[number]]: OpSpec<K>;
  }),
  ...(Object.fromEntries(REDUCE_OPS.map((op) => [op, reduce(op)])) as { [K in (typeof REDUCE_OPS)[number]]: OpSpec<K> }),

  where: {
    inputs: ["cond", "a", "b"],
    infer([c, a, b]) {
      requireDType("where", "cond", c, "u8");
      requireSameDType("where", "b", a, b);
      const ab = broadcastShapes("where", a.shape, b.shape);
      return [{ shape: broadcastShapes("where", ab, c.shape, "cond"), dtype: a.dtype }];
    },
  },
  argmax: {
    inputs: ["x"],
    infer([x], { axis, keepdims }) {
      checkAxis("argmax", axis, x.shape.length);
      if (x.shape[axis] === 0) argError("argmax", "x", "a non-empty axis", fmtShape(x.shape));
      return [{ shape: reducedShape(x.shape, [axis], keepdims), dtype: "i32" }];
    },
  },
  matmul: {
    inputs: ["a", "b"],
    infer([a, b], { transA, transB }) {
      if (a.shape.length < 2) argError("matmul", "a", "rank >= 2", `rank ${a.shape.length} ${fmtShape(a.shape)}`);
      if (b.shape.length < 2) argError("matmul", "b", "rank >= 2", `rank ${b.shape.length} ${fmtShape(b.shape)}`);
      requireFloat("matmul", "a", a);
      requireSameDType("matmul", "b", a, b);
      const { m, n, batch } = matmulDims(a.shape, b.shape, transA, transB);
      return [{ shape: [...batch, m, n], dtype: a.dtype }];
    },
  },
  reshape: {
    inputs: ["x"],
    infer([x], { shape }) {
      checkCreation("reshape", shape, x.dtype);
      if (sizeOf(shape) !== sizeOf(x.shape)) {
        argError("reshape", "shape", `a shape of ${sizeOf(x.shape)} elements (x is ${fmtShape(x.shape)})`, fmtShape(shape));
      }
      return [{ shape: [...shape], dtype: x.dtype }];
    },
  },
  permute: {
    inputs: ["x"],
    infer([x], { perm }) {
      const r = x.shape.length;
      const ok = perm.length === r && [...perm].sort((p, q) => p - q).every((p, i) => p === i);
      if (!ok) argError("permute", "perm", `a permutation of [0..${r - 1}]`, JSON.stringify(perm));
      return [{ shape: perm.map((p) => x.shape[p]), dtype: x.dtype }];
    },
  },
  slice: {
    inputs: ["x"],
    infer([x], { begin, end }) {
      const r = x.shape.length;
      if (begin.length !== r || end.length !== r) argError("slice", "begin", `${r} entries`, `${begin.length}`);
      const shape = x.shape.map((d, i) => {
        if (!(0 <= begin[i] && begin[i] <= end[i] && end[i] <= d)) {
          argError("slice", "begin", `0 <= begin <= end <= ${d} on axis ${i}`, `${begin[i]}..${end[i]}`);
        }
        return end[i] - begin[i];
      });
      return [{ shape, dtype: x.dtype }];
    },
  },
  pad: {
    inputs: ["x"],
    infer([x], { before, after }) {
      const r = x.shape.length;
      if (before.length !== r || after.length !== r) argError("pad", "before", `${r} entries`, `${before.length}`);
      const bad = [...before, ...after].find((p) => !Number.isInteger(p) || p < 0);
      if (bad !== undefined) argError("pad", "before", "non-negative integers", String(bad));
      return [{ shape: x.shape.map((d, i) => d + before[i] + after[i]), dtype: x.dtype }];
    },
  },
  concat: {
    inputs: ["xs..."],
    infer(xs, { axis }) {
      if (xs.length === 0) argError("concat", "xs", "at least one tensor", "none");
      const first = xs[0];
      checkAxis("concat", axis, first.shape.length);
      let total = 0;
      xs.forEach((x, j) => {
        requireSameDType("concat", `xs[${j}]`, first, x);
        const ok = x.shape.length === first.shape.length && x.shape.every((d, i) => i === axis || d === first.shape[i]);
        if (!ok) argError("concat", `xs[${j}]`, `shape ${fmtShape(first.shape)} except on axis ${axis}`, fmtShape(x.shape));
        total += x.shape[axis];
      });
      const shape = [...first.shape];
      shape[axis] = total;
      return [{ shape, dtype: first.dtype }];
    },
  },
  expand: {
    inputs: ["x"],
    infer([x], { shape }) {
      const r = shape.length;
      const fits = x.shape.length <= r && x.shape.every((d, i) => d === 1 || d === shape[r - x.shape.length + i]);
      if (!fits) {
        argError("expand", "x", `a shape broadcastable to ${fmtShape(shape)}`, fmtShape(x.shape));
      }
      return [{ shape: [...shape], dtype: x.dtype }];
    },
  },
  copy: { inputs: ["x"], infer: ([x]) => [{ shape: [...x.shape], dtype: x.dtype }] },
  copyTo: {
    inputs: ["x"],
    infer([x], { backend }) {
      const ok = typeof backend === "object" && backend !== null && typeof (backend as { allocate?: unknown }).allocate === "function";
      if (!ok) argError("copyTo", "backend", "a Backend", backend === null ? "null" : typeof backend);
      return [{ shape: [...x.shape], dtype: x.dtype }];
    },
  },
  cast: {
    inputs: ["x"],
    infer([x], { dtype }) {
      if (!isDType(dtype)) argError("cast", "dtype", "one of f32, f64, f16, bf16, i32, u8", String(dtype));
      return [{ shape: [...x.shape], dtype }];
    },
  },
  gather: {
    inputs: ["x", "indices"],
    infer([x, idx], { axis }) {
      checkAxis("gather", axis, x.shape.length);
      requireDType("gather", "indices", idx, "i32");
      const shape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
      return [{ shape, dtype: x.dtype }];
    },
  },
  scatterAdd: {
    inputs: ["updates", "indices"],
    infer([u, idx], { axis, size }) {
      requireDType("scatterAdd", "indices", idx, "i32");
      requireFloat("scatterAdd", "updates", u);
      const r = idx.shape.length;
      if (axis < 0 || axis + r > u.shape.length || idx.shape.some((d, i) => u.shape[axis + i] !== d)) {
        argError("scatterAdd", "updates", `dims ${fmtShape(idx.shape)} (the indices) starting at axis ${axis}`, fmtShape(u.shape));
      }
      if (!Number.isInteger(size) || size < 0) argError("scatterAdd", "size", "a non-negative integer", String(size));
      const shape = [...u.shape.slice(0, axis), size, ...u.shape.slice(axis + r)];
      return [{ shape, dtype: u.dtype }];
    },
  },
  embedding: {
    inputs: ["weight", "ids"],
    infer([w, ids]) {
      requireRank("embedding", "weight", w, 2);
      requireFloat("embedding", "weight", w);
      requireDType("embedding", "ids", ids, "i32");
      return [{ shape: [...ids.shape, w.shape[1]], dtype: w.dtype }];
    },
  },
  embeddingBackward: {
    inputs: ["dy", "ids"],
    infer([dy, ids], { vocabSize }) {
      requireFloat("embeddingBackward", "dy", dy);
      requireDType("embeddingBackward", "ids", ids, "i32");
      const M = dy.shape[dy.shape.length - 1];
      requireShape("embeddingBackward", "dy", dy, [...ids.shape, M]);
      return [{ shape: [vocabSize, M], dtype: dy.dtype }];
    },
  },
  softmax: {
    inputs: ["x"],
    infer([x], { axis }) {
      requireFloat("softmax", "x", x);
      checkAxis("softmax", axis, x.shape.length);
      return [{ shape: [...x.shape], dtype: x.dtype }];
    },
  },
  logSoftmax: {
    inputs: ["x"],
    infer([x], { axis }) {
      requireFloat("logSoftmax", "x", x);
      checkAxis("logSoftmax", axis, x.shape.length);
      return [{ shape: [...x.shape], dtype: x.dtype }];
    },
  },
  softmaxCrossEntropy: {
    inputs: ["logits", "labels"],
    infer([logits, labels]) {
      requireFloat("softmaxCrossEntropy", "logits", logits);
      requireRank("softmaxCrossEntropy", "logits", logits, 2);
      requireDType("softmaxCrossEntropy", "labels", labels, "i32");
      requireShape("softmaxCrossEntropy", "labels", labels, [logits.shape[0]]);
      return [{ shape: [logits.shape[0]], dtype: lossDType(logits.dtype) }];
    },
  },
  softmaxCrossEntropyBackward: {
    inputs: ["logits", "labels", "dloss"],
    infer([logits, labels, dloss]) {
      const op = "softmaxCrossEntropyBackward";
      requireFloat(op, "logits", logits);
      requireRank(op, "logits", logits, 2);
      requireDType(op, "labels", labels, "i32");
      requireShape(op, "labels", labels, [logits.shape[0]]);
      requireDType(op, "dloss", dloss, lossDType(logits.dtype));
      requireShape(op, "dloss", dloss, [logits.shape[0]]);
      return [{ shape: [...logits.shape], dtype: logits.dtype }];
    },
  },
  rmsNorm: {
    inputs: ["x"],
    infer([x], { eps }) {
      requireFloat("rmsNorm", "x", x);
      if (x.shape.length < 1) argError("rmsNorm", "x", "rank >= 1", "a scalar");
      checkEps("rmsNorm", eps);
      return [{ shape: [...x.shape], dtype: x.dtype }];
    },
  },
  rmsNormBackward: {
    inputs: ["x", "dy"],
    infer([x, dy], { eps }) {
      requireFloat("rmsNormBackward", "x", x);
      requireSameDType("rmsNormBackward", "dy", x, dy);
      requireShape("rmsNormBackward", "dy", dy, x.shape);
      checkEps("rmsNormBackward", eps);
      return [{ shape: [...x.shape], dtype: x.dtype }];
    },
  },
  siluBackward: {
    inputs: ["x", "dy"],
    infer([x, dy]) {
      requireFloat("siluBackward", "x", x);
      requireSameDType("siluBackward", "dy", x, dy);
      requireShape("siluBackward", "dy", dy, x.shape);
      return [{ shape: [...x.shape], dtype: x.dtype }];
    },
  },
  addRmsNorm: {
    inputs: ["x", "y"],
    infer([x, y], { eps }) {
      requireFloat("addRmsNorm", "x", x);
      if (x.shape.length < 1) argError("addRmsNorm", "x", "rank >= 1", "a scalar");
      requireSameDType("addRmsNorm", "y", x, y);
      requireShape("addRmsNorm", "y", y, x.shape);
      checkEps("addRmsNorm", eps);
      return [
        { shape: [...x.shape], dtype: x.dtype },
        { shape: [...x.shape], dtype: x.dtype },
      ];
    },
  },
  rmsNormGate: {
    inputs: ["o", "u"],
    infer([o, u], { eps }) {
      requireFloat("rmsNormGate", "o", o);
      if (o.shape.length < 1) argError("rmsNormGate", "o", "rank >= 1", "a scalar");
      requireSameDType("rmsNormGate", "u", o, u);
      requireShape("rmsNormGate", "u", u, o.shape);
      checkEps("rmsNormGate", eps);
      return [{ shape: [...o.shape], dtype: o.dtype }];
    },
  },
  fusedLinear: {
    inputs: ["x", "w"],
    optional: ["gate", "w2", "residual"],
    infer(inputs, attrs) {
      const op = "fusedLinear";
      const { norm, eps, gate, product, residual } = attrs;
      for (const flag of ["norm", "gate", "product", "residual"] as const) {
        if (typeof attrs[flag] !== "boolean") argError(op, flag, "a boolean", String(attrs[flag]));
      }
      if (gate && !norm) argError(op, "gate", "a gate only with norm (it multiplies the normed x)", "gate without norm");
      if (norm) checkEps(op, eps);
      const [x, w] = inputs;
      requireFloat(op, "x", x);
      requireRank(op, "x", x, 2);
      requireSameDType(op, "w", x, w);
      requireRank(op, "w", w, 2);
      const [R, K] = x.shape as [number, number];
      const N = w.shape[0];
      if (w.shape[1] !== K) argError(op, "w", `shape [N, ${K}] (x is ${fmtShape(x.shape)}: w holds a row of K = ${K} per output)`, fmtShape(w.shape));
      const extra: [string, Shape][] = [];
      if (gate) extra.push(["gate", [R, K]]);
      if (product) extra.push(["w2", [N, K]]);
      if (residual) extra.push(["residual", [R, N]]);
      if (inputs.length !== 2 + extra.length) {
        const want = extra.length === 0 ? "no input after w" : extra.map(([name]) => name).join(", ");
        argError(op, extra[0]?.[0] ?? "inputs", `${want} after x and w (from the flags gate, product, residual)`, `${inputs.length - 2} more inputs`);
      }
      extra.forEach(([name, shape], i) => {
        requireSameDType(op, name, x, inputs[2 + i]);
        requireShape(op, name, inputs[2 + i], shape);
      });
      return [{ shape: [R, N], dtype: x.dtype }];
    },
  },
  qkvuProjection: {
    inputs: ["x", "w"],
    optional: ["theta", "positions"],
    infer(inputs, attrs) {
      const op = "qkvuProjection";
      const [x, w, ...rest] = inputs;
      requireFloat(op, "x", x);
      requireRank(op, "x", x, 2);
      requireSameDType(op, "w", x, w);
      requireRank(op, "w", w, 2);
      if (w.shape[1] !== x.shape[1]) argError(op, "w", `shape [4·H·hd, ${x.shape[1]}] (x is ${fmtShape(x.shape)})`, fmtShape(w.shape));
      checkEps(op, attrs.eps);
      return inferSplit(op, "w", [x.shape[0], w.shape[0]], fmtShape(w.shape), "a row count", attrs, rest, x.dtype);
    },
  },
  decodeLayer: {
    inputs: ["h", "qkvu", "out", "l1", "l2", "l3", "state", "slopes"],
    optional: ["theta", "positions", "segments"],
    infer(inputs, attrs) {
      const op = "decodeLayer";
      const [h, qkvu, out, l1, l2, l3, state, slopes, ...more] = inputs;
      // theta and positions with lrpe, then segments where given.
      const segmented = more.length === (attrs.lrpe === true ? 3 : 1);
      const rest = segmented ? more.slice(0, -1) : more;
      requireFloat(op, "h", h);
      requireRank(op, "h", h, 2);
      const [B, M] = h.shape as [number, number];
      for (const [name, w] of [["qkvu", qkvu], ["out", out], ["l1", l1], ["l2", l2], ["l3", l3]] as const) {
        requireSameDType(op, name, h, w);
        requireRank(op, name, w, 2);
      }
      if (qkvu.shape[1] !== M) argError(op, "qkvu", `shape [4·H·hd, ${M}] (h is ${fmtShape(h.shape)})`, fmtShape(qkvu.shape));
      checkEps(op, attrs.eps);
      // The projection's checks and shapes: q, k [B, H, D], v [B, H, hd], u [B, H·hd].
      const [q, , v, u] = inferSplit(op, "qkvu", [B, qkvu.shape[0]], fmtShape(qkvu.shape), "a row count", attrs, rest, h.dtype);
      const [H, D] = q.shape.slice(1);
      const hd = v.shape[2];
      const hid = u.shape[1];
      const shaped = (name: string, t: TensorInfo, want: Shape, why: string) => {
        if (fmtShape(t.shape) !== fmtShape(want)) argError(op, name, `shape ${fmtShape(want)} (${why})`, fmtShape(t.shape));
      };
      shaped("out", out, [M, hid], `[M, H·hd]: M = ${M} from h, H·hd = ${H}·${hd} from qkvu`);
      const G = l1.shape[0];
      if (l1.shape[1] !== M) argError(op, "l1", `shape [G, ${M}] (h is ${fmtShape(h.shape)})`, fmtShape(l1.shape));
      shaped("l2", l2, [G, M], `as l1 ${fmtShape(l1.shape)}`);
      shaped("l3", l3, [M, G], `[M, G]: M = ${M} from h, G = ${G} from l1`);
      requireDType(op, "state", state, stateDType(h.dtype));
      const dWhy = attrs.lrpe ? `D = 2·hd = ${D} with LRPE` : `D = hd = ${D}`;
      const rows = segmented ? checkSegments(op, more[more.length - 1], state, B) : B;
      const rowsWhy = segmented ? `B = ${rows} from segments` : `B = ${B} from h`;
      shaped("state", state, [rows, H, D, hd], `[B, H, D, E]: ${rowsWhy}, H = ${H}, ${dWhy}, E = hd = ${hd}`);
      requireDType(op, "slopes", slopes, "f32");
      requireShape(op, "slopes", slopes, [H]);
      return [
        { shape: [B, M], dtype: h.dtype },
        { shape: [rows, H, D, hd], dtype: state.dtype },
      ];
    },
  },
  splitQkvu: {
    inputs: ["qkvu"],
    optional: ["theta", "positions"],
    infer(inputs, attrs) {
      const op = "splitQkvu";
      const [x, ...rest] = inputs;
      requireFloat(op, "qkvu", x);
      requireRank(op, "qkvu", x, 2);
      return inferSplit(op, "qkvu", x.shape as [number, number], fmtShape(x.shape), "a width", attrs, rest, x.dtype);
    },
  },
  fill: {
    inputs: [],
    infer(_, { shape, dtype, value }) {
      checkCreation("fill", shape, dtype);
      if (typeof value !== "number") argError("fill", "value", "a number", typeof value);
      return [{ shape: [...shape], dtype }];
    },
  },
  randomUniform: {
    inputs: [],
    infer(_, a) {
      checkRandom("randomUniform", a);
      if (!(a.low <= a.high)) argError("randomUniform", "high", `a number >= low (${a.low})`, String(a.high));
      return [{ shape: [...a.shape], dtype: a.dtype }];
    },
  },
  randomNormal: {
    inputs: [],
    infer(_, a) {
      checkRandom("randomNormal", a);
      if (!(a.std >= 0)) argError("randomNormal", "std", "a non-negative number", String(a.std));
      return [{ shape: [...a.shape], dtype: a.dtype }];
    },
  },
  lightningAttention: {
    inputs: ["q", "k", "v", "slopes"],
    optional: ["initialState"],
    infer(inputs, attrs) {
      const op = "lightningAttention";
      checkLightningAttrs(op, attrs, inputs.length, 4);
      const [q, k, v, slopes, s0] = inputs;
      const { B, H, T, D, E } = lightningShapes(op, q, k, v, slopes);
      if (s0) {
        requireDType(op, "initialState", s0, stateDType(q.dtype));
        requireShape(op, "initialState", s0, [B, H, D, E]);
      }
      const L = attrs.segmentTokens ?? 0;
      return [
        { shape: [B, H, T, E], dtype: q.dtype },
        { shape: [B, H, D, E], dtype: stateDType(q.dtype) },
        ...(L > 0 ? [{ shape: [B, H, segmentCount(T, L), D, E], dtype: stateDType(q.dtype) }] : []),
      ];
    },
  },
  lightningAttentionBackward: {
    inputs: ["q", "k", "v", "slopes", "dO", "dFinalState"],
    optional: ["initialState", "segmentStates"],
    present: (attrs) => [...(attrs?.hasInitialState ? ["initialState"] : []), ...((attrs?.segmentTokens ?? 0) > 0 ? ["segmentStates"] : [])],
    infer(inputs, attrs) {
      const op = "lightningAttentionBackward";
      checkLightningAttrs(op, attrs, inputs.length, 6, true);
      // Without an initial state the segment states are input 6: take each by the attributes.
      const [q, k, v, slopes, dO, dS] = inputs;
      const s0 = attrs.hasInitialState ? inputs[6] : undefined;
      const L = attrs.segmentTokens ?? 0;
      const segments = L > 0 ? inputs[inputs.length - 1] : undefined;
      const { B, H, T, D, E } = lightningShapes(op, q, k, v, slopes);
      requireSameDType(op, "dO", q, dO);
      requireShape(op, "dO", dO, [B, H, T, E]);
      requireDType(op, "dFinalState", dS, stateDType(q.dtype));
      requireShape(op, "dFinalState", dS, [B, H, D, E]);
      if (s0) {
        requireDType(op, "initialState", s0, stateDType(q.dtype));
        requireShape(op, "initialState", s0, [B, H, D, E]);
      }
      if (segments) {
        requireDType(op, "segmentStates", segments, stateDType(q.dtype));
        requireShape(op, "segmentStates", segments, [B, H, segmentCount(T, L), D, E]);
      }
      return [
        { shape: [B, H, T, D], dtype: q.dtype },
        { shape: [B, H, T, D], dtype: q.dtype },
        { shape: [B, H, T, E], dtype: q.dtype },
        { shape: [B, H, D, E], dtype: stateDType(q.dtype) },
      ];
    },
  },
  lightningState: {
    inputs: ["k", "v", "slopes"],
    infer(inputs, attrs) {
      const op = "lightningState";
      if (typeof attrs.reverse !== "boolean") argError(op, "reverse", "a boolean", String(attrs.reverse));
      const [k, v, slopes] = inputs;
      const { B, H, D, E } = lightningShapes(op, k, k, v, slopes, "k");
      return [{ shape: [B, H, D, E], dtype: stateDType(k.dtype) }];
    },
  },
  adamwUpdate: {
    inputs: ["param", "grad", "expAvg", "expAvgSq"],
    infer([p, g, m, v], attrs) {
      const op = "adamwUpdate";
      if (p.dtype !== "f32" && p.dtype !== "f64") argError(op, "param", "dtype f32 or f64 (a half-precision parameter is updated through its f32 master copy)", typeName(p));
      // The gradient of a half-precision parameter may come as it is: widening it to f32 is exact.
      const halfGrad = p.dtype === "f32" && (g.dtype === "bf16" || g.dtype === "f16");
      if (g.dtype !== p.dtype && !halfGrad) argError(op, "grad", `dtype ${p.dtype} (as param)${p.dtype === "f32" ? ", bf16 or f16" : ""}`, typeName(g));
      requireShape(op, "grad", g, p.shape);
      for (const [name, t] of [["expAvg", m], ["expAvgSq", v]] as const) {
        if (t.dtype !== p.dtype) argError(op, name, `dtype ${p.dtype} (as param)`, typeName(t));
        requireShape(op, name, t, p.shape);
      }
      checkAdamwAttrs(op, attrs);
      const out = { shape: [...p.shape], dtype: p.dtype };
      return [out, { ...out }, { ...out }, ...(attrs.castTo ? [{ shape: [...p.shape], dtype: attrs.castTo }] : [])];
    },
  },
  lightningStep: {
    inputs: ["q", "k", "v", "slopes", "state"],
    optional: ["segments"],
    infer([q, k, v, slopes, state, segments]) {
      const op = "lightningStep";
      requireFloat(op, "q", q);
      requireRank(op, "q", q, 3);
      const [N, H, D] = q.shape as [number, number, number];
      requireSameDType(op, "k", q, k);
      requireSameDType(op, "v", q, v);
      requireShape(op, "k", k, [N, H, D]);
      requireRank(op, "v", v, 3);
      if (v.shape[0] !== N || v.shape[1] !== H) argError(op, "v", `shape [${N}, ${H}, E]`, fmtShape(v.shape));
      const E = v.shape[2];
      requireDType(op, "slopes", slopes, "f32");
      requireShape(op, "slopes", slopes, [H]);
      requireDType(op, "state", state, stateDType(q.dtype));
      const B = segments ? checkSegments(op, segments, state, N) : N;
      requireShape(op, "state", state, [B, H, D, E]);
      return [
        { shape: [N, H, E], dtype: q.dtype },
        { shape: [B, H, D, E], dtype: stateDType(q.dtype) },
      ];
    },
  },
};
