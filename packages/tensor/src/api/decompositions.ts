/**
 * Composite ops written from primitives, once, for every backend. A backend whose kernel table
 * leaves out one of `COMPOSITE_OPS` gets this decomposition instead, run by the engine on that same
 * backend; autograd still sees the composite op (and its rule), never the primitives inside.
 *
 * Precision follows the fused kernels: f16/bf16 inputs are computed in f32 (f64 stays f64) and
 * rounded once at the end; softmaxes subtract the row maximum before exp.
 *
 * Letters: N rows, V classes (vocabulary).
 */
import type { DType } from "../dtype.js";
import { argError, OpArgumentError } from "../errors.js";
import type { CompositeOpName, OpAttrs } from "../ops/attrs.js";
import type { Tensor } from "../tensor.js";
import { runOp } from "../engine.js";
import { fusedLinear, qkvActivation, qkvuProjection, rmsNormGate, splitQkvu } from "./decode.js";
import { lightningStateWeights } from "./lightning.js";
import {
  adamwScalars,
  add,
  arange,
  cast,
  concat,
  cos,
  div,
  equal,
  exp,
  full,
  gather,
  log,
  matmul,
  max,
  mean,
  mul,
  narrow,
  neg,
  notEqual,
  reciprocal,
  reshape,
  rmsNorm,
  rsqrt,
  scatterAdd,
  sin,
  sqrt,
  square,
  sub,
  sum,
  where,
} from "./ops.js";

/**
 * Computes op `K` from primitives; inputs and attributes have passed the op's spec. `into` holds
 * runOp's checked targets of the outputs (when given): a decomposition may write an output there
 * itself, and the engine copies every other placed output over its target afterwards.
 */
export type Decomposition<K extends CompositeOpName> = (inputs: readonly Tensor[], attrs: OpAttrs[K], into?: readonly (Tensor | undefined)[]) => Tensor[];
export type DecompositionTable = { [K in CompositeOpName]: Decomposition<K> };

/** Tokens per product of `lightningState`'s decomposition over a long span. */
const STATE_CHUNK = 1024;

/** f32 for the 16-bit storage types and f32, f64 for f64. */
const computeDType = (dtype: DType): DType => (dtype === "f64" ? "f64" : "f32");
const to = (x: Tensor, dtype: DType): Tensor => (x.dtype === dtype ? x : cast(x, dtype));

/** `fn(x in its compute dtype)`, rounded back to x's dtype. */
const inCompute = (x: Tensor, fn: (xc: Tensor) => Tensor): Tensor => to(fn(to(x, computeDType(x.dtype))), x.dtype);

const scalarOf = (like: Tensor, value: number, dtype: DType = like.dtype) => full([], value, { dtype, backend: like.backend });

/** Maximum along `axis`, kept; −∞ for an empty axis (where `max` has no value to give). */
function rowMax(x: Tensor, axis: number): Tensor {
  if (x.shape[axis] !== 0) return max(x, axis, true);
  return full(x.shape.map((d, i) => (i === axis ? 1 : d)), -Infinity, { dtype: x.dtype, backend: x.backend });
}

/** Softmax or log-softmax along `axis`. */
function softmaxOf(x: Tensor, axis: number, logOf: boolean): Tensor {
  const z = sub(x, rowMax(x, axis));
  const e = exp(z);
  const s = sum(e, axis, true);
  return logOf ? sub(z, log(s)) : div(e, s);
}

/** Runs `fn`; an index error of the primitive inside is reported as an error of `op`'s argument `arg`. */
function indexErrorsAs<T>(op: string, arg: string, fn: () => T, allowed = (expected: string) => expected): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof OpArgumentError && err.argument === "indices") argError(op, arg, allowed(err.expected), err.received);
    throw err;
  }
}

/**
 * labels i32 [N] → `valid` u8 [N] (label ≠ ignoreIndex) and `onehot` u8 [N, V]. Labels outside
 * [0, V) on valid rows are an error, found by gathering them from [0, V).
 */
function labelMasks(op: string, labels: Tensor, V: number, ignoreIndex: number): { valid: Tensor; onehot: Tensor } {
  const valid = notEqual(labels, ignoreIndex);
  const classes = arange(V, undefined, 1, { backend: labels.backend });
  const safe = where(valid, labels, scalarOf(labels, 0));
  const checked = indexErrorsAs(op, "labels", () => gather(classes, safe, 0), (e) => `${e} or ${ignoreIndex} (ignoreIndex)`);
  const onehot = equal(reshape(checked, [labels.size, 1]), reshape(classes, [1, V]));
  return { valid, onehot };
}


/**
 * LRPE of one token per row, in the ops and roundings of the model's `lrpe`: a [B, H, hd] →
 * [a ⊙ cos(θp), a ⊙ sin(θp)] [B, H, 2·hd], the phases θp in positions' dtype (f32 or f64) and
 * rounded to a's dtype before the products.
 */
function lrpeRows(a: Tensor, theta: Tensor, positions: Tensor): Tensor {
  const [B, H, hd] = a.shape as [number, number, number];
  const angle = mul(reshape(to(theta, positions.dtype), [1, H, hd]), reshape(positions, [B, 1, 1]));
  return concat([mul(a, to(cos(angle), a.dtype)), mul(a, to(sin(angle), a.dtype))], -1);
}

/**
 * The decompositions, one per composite op (a missing one is a compile error).
 *
 * @example
 * const [y] = DECOMPOSITIONS.softmax([x], { axis: 1 }); // what the engine runs without a softmax kernel
 */
export const DECOMPOSITIONS: DecompositionTable = {
  // σ(x) = 1 / (1 + e^−x); silu(x) = x·σ(x) = x / (1 + e^−x).
  sigmoid: ([x]) => [inCompute(x, (xc) => reciprocal(add(exp(neg(xc)), 1)))],
  silu: ([x]) => [inCompute(x, (xc) => div(xc, add(exp(neg(xc)), 1)))],
  // d/dx silu(x) = σ(x)·(1 + x·(1 − σ(x))), times dy; in the compute dtype, rounded once.
  siluBackward([x, dy]) {
    const c = computeDType(x.dtype);
    const xc = to(x, c);
    const s = reciprocal(add(exp(neg(xc)), 1));
    return [to(mul(to(dy, c), mul(s, add(mul(xc, sub(1, s)), 1))), x.dtype)];
  },
  softmax: ([x], { axis }) => [inCompute(x, (xc) => softmaxOf(xc, axis, false))],
  logSoftmax: ([x], { axis }) => [inCompute(x, (xc) => softmaxOf(xc, axis, true))],

  // logits [N, V], labels [N] → loss [N] = logsumexp(z) − z[label] with z = logits − max, 0 on ignored rows.
  softmaxCrossEntropy([logits, labels], { ignoreIndex }) {
    const [, V] = logits.shape as [number, number];
    const x = to(logits, computeDType(logits.dtype));
    const { valid, onehot } = labelMasks("softmaxCrossEntropy", labels, V, ignoreIndex);
    const zero = scalarOf(x, 0);
    const z = sub(x, rowMax(x, 1));
    const picked = sum(where(onehot, z, zero), 1);
    return [where(valid, sub(log(sum(exp(z), 1)), picked), zero)];
  },
  // dlogits [N, V] = (softmax(logits) − onehot(label)) · dloss, 0 on ignored rows.
  softmaxCrossEntropyBackward([logits, labels, dloss], { ignoreIndex }) {
    const [N, V] = logits.shape as [number, number];
    const c = computeDType(logits.dtype);
    const { valid, onehot } = labelMasks("softmaxCrossEntropyBackward", labels, V, ignoreIndex);
    const p = softmaxOf(to(logits, c), 1, false);
    const g = reshape(where(valid, to(dloss, c), scalarOf(dloss, 0, c)), [N, 1]);
    return [to(mul(sub(p, cast(onehot, c)), g), logits.dtype)];
  },

  // y = x·r with r = 1/√(mean(x²) + eps) over the last axis.
  rmsNorm: ([x], { eps }) => [inCompute(x, (xc) => mul(xc, rsqrt(add(mean(square(xc), -1, true), eps))))],

  // weight [V, M], ids [...] → [..., M]: rows of the weight.
  embedding: ([w, ids]) => [indexErrorsAs("embedding", "ids", () => gather(w, ids, 0))],
  // dy [..., M], ids [...] → dweight [V, M]: rows added up by id.
  embeddingBackward: ([dy, ids], { vocabSize }) => [indexErrorsAs("embeddingBackward", "ids", () => scatterAdd(dy, ids, 0, vocabSize))],

  addRmsNorm([x, y], { eps }) {
    const s = add(x, y);
    return [s, rmsNorm(s, eps)];
  },
  rmsNormGate: ([o, u], { eps }) => [mul(rmsNorm(o, eps), u)],
  // qkvu [B, 4·hid] → q, k [B, H, D], v [B, H, hd], u [B, hid]: narrows of the four blocks.
  splitQkvu([x, theta, positions], { heads: H, activation, lrpe }) {
    const [B, W] = x.shape as [number, number];
    const hid = W / 4;
    const block = (i: number) => narrow(x, 1, i * hid, hid);
    const [q, k] = [0, 1].map((i) => {
      const a = qkvActivation(reshape(block(i), [B, H, hid / H]), activation);
      return lrpe ? lrpeRows(a, theta, positions) : a;
    });
    return [q, k, reshape(block(2), [B, H, hid / H]), block(3)];
  },

  // x [R, K], w [N, K] (+ gate [R, K], w2 [N, K], residual [R, N]) → [R, N], as the model's chain
  // of ops: rmsNorm, mul by the gate, matmul(s) with transB, mul of the two products, residual add.
  // Each op rounds to the storage dtype, so a 16-bit chain rounds the normed x, the gated x, each
  // product, the product of the two and the sum. A fused kernel rounds the normed and gated x as
  // here (the products read them as stored) but the output once, from f32: with a second weight or
  // a residual it differs from this chain by the roundings it skips: each moves an operand by up
  // to half its ulp, so y is often an ulp away (and closer to the exact value); in f32 and f64 the
  // two agree up to summation order.
  fusedLinear(inputs, { norm, eps, gate, product, residual }) {
    const [x, w, ...rest] = inputs;
    let i = 0;
    const g = gate ? rest[i++] : undefined;
    const w2 = product ? rest[i++] : undefined;
    const r = residual ? rest[i++] : undefined;
    // The gated norm as one op (the same bits as rmsNorm then mul: one kernel fewer where it has one).
    const xn = norm ? (g ? rmsNormGate(x, g, eps) : rmsNorm(x, eps)) : x;
    let y = matmul(xn, w, { transB: true });
    if (w2) y = mul(y, matmul(xn, w2, { transB: true }));
    if (r) y = add(r, y);
    return [y];
  },

  // The projection normed as fusedLinear norms it, then split as splitQkvu splits it.
  qkvuProjection([x, w, theta, positions], { eps, heads, activation, lrpe }) {
    const { q, k, v, u } = splitQkvu(fusedLinear(x, w, { norm: { eps } }), { heads, activation, ...(lrpe ? { theta, positions } : {}) });
    return [q, k, v, u];
  },

  // The decode step's layer as it ran before the op, five ops in this order and with these options
  // (so its bits are theirs). A new state placed over the old one (decodeLayer's inPlace) is
  // written by lightningStep in place, as the step wrote it.
  decodeLayer([h, qkvu, out, l1, l2, l3, state, slopes, ...more], { heads, activation, lrpe, eps }, into) {
    const B = h.shape[0];
    const [theta, positions] = lrpe ? more : [];
    const segments = more[lrpe ? 2 : 0];
    const { q, k, v, u } = qkvuProjection(h, qkvu, { heads, activation, eps, ...(lrpe ? { theta, positions } : {}) });
    const step = segments ? [q, k, v, slopes, state, segments] : [q, k, v, slopes, state];
    const [o, next] = runOp("lightningStep", step, {}, undefined, into?.[1] ? { into: [undefined, into[1]] } : undefined);
    const h1 = fusedLinear(reshape(o, [B, u.shape[1]]), out, { norm: { eps, gate: u }, residual: h });
    const g = fusedLinear(h1, l1, { norm: { eps }, second: l2 });
    return [fusedLinear(g, l3, { residual: h1 }), next];
  },

  // Σ_t w_t k_tᵀ v_t as matmuls of the weighted keys with the values: one per head, or, for a long
  // span, one per STATE_CHUNK tokens summed in the state dtype (a D×E product with a T-long inner
  // loop is only B·H output tiles, too few to fill a GPU). The weights are made in the state dtype
  // and k·w rounded to k's dtype, as the chunked kernel rounds its decayed keys.
  lightningState([k, v, slopes], { reverse }) {
    const [B, H, T, D] = k.shape;
    const E = v.shape[3];
    const sdt = computeDType(k.dtype);
    const w = lightningStateWeights(slopes, T, reverse, sdt);
    const kw = to(to(mul(to(k, sdt), w), k.dtype), sdt);
    const vs = to(v, sdt);
    if (T <= STATE_CHUNK || T % STATE_CHUNK !== 0) return [matmul(kw, vs, { transA: true })];
    const c = T / STATE_CHUNK;
    const parts = matmul(reshape(kw, [B, H, c, STATE_CHUNK, D]), reshape(vs, [B, H, c, STATE_CHUNK, E]), { transA: true }); // [B, H, c, D, E]
    return [sum(parts, 2)];
  },

  // AdamW in the ops and order of optim/adamw.ts, so CPU results are what they were before the fused op.
  adamwUpdate([p, grad, m0, v0], attrs) {
    const k = adamwScalars(attrs);
    const g = to(grad, p.dtype);
    const m = add(mul(m0, k.beta1), mul(g, k.oneMinusBeta1));
    const v = add(mul(v0, k.beta2), mul(square(g), k.oneMinusBeta2));
    const decayed = attrs.weightDecay !== 0 ? mul(p, k.decay) : p;
    const denom = add(div(sqrt(v), k.sqrtCorrection2), k.eps);
    const param = sub(decayed, mul(div(m, denom), k.stepSize));
    return [param, m, v, ...(attrs.castTo ? [cast(param, attrs.castTo)] : [])];
  },
};
