/**
 * The closed op set: every op name and the attributes its kernels receive.
 *
 * `OpName` is derived from this interface, and every backend kernel table and the autograd rule
 * table are mapped types over it, so adding an op here makes the compiler list every place that
 * still lacks it. Attributes reach kernels already normalised (axes non-negative and sorted,
 * shapes explicit).
 *
 * Letters used in comments: B batch, H heads, T time, D query/key head dim, E value head dim,
 * C block size, V vocabulary, M model width, N rows.
 */
import type { DType } from "../dtype.js";

type None = Record<string, never>;

export interface ReduceAttrs {
  /** Non-negative, sorted, distinct. */
  axes: number[];
  keepdims: boolean;
}

export interface RandomAttrs {
  shape: number[];
  dtype: DType;
  seed: number;
  /** Counter offset: element i uses counter `offset + i`, so streams can be split reproducibly. */
  offset: number;
}

export interface LightningAttentionAttrs {
  /** Block size C of the chunked (LA-2) kernel. */
  blockSize: number;
  /** Which kernel computes the result: the chunked one is the default, the others are oracles. */
  impl: "chunked" | "recurrent" | "quadratic";
  /** True when an initial state [B, H, D, E] is the fifth input. */
  hasInitialState: boolean;
  /**
   * Undefined or 0: off. With L = segmentTokens > 0 (a positive multiple of 64), `lightningAttention`
   * has a third output, the states entering tokens 0, L, 2L, …: f32 (f64 for f64 inputs)
   * [B, H, ⌈T/L⌉, D, E], entry j = S_{jL−1}, the state after tokens 0 … jL − 1 including the initial
   * state's decayed contribution (entry 0 = the initial state, or zeros; T = 0 gives
   * [B, H, 0, D, E]). `lightningAttentionBackward` then takes them as its last input (after
   * initialState when hasInitialState), and a backend may read them instead of computing them
   * again: the gradients are the same either way, up to rounding. A backend that keeps these
   * states anyway says which L through `Backend.lightningSegmentTokens`.
   */
  segmentTokens?: number;
}

/** `lightningState`: which end of the span the weights count from (api/lightning.ts). */
export interface LightningStateAttrs {
  /** False: token t weighs λ^{T−1−t} (the state the span leaves behind); true: λ^{t+1} (what it reads of a state before it). */
  reverse: boolean;
}

/**
 * One AdamW update (PyTorch's form; packages/autograd/src/optim/adamw.ts): with bias corrections
 * 1 − β₁ᵗ and 1 − β₂ᵗ from the step count t,
 *   θ ← θ·(1 − lr·λ);  m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²;
 *   θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε).
 */
export interface AdamwAttrs {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** λ, decoupled; 0 skips the decay multiply. */
  weightDecay: number;
  /** The step count t, from 1. */
  step: number;
  /** Also output the new parameter rounded to this half dtype (the model's copy of an f32 master). */
  castTo?: "bf16" | "f16";
}

/** φ of TNL's `linear_act_fun` on q and k ("swish" is "silu"). */
export const QKV_ACTIVATIONS = ["silu", "relu", "1+elu", "none"] as const;
export type QkvActivation = (typeof QKV_ACTIVATIONS)[number];

export interface SplitQkvuAttrs {
  /** H: qkvu's width is 4·H·hd. */
  heads: number;
  activation: QkvActivation;
  /** True when theta and positions follow qkvu as inputs. */
  lrpe: boolean;
}

/** Which parts of `fusedLinear` are on; each true flag but `norm` adds an input, in this order. */
export interface FusedLinearAttrs {
  /** x is SRMSNorm-ed (no weight) before the product. */
  norm: boolean;
  /** The norm's ε (used only with `norm`). */
  eps: number;
  /** The normed x is multiplied by the input `gate` [R, K] (requires `norm`). */
  gate: boolean;
  /** y is the product of two linear maps, by w and by the input `w2` [N, K]. */
  product: boolean;
  /** The input `residual` [R, N] is added to y. */
  residual: boolean;
}

/** `qkvuProjection`: the SRMSNorm's ε and the split of splitQkvu. */
export interface QkvuProjectionAttrs extends SplitQkvuAttrs {
  eps: number;
}

/** `decodeLayer`: the heads, φ and LRPE of its projection and the ε of its three SRMSNorms. */
export type DecodeLayerAttrs = QkvuProjectionAttrs;

export interface OpAttrs {
  // Elementwise unary (float in, same dtype out).
  neg: None;
  abs: None;
  exp: None;
  log: None;
  sqrt: None;
  rsqrt: None;
  square: None;
  reciprocal: None;
  relu: None;
  silu: None;
  sigmoid: None;
  tanh: None;
  cos: None;
  sin: None;
  sign: None;
  // Elementwise binary with broadcasting.
  add: None;
  sub: None;
  mul: None;
  div: None;
  pow: None;
  maximum: None;
  minimum: None;
  // Comparisons with broadcasting: u8 result (1 true, 0 false).
  equal: None;
  notEqual: None;
  less: None;
  lessEqual: None;
  greater: None;
  greaterEqual: None;
  /** where(cond u8, a, b), all three broadcast. */
  where: None;
  // Reductions.
  sum: ReduceAttrs;
  mean: ReduceAttrs;
  max: ReduceAttrs;
  min: ReduceAttrs;
  /** Index of the first maximum along one axis, i32. */
  argmax: { axis: number; keepdims: boolean };
  // Linear algebra. a: (..., m, k), b: (..., k, n) after the optional transposes; batch dims broadcast.
  matmul: { transA: boolean; transB: boolean };
  // Movement. `reshape` is a view (no kernel); the others copy into a new contiguous tensor.
  reshape: { shape: number[] };
  permute: { perm: number[] };
  /** Elements begin[i] <= j < end[i] along each axis (normalised, clamped). */
  slice: { begin: number[]; end: number[] };
  /** Zero padding: before[i] and after[i] elements around axis i. */
  pad: { before: number[]; after: number[] };
  /** Any number of inputs, equal except along `axis`. */
  concat: { axis: number };
  expand: { shape: number[] };
  copy: None;
  cast: { dtype: DType };
  /**
   * The same values on another backend (another device): the one op whose output lives elsewhere
   * than its input. The engine moves the bytes (the destination's `copyFrom`, else a synchronous
   * read and a write); its gradient copies back. `backend` is a Backend, typed loosely here
   * because ops/ sits below the backend contract.
   */
  copyTo: { backend: { readonly name: string } };
  // Indexing. gather(x, idx i32): takes along `axis` (numpy.take). scatterAdd(updates, idx) is its adjoint.
  gather: { axis: number };
  scatterAdd: { axis: number; size: number };
  // Fused ops with their own backward kernels.
  /** embedding(weight [V, M], ids i32 [...]) → [..., M]; ids out of [0, V) are an error. */
  embedding: None;
  /** embeddingBackward(dy [..., M], ids [...]) → dweight [V, M]. */
  embeddingBackward: { vocabSize: number };
  softmax: { axis: number };
  logSoftmax: { axis: number };
  /** softmaxCrossEntropy(logits [N, V], labels i32 [N]) → loss f32 [N] (f64 for f64 logits); 0 where label = ignoreIndex. */
  softmaxCrossEntropy: { ignoreIndex: number };
  /** (logits [N, V], labels [N], dloss [N]) → dlogits [N, V]. */
  softmaxCrossEntropyBackward: { ignoreIndex: number };
  /** TNL's SRMSNorm over the last axis, no weight: x / sqrt(mean(x²) + eps). */
  rmsNorm: { eps: number };
  /** (x, dy) → dx. */
  rmsNormBackward: { eps: number };
  /** (x, dy) → dx = dy·σ(x)·(1 + x·(1 − σ(x))), the gradient of silu in one pass. */
  siluBackward: None;
  // Fused decode-step ops (one token per row): each is a composite op, so its decomposition is the
  // reference and a backend adds a kernel only to save launches.
  /** (x, y), same shape → (s = x + y, n = rmsNorm(s, eps)): a residual add and the next SRMSNorm. */
  addRmsNorm: { eps: number };
  /** (o [..., M], u [..., M]) → rmsNorm(o, eps) ⊙ u: TNL's output norm and its linear gate. */
  rmsNormGate: { eps: number };
  /**
   * TNL's fused projection of one token per row, qkvu [B, 4·H·hd] (q, k, v, u blocks of H·hd),
   * and with `lrpe` the inputs theta [H, hd] and positions [B] (f32, f64 for an f64 theta) →
   * q, k [B, H, D] after the activation (D = hd, or 2·hd with LRPE: [a ⊙ cos(θp), a ⊙ sin(θp)]),
   * v [B, H, hd], u [B, H·hd], all contiguous.
   */
  splitQkvu: SplitQkvuAttrs;
  /**
   * A linear layer of one token per row with its neighbours folded in (api/decode.ts `fusedLinear`):
   * (x [R, K], w [N, K], then what the flags ask for, in this order: gate [R, K], w2 [N, K],
   * residual [R, N]) → y [R, N] = residual + (p(x)·wᵀ ⊙ p(x)·w2ᵀ), p(x) = rmsNorm(x, eps) ⊙ gate.
   */
  fusedLinear: FusedLinearAttrs;
  /**
   * TNL's q/k/v/u projection of one token per row from the residual stream: (x [B, M], w [4·H·hd, M],
   * with `lrpe` theta [H, hd] and positions [B]) → splitQkvu(rmsNorm(x, eps)·wᵀ): q, k, v, u.
   */
  qkvuProjection: QkvuProjectionAttrs;
  /**
   * A whole TNL layer of a decode step (api/decode.ts `decodeLayer`): (h [B, M], qkvu [4·H·hd, M],
   * out [M, H·hd], l1 [G, M], l2 [G, M], l3 [M, G], state [B, H, D, E] (E = hd; f32, f64 for f64),
   * slopes f32 [H], with `lrpe` theta [H, hd] and positions [B], then optionally segments i32
   * [S + 1] for a state of S ≤ B rows, as lightningStep takes them) → (h2 [B, M], next state): the
   * chain qkvuProjection → lightningStep → fusedLinear (out, gated, + h) → fusedLinear (l1·l2) →
   * fusedLinear (l3, + h1).
   */
  decodeLayer: DecodeLayerAttrs;
  // Creation.
  fill: { shape: number[]; dtype: DType; value: number };
  randomUniform: RandomAttrs & { low: number; high: number };
  randomNormal: RandomAttrs & { mean: number; std: number };
  // Lightning Attention (docs/ALGORITHM.md A, B, D).
  /**
   * States are f32 (f64 when q is f64).
   * (q [B,H,T,D], k [B,H,T,D], v [B,H,T,E], slopes f32 [H], initialState? [B,H,D,E])
   * → (o [B,H,T,E], finalState [B,H,D,E], segmentStates [B,H,⌈T/L⌉,D,E] with segmentTokens L > 0).
   */
  lightningAttention: LightningAttentionAttrs;
  /**
   * (q, k, v, slopes, dO [B,H,T,E], dFinalState [B,H,D,E], initialState?, segmentStates? with
   * segmentTokens > 0); states as in the forward.
   * → (dq, dk, dv, dInitialState [B,H,D,E]).
   */
  lightningAttentionBackward: LightningAttentionAttrs;
  /**
   * The state a span adds from zero, without its output: (k [B,H,T,D], v [B,H,T,E], slopes f32 [H])
   * → Σ_t w_t k_tᵀ v_t [B,H,D,E] (f32, f64 for f64), w_t = λ^{T−1−t}, or λ^{t+1} with `reverse`.
   */
  lightningState: LightningStateAttrs;
  /**
   * One decode step: (q [B,H,D], k [B,H,D], v [B,H,E], slopes [H], state [B,H,D,E], f32 or f64 as q)
   * → (o [B,H,E], newState [B,H,D,E]). With prompt segments (i32 [B + 1]) q, k, v and o have N ≥ B
   * token rows: state row b steps rows B + s[b] … B + s[b + 1] − 1, then row b (api/lightning.ts).
   */
  lightningStep: None;
  // Optimizers: no gradient.
  /**
   * (param [...], grad, expAvg, expAvgSq, all of param's shape; param f32 or f64, the moments as
   * param, grad as param or, for an f32 param, bf16/f16) → (param, expAvg, expAvgSq[, param rounded
   * to castTo]).
   */
  adamwUpdate: AdamwAttrs;
}

export type OpName = keyof OpAttrs;

/** Views: a new handle on the same storage. */
export type ViewOpName = "reshape";
/** Ops that never reach a kernel: the engine implements them on storage directly. */
export type StorageOpName = ViewOpName | "copyTo";
export type KernelOpName = Exclude<OpName, StorageOpName>;

export const UNARY_OPS = [
  "neg", "abs", "exp", "log", "sqrt", "rsqrt", "square", "reciprocal",
  "relu", "silu", "sigmoid", "tanh", "cos", "sin", "sign",
] as const satisfies readonly OpName[];
export type UnaryOpName = (typeof UNARY_OPS)[number];

export const BINARY_OPS = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"] as const satisfies readonly OpName[];
export type BinaryOpName = (typeof BINARY_OPS)[number];

export const COMPARE_OPS = ["equal", "notEqual", "less", "lessEqual", "greater", "greaterEqual"] as const satisfies readonly OpName[];
export type CompareOpName = (typeof COMPARE_OPS)[number];

export const REDUCE_OPS = ["sum", "mean", "max", "min"] as const satisfies readonly OpName[];
export type ReduceOpName = (typeof REDUCE_OPS)[number];

/**
 * Ops with a decomposition into primitives (api/decompositions.ts). Their kernels are optional: a
 * backend without one runs the decomposition on that same backend, so a new backend can start from
 * the primitives and add fused kernels where they pay (speed, memory, or accuracy).
 *
 * Not here: rmsNormBackward, whose r·(dy − x̂·mean(x̂·dy)) cancels when dy is nearly parallel to x̂
 * (always for a width of 1), so in f32 primitives it misses the suite's tolerance; its kernels
 * compute in float64 (CPU) or double-f32 (WebGPU).
 */
export const COMPOSITE_OPS = [
  "sigmoid", "silu", "softmax", "logSoftmax", "softmaxCrossEntropy", "softmaxCrossEntropyBackward",
  "rmsNorm", "embedding", "embeddingBackward", "adamwUpdate", "siluBackward",
  "addRmsNorm", "rmsNormGate", "splitQkvu", "fusedLinear", "qkvuProjection", "lightningState",
  "decodeLayer",
] as const satisfies readonly KernelOpName[];
export type CompositeOpName = (typeof COMPOSITE_OPS)[number];
