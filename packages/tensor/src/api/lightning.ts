/**
 * Lightning Attention ops (docs/ALGORITHM.md A, B, D): causal linear attention with a per-head
 * exponential decay λ_h = exp(−s_h), no softmax and no 1/√D scale:
 *
 *   o_t = Σ_{s≤t} λ^{t−s} (q_t · k_s) v_s  (+ λ^{t+1} q_t S₀ with an initial state S₀)
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim.
 */
import type { Backend } from "../backend.js";
import type { DType } from "../dtype.js";
import { runOp } from "../engine.js";
import { argError } from "../errors.js";
import { add, arange, cast, exp, mul, neg, reshape, sub, tensor } from "./ops.js";
import { Tensor } from "../tensor.js";
import type { LightningAttentionAttrs } from "../ops/attrs.js";

/** Block size of the chunked kernel unless one is given (the official LA-2 kernels use 64). */
export const DEFAULT_BLOCK_SIZE = 64;

export interface LightningAttentionOptions {
  /** Tokens per block of the chunked kernel (default 64); the result does not depend on it. */
  blockSize?: number;
  /** State [B, H, D, E] carried in from earlier tokens (f32; f64 for f64 inputs). */
  initialState?: Tensor;
  /** Also return the final state [B, H, D, E] (f32; f64 for f64 inputs). */
  returnState?: boolean;
  /** `chunked` (default), or the `recurrent` / `quadratic` reference forms. */
  impl?: LightningAttentionAttrs["impl"];
  /**
   * Also return the states the backend's forward kept at its segment boundaries, for a backward
   * written by hand (`lightningAttentionBackward`'s `segmentStates` and `segmentTokens`), and the
   * final state. A gradient tape needs none of this: it saves them itself.
   */
  returnSegmentStates?: boolean;
}

/** `lightningAttention` with `returnSegmentStates`. */
export interface LightningSegmentResult {
  output: Tensor;
  state: Tensor;
  /** The states entering tokens 0, L, 2L, … ([B, H, ⌈T/L⌉, D, E]), or none where the backend keeps none. */
  segmentStates?: Tensor;
  /** L of `segmentStates` (0 without them). */
  segmentTokens: number;
}

/** The op's attributes; `segmentTokens` only where it is on (> 0), so other calls carry none. */
function attrsOf(options: LightningAttentionOptions, segmentTokens = 0): LightningAttentionAttrs {
  return {
    blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE,
    impl: options.impl ?? "chunked",
    hasInitialState: options.initialState !== undefined,
    ...(segmentTokens > 0 ? { segmentTokens } : {}),
  };
}

/**
 * The segment length at which q's backend keeps the states entering its segments for these
 * inputs (`Backend.lightningSegmentTokens`), or 0. Only the chunked form runs a backend's split;
 * inputs that are not live rank-4 tensors get 0, and runOp then says what is wrong with them.
 */
function segmentTokensFor(q: Tensor, v: Tensor, impl: LightningAttentionAttrs["impl"]): number {
  if (impl !== "chunked" || !(q instanceof Tensor) || !(v instanceof Tensor) || q.isDisposed || v.isDisposed || q.rank !== 4 || v.rank !== 4) return 0;
  const [B, H, T, D] = q.shape as [number, number, number, number];
  return q.backend.lightningSegmentTokens?.({ dtype: q.dtype, B, H, T, D, E: v.shape[3] }) ?? 0;
}

/**
 * Lightning Attention over q, k [B, H, T, D] and v [B, H, T, E] with decay slopes [H] (f32).
 *
 * Where the backend keeps the states entering the segments of its forward
 * (`Backend.lightningSegmentTokens`), the op runs with `segmentTokens` and returns them as a third
 * output: a gradient tape saves it for the backward, and this function disposes its own handle.
 *
 * @example
 * const slopes = tensor(tnlSlopes(8, 0, 24), [8]);
 * const o = lightningAttention(q, k, v, slopes);                       // [B, H, T, E]
 * const { output, state } = lightningAttention(q, k, v, slopes, { returnState: true });
 * // For a backward by hand:
 * const f = lightningAttention(q, k, v, slopes, { returnSegmentStates: true });
 * const g = lightningAttentionBackward(q, k, v, slopes, dO, dS, f.segmentStates ? { segmentStates: f.segmentStates, segmentTokens: f.segmentTokens } : {});
 */
export function lightningAttention(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, options: LightningAttentionOptions & { returnSegmentStates: true }): LightningSegmentResult;
export function lightningAttention(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, options?: LightningAttentionOptions & { returnState?: false }): Tensor;
export function lightningAttention(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, options: LightningAttentionOptions & { returnState: true }): { output: Tensor; state: Tensor };
export function lightningAttention(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, options: LightningAttentionOptions = {}): Tensor | { output: Tensor; state: Tensor } | LightningSegmentResult {
  const inputs = options.initialState ? [q, k, v, slopes, options.initialState] : [q, k, v, slopes];
  const attrs = attrsOf(options, segmentTokensFor(q, v, options.impl ?? "chunked"));
  const [output, state, segmentStates] = runOp("lightningAttention", inputs, attrs);
  if (options.returnSegmentStates) return { output, state, segmentStates, segmentTokens: attrs.segmentTokens ?? 0 };
  // A tape that recorded the op holds its own handle (autograd retains what its rule saves).
  segmentStates?.dispose();
  if (options.returnState) return { output: output, state: state };
  state.dispose();
  return output;
}

export interface LightningGradients {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /** Gradient of the initial state; present only when an initial state was given. */
  dInitialState?: Tensor;
}

export interface LightningBackwardOptions extends Omit<LightningAttentionOptions, "returnState"> {
  /**
   * The states entering tokens 0, L, 2L, … that the forward with `segmentTokens` L returned
   * ([B, H, ⌈T/L⌉, D, E], f32; f64 for f64 inputs), which a backend may read instead of computing
   * them again; with `segmentTokens`. The gradients do not depend on it, up to rounding.
   */
  segmentStates?: Tensor;
  /** L of `segmentStates` (a positive multiple of 64); given together with it. */
  segmentTokens?: number;
}

/**
 * The backward op: gradients for an upstream dO [B, H, T, E] and dFinalState [B, H, D, E] f32.
 *
 * @example
 * const g = lightningAttentionBackward(q, k, v, slopes, dO, dS, { initialState: s0 });
 * // With the forward's segment states (runOp's third output under segmentTokens: 64):
 * const h = lightningAttentionBackward(q, k, v, slopes, dO, dS, { segmentStates, segmentTokens: 64 });
 */
export function lightningAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  slopes: Tensor,
  dO: Tensor,
  dFinalState: Tensor,
  options: LightningBackwardOptions = {},
): LightningGradients {
  const op = "lightningAttentionBackward";
  const { segmentStates, segmentTokens } = options;
  if (segmentStates !== undefined && segmentTokens === undefined) argError(op, "options.segmentTokens", "the tokens per segment of options.segmentStates (both or neither)", "none");
  if (segmentTokens !== undefined && segmentStates === undefined) argError(op, "options.segmentStates", `the segment states of options.segmentTokens = ${segmentTokens} (both or neither)`, "none");
  if (segmentStates !== undefined && !(typeof segmentTokens === "number" && segmentTokens > 0)) {
    argError(op, "options.segmentTokens", "a positive multiple of 64 (the tokens per segment of options.segmentStates)", String(segmentTokens));
  }
  const inputs = [q, k, v, slopes, dO, dFinalState];
  if (options.initialState) inputs.push(options.initialState);
  if (segmentStates) inputs.push(segmentStates);
  const [dq, dk, dv, dS0] = runOp(op, inputs, attrsOf(options, segmentTokens));
  if (!options.initialState) {
    dS0.dispose();
    return { dq: dq, dk: dk, dv: dv };
  }
  return { dq: dq, dk: dk, dv: dv, dInitialState: dS0 };
}

export interface LightningStateOptions {
  /** Weigh token t by λ^{t+1} (from before the first token) instead of λ^{T−1−t} (from the last). */
  reverse?: boolean;
}

/**
 * The state a span of T tokens adds from zero, without computing its output:
 *
 *   S = Σ_t λ^{T−1−t} k_tᵀ v_t   (reverse: Σ_t λ^{t+1} k_tᵀ v_t)
 *
 * for k [B, H, T, D], v [B, H, T, E] and slopes [H]; S is [B, H, D, E], f32 (f64 for f64 inputs).
 * The first is the final state `lightningAttention` returns from a zero initial state; the second,
 * given q and dO for k and v, is the gradient of an initial state (its part through the output).
 * Sequence-parallel attention exchanges these between ranks. Each product k_t·w_t is rounded to the
 * input dtype, as the chunked kernel rounds its decayed keys; sums are f32 (f64 for f64).
 *
 * @example
 * const S = lightningState(k, v, slopes);                        // = lightningAttention(q, k, v, slopes, { returnState: true }).state
 * const dS0 = lightningState(q, dO, slopes, { reverse: true });  // ∂(Σ o·dO)/∂S₀
 */
export function lightningState(k: Tensor, v: Tensor, slopes: Tensor, options: LightningStateOptions = {}): Tensor {
  if (options === null || typeof options !== "object") argError("lightningState", "options", "an object { reverse? }", String(options));
  const [state] = runOp("lightningState", [k, v, slopes], { reverse: options.reverse ?? false });
  return state;
}

/**
 * The per-token weights of `lightningState`, [1, H, T, 1] in `dtype`: exp(−s_h·(T−1−t)), or
 * exp(−s_h·(t+1)) with `reverse` (its decomposition and gradient use them).
 */
export function lightningStateWeights(slopes: Tensor, T: number, reverse: boolean, dtype: DType): Tensor {
  const H = slopes.shape[0];
  const ages = arange(0, T, 1, { dtype, backend: slopes.backend });
  const exponent = reverse ? add(ages, 1) : sub(T - 1, ages);
  const s = slopes.dtype === dtype ? slopes : cast(slopes, dtype);
  return exp(mul(reshape(neg(s), [1, H, 1, 1]), reshape(exponent, [1, 1, T, 1])));
}

export interface LightningStepOptions {
  /**
   * Write the new state over `state`'s storage instead of new storage (default false). The
   * returned `state` is then a new handle to that storage (dispose it as any other), and `state`
   * itself reads the new values: a decoder keeps its state at one address (CUDA graphs). Not
   * differentiable: a gradient tape refuses it.
   */
  inPlace?: boolean;
  /**
   * Prompt segments: several tokens of a sequence in one step. i32 [B + 1] offsets for a state of
   * B rows, with q, k, v of N ≥ B token rows: state row b steps through rows B + s[b] …
   * B + s[b + 1] − 1 in order, then row b (its last token), as that many one-token steps would,
   * so rows 0 … B − 1 of the output are each sequence's last token. The offsets must rise from
   * s[0] ≥ 0 to s[B] ≤ N − B; rows from B + s[B] on are stepped by no sequence and their output
   * is zero. An offset table a kernel finds out of order is an error (on a GPU, at the next read).
   */
  segments?: Tensor;
}

/**
 * One recurrent decode step: S ← λ S + kᵀ v, o = q S, for q, k [B, H, D], v [B, H, E] and a state
 * [B, H, D, E] f32. Returns the output [B, H, E] and the new state; the old state is untouched,
 * unless `inPlace` writes the new state over it. With `segments`, a sequence steps several tokens.
 *
 * @example
 * const { output, state: next } = lightningStep(q, k, v, slopes, state);            // new storage
 * const inPlace = lightningStep(q, k, v, slopes, state, { inPlace: true });        // over state
 * inPlace.state.handle === state.handle; // true: state now holds the new values
 * // Two sequences; the first steps two tokens (rows 2 and 0), the second one (row 1):
 * const seg = tensor([0, 1, 1], [3], { dtype: "i32" });
 * const two = lightningStep(q3, k3, v3, slopes, state2, { segments: seg }); // q3: [3, H, D]
 */
export function lightningStep(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, state: Tensor, options: LightningStepOptions = {}): { output: Tensor; state: Tensor } {
  if (options === null || typeof options !== "object") argError("lightningStep", "options", "an object { inPlace?: boolean, segments?: Tensor }", String(options));
  const inPlace = options.inPlace ?? false;
  if (typeof inPlace !== "boolean") argError("lightningStep", "options.inPlace", "a boolean", JSON.stringify(inPlace) ?? String(inPlace));
  const { segments } = options;
  if (segments !== undefined && !(segments instanceof Tensor)) argError("lightningStep", "options.segments", "an i32 Tensor [B + 1]", typeof segments);
  const inputs = segments ? [q, k, v, slopes, state, segments] : [q, k, v, slopes, state];
  const [output, next] = runOp("lightningStep", inputs, {}, undefined, inPlace ? { into: [undefined, state] } : undefined);
  return { output: output, state: next };
}

/**
 * ALiBi base slopes for H heads (A.4): 2^(−8(h+1)/H) for a power of two; otherwise the first
 * c = 2^⌊log2 H⌋ slopes of that rule for c, then every other slope of the rule for 2c.
 */
export function alibiSlopes(heads: number): number[] {
  if (!Number.isInteger(heads) || heads < 1) argError("alibiSlopes", "heads", "a positive integer", String(heads));
  const pow2 = (n: number) => Array.from({ length: n }, (_, h) => 2 ** ((-8 * (h + 1)) / n));
  const c = 2 ** Math.floor(Math.log2(heads));
  if (c === heads) return pow2(heads);
  return [...pow2(c), ...pow2(2 * c).filter((_, i) => i % 2 === 0).slice(0, heads - c)];
}

/**
 * TNL decay slopes of layer `layer` (0-based) of `numLayers`: ALiBi slopes × (1 − l/(L−1) + 1e−5).
 * The first layer decays most, the last almost not at all. With one layer the official formula
 * divides by zero; we use the first layer's factor (1 + 1e−5) there.
 */
export function tnlSlopes(heads: number, layer: number, numLayers: number): number[] {
  if (!Number.isInteger(numLayers) || numLayers < 1) argError("tnlSlopes", "numLayers", "a positive integer", String(numLayers));
  if (!Number.isInteger(layer) || layer < 0 || layer >= numLayers) {
    argError("tnlSlopes", "layer", `an integer in [0, ${numLayers - 1}]`, String(layer));
  }
  const factor = 1 - (numLayers === 1 ? 0 : layer / (numLayers - 1)) + 1e-5;
  return alibiSlopes(heads).map((s) => s * factor);
}

/** The slopes as the f32 [H] tensor the ops take (on `backend`, default the current one). */
export function slopesTensor(slopes: readonly number[], backend?: Backend): Tensor {
  return tensor(slopes, [slopes.length], { dtype: "f32", backend });
}
