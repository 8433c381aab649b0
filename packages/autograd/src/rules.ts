/**
 * Gradient rules: one entry per op of the tensor core, each either a rule or an explicit `nondiff`
 * / `constant` marker with its reason. The table is a mapped type over `OpName`, so adding an op to
 * the tensor core without deciding its gradient here is a compile error.
 *
 * Rules are written with ordinary ops, so they run on whatever backend holds the tensors; fused ops
 * call their backward ops. What each rule saves from the forward pass is its `saves` field (a rule
 * without one saves nothing): the tape retains exactly those tensors and releases them right after
 * the rule has run. Rules whose needs depend on which inputs want a gradient (mul, div, matmul)
 * compute `saves` from that, so that e.g. x·W differentiated in x alone keeps W but not x.
 *
 * Notation: g is the cotangent of the (first) output, x / a, b the inputs, y the output.
 */
import {
  add,
  type Backend,
  cast,
  copyTo,
  cos,
  div,
  embedding,
  embeddingBackward,
  equal,
  exp,
  expand,
  full,
  gather,
  lightningStateWeights,
  greater,
  less,
  log,
  matmul,
  mul,
  narrow,
  neg,
  type OpAttrs,
  type OpName,
  pad,
  permute,
  pow,
  reshape,
  rmsNorm,
  rmsNormBackward,
  siluBackward,
  runOp,
  scatterAdd,
  sign,
  sin,
  slice,
  softmaxCrossEntropyBackward,
  square,
  sub,
  sum,
  type Tensor,
  type TensorInfo,
  where,
} from "@lightning-ts/tensor";

/**
 * Which forward tensors a rule reads in its backward pass, by position. A position the recorded op
 * does not have (an optional input or output absent under its attributes) is skipped.
 */
export interface Saves {
  inputs?: readonly number[];
  outputs?: readonly number[];
}

export interface BackwardContext<K extends OpName> {
  readonly op: K;
  readonly attrs: OpAttrs[K];
  /** Shapes and dtypes of every input and output, known whether or not they were saved. */
  readonly inputs: readonly TensorInfo[];
  readonly outputs: readonly TensorInfo[];
  /** The backend of each input (where its gradient must live). */
  readonly backends: readonly Backend[];
  /** Which inputs need a gradient: float inputs that depend on the differentiated arguments. */
  readonly needs: readonly boolean[];
  /** Saved input `i`; throws if the rule's `saves` did not list it. */
  readonly x: (i: number) => Tensor;
  /** Saved output `i`; throws if the rule's `saves` did not list it. */
  readonly y: (i: number) => Tensor;
}

export interface GradRule<K extends OpName> {
  /** What to keep from the forward pass; a function when it depends on which inputs need gradients. */
  saves?: Saves | ((needs: readonly boolean[]) => Saves);
  /**
   * Gradients of the inputs from the cotangents of all outputs (zeros stand in for outputs that
   * received none). Entries for inputs that need no gradient may be null. The result is owned by
   * the tape; the rule must not dispose its arguments.
   */
  backward(g: readonly Tensor[], ctx: BackwardContext<K>): readonly (Tensor | null)[];
}

/**
 * An op without a rule. `constant` ops (comparisons, argmax, sign, creation) have zero or no
 * gradient: tracing simply stops at them. Other nondiff ops raise `reason` when a gradient reaches them.
 */
export interface Nondiff {
  readonly nondiff: string;
  readonly constant: boolean;
}

export type GradRuleTable = { [K in OpName]: GradRule<K> | Nondiff };

const constant = (reason: string): Nondiff => ({ nondiff: reason, constant: true });
const nondiff = (reason: string): Nondiff => ({ nondiff: reason, constant: false });

export function isNondiff(entry: GradRule<never> | Nondiff): entry is Nondiff {
  return "nondiff" in entry;
}

/**
 * Sums `g` over the axes that broadcasting added or stretched, back to `shape` (returns `g` itself
 * when the shapes already agree).
 *
 * @example
 * unbroadcast(ones([2, 3, 5]), [3, 1]); // [3, 1], every entry 10
 */
export function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  return reshape(sum(g, axes, true), shape);
}

/** A scalar of `like`'s dtype on its backend. */
const scalarLike = (like: Tensor, value: number) => full([], value, { dtype: like.dtype, backend: like.backend });

/** 0/1 mask of a comparison in `dtype` (u8 cannot enter arithmetic). */
const maskOf = (cond: Tensor, dtype: Tensor["dtype"]) => cast(cond, dtype);

/** Inputs that need a gradient, as a save list for rules that read the *other* operand. */
const saveOthers = (needs: readonly boolean[]): Saves => ({ inputs: [...(needs[1] ? [0] : []), ...(needs[0] ? [1] : [])] });

/** A reduction's cotangent put back in the input's rank (reduced axes of size 1) and broadcast. */
function expandReduced(g: Tensor, attrs: OpAttrs["sum"], shape: readonly number[]): Tensor {
  const kept = shape.map((d, i) => (attrs.axes.includes(i) ? 1 : d));
  return expand(attrs.keepdims ? g : reshape(g, kept), shape);
}

/** max / min: the cotangent goes to the elements equal to the result, split evenly among ties. */
const extremumRule: GradRule<"max" | "min"> = {
  saves: { inputs: [0], outputs: [0] },
  backward([g], { attrs, inputs, x, y }) {
    const shape = inputs[0].shape;
    const hit = maskOf(equal(x(0), expandReduced(y(0), attrs, shape)), g.dtype);
    const ties = expandReduced(sum(hit, attrs.axes, attrs.keepdims), attrs, shape);
    return [div(mul(hit, expandReduced(g, attrs, shape)), ties)];
  },
};

/** maximum / minimum: the cotangent goes to the chosen operand, half to each on ties. */
function pickRule(first: typeof greater): GradRule<"maximum" | "minimum"> {
  return {
    saves: { inputs: [0, 1] },
    backward([g], { inputs, x }) {
      const dt = g.dtype;
      const wa = add(maskOf(first(x(0), x(1)), dt), mul(maskOf(equal(x(0), x(1)), dt), 0.5));
      return [unbroadcast(mul(g, wa), inputs[0].shape), unbroadcast(mul(g, sub(1, wa)), inputs[1].shape)];
    },
  };
}

/**
 * The rule table, one entry per op.
 *
 * @example
 * isNondiff(GRAD_RULES.lightningStep); // true: "decode-only recurrent step: …"
 */
export const GRAD_RULES: GradRuleTable = {
  // Unary. Each rule saves whichever of x or y its derivative is cheapest in.
  neg: { backward: ([g]) => [neg(g)] },
  abs: { saves: { inputs: [0] }, backward: ([g], { x }) => [mul(g, sign(x(0)))] },
  exp: { saves: { outputs: [0] }, backward: ([g], { y }) => [mul(g, y(0))] },
  log: { saves: { inputs: [0] }, backward: ([g], { x }) => [div(g, x(0))] },
  sqrt: { saves: { outputs: [0] }, backward: ([g], { y }) => [div(g, mul(y(0), 2))] },
  // d/dx x^(-1/2) = -y³/2.
  rsqrt: { saves: { outputs: [0] }, backward: ([g], { y }) => [mul(g, mul(mul(square(y(0)), y(0)), -0.5))] },
  square: { saves: { inputs: [0] }, backward: ([g], { x }) => [mul(g, mul(x(0), 2))] },
  reciprocal: { saves: { outputs: [0] }, backward: ([g], { y }) => [neg(mul(g, square(y(0))))] },
  relu: { saves: { outputs: [0] }, backward: ([g], { y }) => [where(greater(y(0), 0), g, scalarLike(g, 0))] },
  // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))), one fused op.
  silu: { saves: { inputs: [0] }, backward: ([g], { x }) => [siluBackward(x(0), g)] },
  sigmoid: { saves: { outputs: [0] }, backward: ([g], { y }) => [mul(g, mul(y(0), sub(1, y(0))))] },
  tanh: { saves: { outputs: [0] }, backward: ([g], { y }) => [mul(g, sub(1, square(y(0))))] },
  cos: { saves: { inputs: [0] }, backward: ([g], { x }) => [neg(mul(g, sin(x(0))))] },
  sin: { saves: { inputs: [0] }, backward: ([g], { x }) => [mul(g, cos(x(0)))] },
  sign: constant("piecewise constant: its gradient is zero wherever it exists"),

  // Binary, broadcasting: every gradient is summed back to its operand's shape.
  add: { backward: ([g], { inputs }) => [unbroadcast(g, inputs[0].shape), unbroadcast(g, inputs[1].shape)] },
  sub: { backward: ([g], { inputs }) => [unbroadcast(g, inputs[0].shape), unbroadcast(neg(g), inputs[1].shape)] },
  // Saves b if a needs a gradient and a if b does.
  mul: {
    saves: saveOthers,
    backward: ([g], { inputs, needs, x }) => [
      needs[0] ? unbroadcast(mul(g, x(1)), inputs[0].shape) : null,
      needs[1] ? unbroadcast(mul(g, x(0)), inputs[1].shape) : null,
    ],
  },
  // d(a/b) = g/b for a and −(g/b)·(a/b) for b. Saves b, and a too when b needs a gradient.
  div: {
    saves: (needs) => ({ inputs: needs[1] ? [0, 1] : [1] }),
    backward([g], { inputs, needs, x }) {
      const q = div(g, x(1));
      return [unbroadcast(q, inputs[0].shape), needs[1] ? unbroadcast(neg(mul(q, div(x(0), x(1)))), inputs[1].shape) : null];
    },
  },
  // d(a^b) = b·a^(b−1) for a and a^b·log(a) for b, taken as 0 where a = 0 (as PyTorch does).
  pow: {
    saves: { inputs: [0, 1] },
    backward([g], { inputs, needs, x }) {
      const [a, b] = [x(0), x(1)];
      const da = needs[0] ? unbroadcast(mul(g, mul(b, pow(a, sub(b, 1)))), inputs[0].shape) : null;
      const db = needs[1]
        ? unbroadcast(where(equal(a, 0), scalarLike(g, 0), mul(g, mul(pow(a, b), log(a)))), inputs[1].shape)
        : null;
      return [da, db];
    },
  },
  maximum: pickRule(greater),
  minimum: pickRule(less),
  equal: constant("comparison: u8 result"),
  notEqual: constant("comparison: u8 result"),
  less: constant("comparison: u8 result"),
  lessEqual: constant("comparison: u8 result"),
  greater: constant("comparison: u8 result"),
  greaterEqual: constant("comparison: u8 result"),
  // where(cond, a, b): the condition (u8) gets nothing.
  where: {
    saves: { inputs: [0] },
    backward([g], { inputs, x }) {
      const zero = scalarLike(g, 0);
      return [null, unbroadcast(where(x(0), g, zero), inputs[1].shape), unbroadcast(where(x(0), zero, g), inputs[2].shape)];
    },
  },

  // Reductions.
  sum: { backward: ([g], { attrs, inputs }) => [expandReduced(g, attrs, inputs[0].shape)] },
  mean: {
    backward([g], { attrs, inputs }) {
      const shape = inputs[0].shape;
      const count = attrs.axes.reduce((n, a) => n * shape[a], 1);
      return [div(expandReduced(g, attrs, shape), count)];
    },
  },
  max: extremumRule,
  min: extremumRule,
  argmax: constant("integer result"),

  // C = op(A)·op(B): dop(A) = G·op(B)ᵀ, dop(B) = op(A)ᵀ·G, transposed back where an operand was
  // transposed, then summed over broadcast batch dims. Saves each operand the other one's gradient needs.
  matmul: {
    saves: saveOthers,
    backward([g], { attrs: { transA, transB }, inputs, needs, x }) {
      const da = !needs[0] ? null : transA ? matmul(x(1), g, { transA: transB, transB: true }) : matmul(g, x(1), { transB: !transB });
      const db = !needs[1] ? null : transB ? matmul(g, x(0), { transA: true, transB: transA }) : matmul(x(0), g, { transA: !transA });
      return [da && unbroadcast(da, inputs[0].shape), db && unbroadcast(db, inputs[1].shape)];
    },
  },

  // Movement: each rule is the adjoint movement; none saves anything.
  reshape: { backward: ([g], { inputs }) => [reshape(g, inputs[0].shape)] },
  permute: {
    backward([g], { attrs: { perm } }) {
      const inverse = new Array<number>(perm.length);
      perm.forEach((p, i) => (inverse[p] = i));
      return [permute(g, inverse)];
    },
  },
  slice: {
    backward: ([g], { attrs: { begin, end }, inputs }) => [
      pad(g, inputs[0].shape.map((d, i) => [begin[i], d - end[i]] as [number, number])),
    ],
  },
  pad: { backward: ([g], { attrs: { before }, inputs }) => [slice(g, before, inputs[0].shape.map((d, i) => before[i] + d))] },
  concat: {
    backward([g], { attrs: { axis }, inputs, needs }) {
      let start = 0;
      return inputs.map((info, i) => {
        const len = info.shape[axis];
        start += len;
        return needs[i] ? narrow(g, axis, start - len, len) : null;
      });
    },
  },
  expand: { backward: ([g], { inputs }) => [unbroadcast(g, inputs[0].shape)] },
  copy: { backward: ([g]) => [g] },
  copyTo: { backward: ([g], { backends }) => [copyTo(g, backends[0])] },
  cast: { backward: ([g], { inputs }) => [cast(g, inputs[0].dtype)] },

  // Indexing: gather and scatterAdd are each other's adjoints; both save the indices.
  gather: {
    saves: { inputs: [1] },
    backward: ([g], { attrs: { axis }, inputs, x }) => [scatterAdd(g, x(1), axis, inputs[0].shape[axis]), null],
  },
  scatterAdd: { saves: { inputs: [1] }, backward: ([g], { attrs: { axis }, x }) => [gather(g, x(1), axis), null] },

  // Fused ops: the backward ops of the tensor core. The backward ops themselves are nondiff.
  embedding: {
    saves: { inputs: [1] },
    backward: ([g], { inputs, x }) => [embeddingBackward(g, x(1), inputs[0].shape[0]), null],
  },
  // Linear in dy, with embedding as its adjoint.
  embeddingBackward: { saves: { inputs: [1] }, backward: ([g], { x }) => [embedding(g, x(1)), null] },
  // dx = y·(g − Σ g·y) along the axis.
  softmax: {
    saves: { outputs: [0] },
    backward: ([g], { attrs: { axis }, y }) => [mul(y(0), sub(g, sum(mul(g, y(0)), axis, true)))],
  },
  // dx = g − exp(y)·Σ g along the axis.
  logSoftmax: {
    saves: { outputs: [0] },
    backward: ([g], { attrs: { axis }, y }) => [sub(g, mul(exp(y(0)), sum(g, axis, true)))],
  },
  softmaxCrossEntropy: {
    saves: { inputs: [0, 1] },
    backward: ([g], { attrs, x }) => [softmaxCrossEntropyBackward(x(0), x(1), g, attrs), null],
  },
  softmaxCrossEntropyBackward: nondiff("a backward op: second derivatives of fused ops are not supported"),
  rmsNorm: { saves: { inputs: [0] }, backward: ([g], { attrs: { eps }, x }) => [rmsNormBackward(x(0), g, eps)] },
  rmsNormBackward: nondiff("a backward op: second derivatives of fused ops are not supported"),
  siluBackward: nondiff("a backward op: second derivatives of fused ops are not supported"),
  // s = x + y, n = rmsNorm(s): both inputs get gs + rmsNormBackward(s, gn).
  addRmsNorm: {
    saves: { outputs: [0] },
    backward([gs, gn], { attrs: { eps }, y }) {
      const d = add(gs, rmsNormBackward(y(0), gn, eps));
      return [d, d];
    },
  },
  // rmsNorm(o) ⊙ u: do = rmsNormBackward(o, g ⊙ u), du = g ⊙ rmsNorm(o) (recomputed, not saved).
  rmsNormGate: {
    saves: { inputs: [0, 1] },
    backward: ([g], { attrs: { eps }, needs, x }) => [
      needs[0] ? rmsNormBackward(x(0), mul(g, x(1)), eps) : null,
      needs[1] ? mul(g, rmsNorm(x(0), eps)) : null,
    ],
  },
  // y = r + (p·wᵀ) ⊙ (p·w2ᵀ) with p = rmsNorm(x) ⊙ gate: the rules of the chain it stands for,
  // p and the two products recomputed rather than saved (a decode op; this keeps it differentiable).
  fusedLinear: {
    saves: (needs) => ({ inputs: needs.map((_, i) => i) }),
    backward([g], { attrs: { norm, eps, gate, product, residual }, needs, x }) {
      let next = 2;
      const [gi, w2i, ri] = [gate, product, residual].map((on) => (on ? next++ : -1));
      const [x0, w] = [x(0), x(1)];
      const n = norm ? rmsNorm(x0, eps) : x0;
      const p = gate ? mul(n, x(gi)) : n;
      let d1 = g;
      let d2: Tensor | null = null;
      if (product) {
        d1 = mul(g, matmul(p, x(w2i), { transB: true }));
        d2 = mul(g, matmul(p, w, { transB: true }));
      }
      const grads: (Tensor | null)[] = new Array<Tensor | null>(next).fill(null);
      if (needs[1]) grads[1] = matmul(d1, p, { transA: true });
      if (d2 && needs[w2i]) grads[w2i] = matmul(d2, p, { transA: true });
      if (residual && needs[ri]) grads[ri] = g;
      if (needs[0] || (gate && needs[gi])) {
        const dp = d2 ? add(matmul(d1, w), matmul(d2, x(w2i))) : matmul(d1, w);
        if (gate && needs[gi]) grads[gi] = mul(dp, n);
        if (needs[0]) grads[0] = norm ? rmsNormBackward(x0, gate ? mul(dp, x(gi)) : dp, eps) : dp;
      }
      return grads;
    },
  },
  qkvuProjection: nondiff("decode-only projection and split of one token per row: train through the model's forward, which projects and splits with differentiable ops"),
  splitQkvu: nondiff("decode-only split of one token per row: train through the model's forward, which splits with differentiable ops"),
  decodeLayer: nondiff("decode-only layer of one token per row (projection, recurrent step, output and SGLU): train through the model's forward, which has a gradient"),

  fill: constant("creation op: no tensor inputs"),
  randomUniform: constant("creation op: no tensor inputs"),
  randomNormal: constant("creation op: no tensor inputs"),

  // (q, k, v, slopes[, initialState]) → (o, finalState[, segmentStates]); the backward op returns
  // dq, dk, dv and dInitialState. Slopes are fixed per head (TNL does not train them), so they get
  // no gradient. With segmentTokens the forward's segment states (output 2, which the op has only
  // then) go to the backward op as its last input, and a backend may read them instead of computing
  // them again. They are a cache of the forward, not a value to differentiate: lightningAttention()
  // never returns them, and a cotangent that reaches them is dropped.
  lightningAttention: {
    saves: (needs) => ({ inputs: needs.map((_, i) => i), outputs: [2] }),
    backward([dO, dFinal], { attrs, needs, x, y }) {
      if (needs[3]) throw new Error("lightningAttention: no gradient for slopes (they are fixed per head); pass them as a constant");
      const s0 = attrs.hasInitialState ? [x(4)] : [];
      const segments = (attrs.segmentTokens ?? 0) > 0 ? [y(2)] : [];
      const [dq, dk, dv, dS0] = runOp("lightningAttentionBackward", [x(0), x(1), x(2), x(3), dO, dFinal, ...s0, ...segments], attrs);
      return [dq, dk, dv, null, ...(attrs.hasInitialState ? [dS0] : [])];
    },
  },
  lightningAttentionBackward: nondiff("a backward op: second derivatives of fused ops are not supported"),
  // S = Σ_t w_t k_tᵀ v_t: dk_t = w_t v_t dSᵀ, dv_t = w_t k_t dS (in the state dtype, then k's).
  lightningState: {
    saves: (needs) => ({ inputs: [needs[0] ? 1 : -1, needs[1] ? 0 : -1, 2].filter((i) => i >= 0) }),
    backward([g], { attrs, needs, x }) {
      if (needs[2]) throw new Error("lightningState: no gradient for slopes (they are fixed per head); pass them as a constant");
      // k and v share a dtype; only the one the other's gradient reads was saved.
      const saved = needs[0] ? x(1) : x(0);
      const sdt = g.dtype;
      const inState = (t: Tensor) => (t.dtype === sdt ? t : cast(t, sdt));
      const stored = (t: Tensor) => (t.dtype === saved.dtype ? t : cast(t, saved.dtype));
      const w = lightningStateWeights(x(2), saved.shape[2], attrs.reverse, sdt); // [1, H, T, 1]
      const dk = needs[0] ? stored(mul(matmul(inState(x(1)), g, { transB: true }), w)) : null;
      const dv = needs[1] ? stored(mul(matmul(inState(x(0)), g), w)) : null;
      return [dk, dv, null];
    },
  },
  lightningStep: nondiff("decode-only recurrent step: train through lightningAttention, which has a gradient"),

  adamwUpdate: nondiff("an optimizer update: it applies gradients, and gradients through it (hypergradients) are not supported"),
};
