/**
 * Fused ops of a decode step (one token per row) of TNL: each replaces a short chain of small ops
 * that a GPU would run as as many kernels. They are composite ops (api/decompositions.ts): a
 * backend without a kernel for one runs that chain, so every backend gives what the chain gives.
 *
 * Letters: B rows, H heads, hd head dim, hid = H·hd, M width, G the SGLU width, D q/k head dim
 * (hd, or 2·hd with LRPE), E value head dim (= hd).
 */
import { argError } from "../errors.js";
import { type QkvActivation, QKV_ACTIVATIONS, type QkvuProjectionAttrs } from "../ops/attrs.js";
import { run1, runOp } from "../engine.js";
import { Tensor } from "../tensor.js";
import { add, exp, minimum, relu, silu } from "./ops.js";

/**
 * φ of TNL's token mixer, applied to q and k: the activation `splitQkvu` fuses, as the ops it
 * stands for (1 + elu(x) = relu(x) + exp(min(x, 0)): x + 1 above zero, eˣ below).
 *
 * @example
 * const q = qkvActivation(q0, "silu");
 */
export function qkvActivation(x: Tensor, act: QkvActivation): Tensor {
  switch (act) {
    case "silu":
      return silu(x);
    case "relu":
      return relu(x);
    case "1+elu":
      return add(relu(x), exp(minimum(x, 0)));
    case "none":
      return x;
  }
}

/**
 * The residual add and the SRMSNorm after it in one pass: s = x + y and n = rmsNorm(s, eps), both
 * in x's dtype (y must match x in shape and dtype).
 *
 * @example
 * const { sum: x1, normed } = addRmsNorm(x, attentionOut); // x1 = x + out; normed = srms(x1)
 */
export function addRmsNorm(x: Tensor, y: Tensor, eps = 1e-6): { sum: Tensor; normed: Tensor } {
  const [s, n] = runOp("addRmsNorm", [x, y], { eps });
  return { sum: s, normed: n };
}

/**
 * rmsNorm(o, eps) ⊙ u over the last axis: TNL's joint SRMSNorm of the heads' outputs and its
 * linear gate u (no sigmoid). o and u share shape and dtype.
 *
 * @example
 * const gated = rmsNormGate(o, u); // [B, hid]
 */
export function rmsNormGate(o: Tensor, u: Tensor, eps = 1e-6): Tensor {
  return run1("rmsNormGate", [o, u], { eps });
}

export interface SplitQkvuOptions {
  /** H; qkvu's width must be 4·H·hd. */
  heads: number;
  /** φ applied to q and k (default "silu"; "swish" is the same). */
  activation?: QkvActivation | "swish";
  /** LRPE θ [H, hd]: with it, q and k are [a ⊙ cos(θp), a ⊙ sin(θp)] for a = φ(q), φ(k). */
  theta?: Tensor;
  /** Each row's position p, [B], f32 (f64 for an f64 θ); required with `theta`. */
  positions?: Tensor;
}

/**
 * TNL's fused q/k/v/u projection of one token per row, qkvu [B, 4·hid], split into the tensors
 * the decode step reads: q, k [B, H, D] (activated, D = hd, or 2·hd with LRPE), v [B, H, hd] and
 * u [B, hid], each contiguous. The positions are a tensor so that a recorded decode step reads
 * the positions written before each replay.
 *
 * @example
 * const { q, k, v, u } = splitQkvu(qkvu, { heads: 8, theta, positions });
 */
export function splitQkvu(qkvu: Tensor, options: SplitQkvuOptions): { q: Tensor; k: Tensor; v: Tensor; u: Tensor } {
  if (options === null || typeof options !== "object") argError("splitQkvu", "options", "an object { heads, activation?, theta?, positions? }", String(options));
  const given = options.activation ?? "silu";
  const activation = given === "swish" ? "silu" : given;
  if (!(QKV_ACTIVATIONS as readonly string[]).includes(activation)) {
    argError("splitQkvu", "options.activation", `one of ${[...QKV_ACTIVATIONS, "swish"].map((a) => `'${a}'`).join(", ")}`, String(given));
  }
  const { theta, positions } = options;
  if ((theta === undefined) !== (positions === undefined)) {
    argError("splitQkvu", theta ? "options.positions" : "options.theta", "theta and positions together (or neither)", theta ? "theta alone" : "positions alone");
  }
  const lrpe = theta !== undefined;
  const [q, k, v, u] = runOp("splitQkvu", lrpe ? [qkvu, theta, positions!] : [qkvu], { heads: options.heads, activation, lrpe });
  return { q, k, v, u };
}

export interface FusedLinearOptions {
  /** SRMSNorm of each row of x before the product (no weight), times `gate` [R, K] when given. */
  norm?: { eps?: number; gate?: Tensor };
  /** W2 [N, K]: y is (p(x)·wᵀ) ⊙ (p(x)·W2ᵀ), the two products of a GLU without activation. */
  second?: Tensor;
  /** [R, N], added to y: a residual stream. */
  residual?: Tensor;
}

/**
 * A linear layer of one token per row with the ops around it in a decode step folded in:
 *
 *   y [R, N] = residual + (p(x)·wᵀ) ⊙ (p(x)·W2ᵀ),   p(x) = rmsNorm(x, eps) ⊙ gate
 *
 * each part present only when its option is (x [R, K], w [N, K]: the layout of the model's
 * `linear`). The value is the chain rmsNorm → mul → matmul(s) → mul → add; a GPU kernel for it
 * reads x once per block and norms it there, then adds or multiplies in the epilogue. Rounding:
 * the norm is computed in f32 (f64 for f64) from x as stored and the normed (and gated) x rounded
 * to x's dtype before the product, as the chain stores it; products are accumulated in f32; the
 * decomposition then rounds each product, their product and the sum as the chain does, where a
 * fused kernel adds the residual and multiplies the two products in f32 and rounds y once (see
 * api/decompositions.ts). Autograd differentiates it by the rules of that chain.
 *
 * @example
 * const qkvu = fusedLinear(h, wQkvu, { norm: {} });                            // srms(h)·Wᵀ
 * const h1 = fusedLinear(o, wOut, { norm: { gate: u }, residual: h });          // h + (srms(o) ⊙ u)·Woutᵀ
 * const g = fusedLinear(h1, w1, { norm: {}, second: w2 });                      // (srms(h1)·W1ᵀ) ⊙ (srms(h1)·W2ᵀ)
 * const h2 = fusedLinear(g, w3, { residual: h1 });                              // h1 + g·W3ᵀ
 */
export function fusedLinear(x: Tensor, w: Tensor, options: FusedLinearOptions = {}): Tensor {
  const op = "fusedLinear";
  if (options === null || typeof options !== "object") argError(op, "options", "an object { norm?, second?, residual? }", String(options));
  const { norm, second, residual } = options;
  if (norm !== undefined && (norm === null || typeof norm !== "object")) argError(op, "options.norm", "an object { eps?, gate? }", String(norm));
  const eps = norm?.eps ?? 1e-6;
  if (typeof eps !== "number") argError(op, "options.norm.eps", "a number", typeof eps);
  const extra: [string, Tensor | undefined][] = [
    ["options.norm.gate", norm?.gate],
    ["options.second", second],
    ["options.residual", residual],
  ];
  for (const [name, t] of extra) if (t !== undefined && !(t instanceof Tensor)) argError(op, name, "a Tensor", t === null ? "null" : typeof t);
  const attrs = { norm: norm !== undefined, eps, gate: norm?.gate !== undefined, product: second !== undefined, residual: residual !== undefined };
  return run1(op, [x, w, ...extra.flatMap(([, t]) => (t ? [t] : []))], attrs);
}

export interface QkvuProjectionOptions extends SplitQkvuOptions {
  /** The SRMSNorm's ε (default 1e-6). */
  eps?: number;
}

/**
 * TNL's q/k/v/u projection of one token per row, from the residual stream x [B, M] as it is:
 * splitQkvu(rmsNorm(x, eps) · wᵀ) for w [4·H·hd, M], the two composite ops in one (a GPU runs the
 * split as the projection's epilogue). The values are those of fusedLinear then splitQkvu.
 *
 * @example
 * const { q, k, v, u } = qkvuProjection(h, wQkvu, { heads: 8, theta, positions });
 */
export function qkvuProjection(x: Tensor, w: Tensor, options: QkvuProjectionOptions): { q: Tensor; k: Tensor; v: Tensor; u: Tensor } {
  const op = "qkvuProjection";
  if (options === null || typeof options !== "object") argError(op, "options", "an object { heads, eps?, activation?, theta?, positions? }", String(options));
  const { attrs, rope } = projectionAttrs(op, options);
  const [q, k, v, u] = runOp(op, [x, w, ...rope], attrs);
  return { q, k, v, u };
}

/** The checked attributes of qkvuProjection's options (and decodeLayer's), and its LRPE inputs. */
function projectionAttrs(op: string, options: QkvuProjectionOptions): { attrs: QkvuProjectionAttrs; rope: Tensor[] } {
  const given = options.activation ?? "silu";
  const activation = given === "swish" ? "silu" : given;
  if (!(QKV_ACTIVATIONS as readonly string[]).includes(activation)) {
    argError(op, "options.activation", `one of ${[...QKV_ACTIVATIONS, "swish"].map((a) => `'${a}'`).join(", ")}`, String(given));
  }
  const { theta, positions } = options;
  if ((theta === undefined) !== (positions === undefined)) {
    argError(op, theta ? "options.positions" : "options.theta", "theta and positions together (or neither)", theta ? "theta alone" : "positions alone");
  }
  const eps = options.eps ?? 1e-6;
  if (typeof eps !== "number") argError(op, "options.eps", "a number", typeof eps);
  const lrpe = theta !== undefined;
  return { attrs: { heads: options.heads, activation, lrpe, eps }, rope: lrpe ? [theta, positions!] : [] };
}

/** A TNL layer's weights, as the model holds them (each [rows, columns] of `linear`'s layout). */
export interface DecodeLayerWeights {
  /** [4·H·hd, M]: the q, k, v and u projections stacked. */
  qkvu: Tensor;
  /** [M, H·hd]: the token mixer's output projection. */
  out: Tensor;
  /** [G, M] and [G, M]: the two halves of the SGLU. */
  l1: Tensor;
  l2: Tensor;
  /** [M, G]: the SGLU's output projection. */
  l3: Tensor;
}

export interface DecodeLayerOptions extends QkvuProjectionOptions {
  /**
   * Write the next state over `state`'s storage instead of new storage (default false), as
   * lightningStep's inPlace does: the returned state is a new handle to that storage. Not
   * differentiable (nor is the op).
   */
  inPlace?: boolean;
  /**
   * Prompt segments, as lightningStep takes them: i32 [S + 1] for a state of S ≤ B rows; h's rows
   * are then tokens (row b < S the last token of state row b, the others earlier tokens after
   * them), every op but the step works row by row, and positions are per token row.
   */
  segments?: Tensor;
}

/**
 * A whole TNL layer of a decode step (one token per row, docs/ALGORITHM.md E.2–E.4) on the residual
 * stream h [B, M] as it is, and the Lightning state [B, H, D, E] (f32, f64 for f64) it carries:
 *
 *   q, k, v, u = qkvuProjection(h, qkvu);          S' = λS + kᵀv, o = qS'   (lightningStep)
 *   h1 = h + (srms(o) ⊙ u)·outᵀ;   g = (srms(h1)·l1ᵀ) ⊙ (srms(h1)·l2ᵀ);   h2 = h1 + g·l3ᵀ
 *
 * Its value is that chain of five ops (qkvuProjection, lightningStep, three fusedLinear), which is
 * how a backend without a kernel for the op runs it; a GPU backend may run it as one kernel, to
 * save the launches between the five at batch 1. slopes are the layer's f32 [H]; theta [H, hd] and
 * positions [B] as qkvuProjection takes them (LRPE, then D = 2·hd). A decode step needs no
 * gradient, and autograd refuses one.
 *
 * @example
 * const { h: h2, state: next } = decodeLayer(h, { qkvu, out, l1, l2, l3 }, state, slopes, { heads: 8, inPlace: true });
 */
export function decodeLayer(h: Tensor, weights: DecodeLayerWeights, state: Tensor, slopes: Tensor, options: DecodeLayerOptions): { h: Tensor; state: Tensor } {
  const op = "decodeLayer";
  if (weights === null || typeof weights !== "object") argError(op, "weights", "an object { qkvu, out, l1, l2, l3 }", String(weights));
  if (options === null || typeof options !== "object") argError(op, "options", "an object { heads, eps?, activation?, theta?, positions?, inPlace?, segments? }", String(options));
  const { attrs, rope } = projectionAttrs(op, options);
  const inPlace = options.inPlace ?? false;
  if (typeof inPlace !== "boolean") argError(op, "options.inPlace", "a boolean", JSON.stringify(inPlace) ?? String(inPlace));
  const { segments } = options;
  if (segments !== undefined && !(segments instanceof Tensor)) argError(op, "options.segments", "an i32 Tensor [S + 1]", typeof segments);
  const { qkvu, out, l1, l2, l3 } = weights;
  const inputs = [h, qkvu, out, l1, l2, l3, state, slopes, ...rope, ...(segments ? [segments] : [])];
  const [h2, next] = runOp(op, inputs, attrs, undefined, inPlace ? { into: [undefined, state] } : undefined);
  return { h: h2, state: next };
}
