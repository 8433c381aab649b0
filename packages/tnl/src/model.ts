/**
 * The TNL network (docs/ALGORITHM.md E.1–E.4): forward for training and prefill on the chunked
 * Lightning Attention, the recurrent decode step, and the language-model loss.
 *
 *   x = embed_scale · E[ids]
 *   per layer l:  x += TokenMixer_l(srms(x));  x += l3(l1(srms(x)) ⊙ l2(srms(x)))
 *   logits = srms(x) · W_lmᵀ
 *
 * Every function runs inside a `scope`, so only its results outlive it. All of it is ordinary
 * ops, so it runs under autograd unchanged.
 *
 * Letters: B batch, T time, M model width, H heads, D q/k head dim (2·hd with LRPE), E value head
 * dim (= hd), V vocabulary, F glu_dim.
 */
import {
  add,
  addRmsNorm,
  cast,
  concat,
  cos,
  decodeLayer as decodeLayerOp,
  div,
  embedding,
  full,
  fusedLinear,
  leadingRows,
  lightningAttention,
  lightningStep,
  matmul,
  maximum,
  mul,
  narrow,
  notEqual,
  permute,
  reshape,
  rmsNorm,
  qkvActivation,
  scope,
  sin,
  slopesTensor,
  softmaxCrossEntropy,
  splitQkvu,
  sum,
  Tensor,
  tensor,
  tnlSlopes,
  type DType,
  type SplitQkvuOptions,
} from "@lightning-ts/tensor";
import { headDim, type TnlConfig } from "./config.js";
import { TnlInputError } from "./errors.js";
import { mapParams, type TnlLayerParams, type TnlParams } from "./params.js";
import type { ModelDType } from "./precision.js";
import { checkStateFor, type TnlState } from "./state.js";

/** Token ids: a Tensor i32 [B, T], or rows of equal length. */
export type TokenIds = Tensor | readonly (readonly number[])[];

/** TNL's SRMSNorm: x / √(mean(x²) + 1e−6), no weight (E.3). */
const srms = (x: Tensor) => rmsNorm(x, 1e-6);

/** x [..., K] · Wᵀ for W [N, K], as one 2-D matmul. */
function linear(x: Tensor, w: Tensor): Tensor {
  const lead = x.shape.slice(0, -1);
  const y = matmul(reshape(x, [-1, x.shape[x.rank - 1]]), w, { transB: true });
  return reshape(y, [...lead, w.shape[0]]);
}

/** φ of `linear_act_fun`, applied to q and k only (E.2). */
function activate(x: Tensor, act: TnlConfig["activation"]): Tensor {
  return qkvActivation(x, act === "swish" ? "silu" : act);
}

/**
 * LRPE (A.5): x [B, H, T, hd] with row b at absolute positions starts[b]..starts[b]+T−1 (one start
 * for all rows when `starts` has one entry) → [x ⊙ cos(θp), x ⊙ sin(θp)], [B, H, T, 2·hd].
 * Positions come from the state, never from a module field, so a cached generation after an
 * earlier call cannot use a stale offset (the official code's bug).
 */
function lrpe(x: Tensor, theta: Tensor, starts: readonly number[] | Tensor): Tensor {
  const T = x.shape[2];
  // Phases in f32 (f64 for f64 models) even for half-precision weights: the official code builds
  // the positions in the activation dtype, so in bf16 every position above 256 is rounded (E.9).
  const dtype = theta.dtype === "f64" ? "f64" : "f32";
  // A positions tensor ([B], one token per row) stays on the device: a recorded decode step reads
  // the positions written before each replay.
  const positions =
    starts instanceof Tensor
      ? reshape(starts.dtype === dtype ? starts : cast(starts, dtype), [starts.shape[0], 1, 1, 1])
      : tensor(starts.flatMap((p) => Array.from({ length: T }, (_, t) => p + t)), [starts.length, 1, T, 1], { dtype });
  const th = reshape(theta.dtype === dtype ? theta : cast(theta, dtype), [1, theta.shape[0], 1, theta.shape[2]]); // [1, H, 1, hd]
  const angle = mul(th, positions); // [starts, H, T, hd]
  const inDtype = (t: Tensor) => (t.dtype === x.dtype ? t : cast(t, x.dtype));
  return concat([mul(x, inDtype(cos(angle))), mul(x, inDtype(sin(angle)))], -1);
}

interface MixerContext {
  layer: number;
  /** Position of each row's first token (one entry: the same for every row), or a tensor [B] of them. */
  starts: readonly number[] | Tensor;
  /** Lightning state carried in, [B, H, D, E]. */
  state?: Tensor;
  blockSize?: number;
  attention?: AttentionFn;
  /** The layer's decay slopes, f32 [H], made once by the caller (default: made here). */
  slopes?: Tensor;
  /** Decode: write the next state over `state` (its storage) instead of a new tensor. */
  inPlace?: boolean;
  /** Decode: prompt segments (DecodeTensors.segments); rows are then tokens, `starts` one per row. */
  segments?: Tensor;
}

/** SRMSNorm's ε (E.3). */
const EPS = 1e-6;

/**
 * The middle of a decode step's token mixer: x [B, M] → q, k, v, u by `split` (splitQkvu of the
 * projection: the four narrows, φ and LRPE of the chain) → lightningStep →
 * o [B, hid], the gate u [B, hid] and the next state.
 */
function decodeAttend(
  x: Tensor,
  split: (x: Tensor, options: SplitQkvuOptions) => { q: Tensor; k: Tensor; v: Tensor; u: Tensor },
  lp: TnlLayerParams,
  c: TnlConfig,
  ctx: MixerContext,
  state: Tensor,
): { o: Tensor; u: Tensor; state: Tensor } {
  const B = x.shape[0];
  const H = c.numHeads;
  const hd = headDim(c);
  const rope = lp.theta ? { theta: reshape(lp.theta, [H, hd]), positions: positionsOf(ctx.starts, B, lp.theta, x) } : {};
  const { q, k, v, u } = split(x, { heads: H, activation: c.activation, ...rope }); // q, k [B, H, D]; v [B, H, E]; u [B, hid]
  const slopes = ctx.slopes ?? slopesTensor(tnlSlopes(H, ctx.layer, c.numLayers));
  const r = lightningStep(q, k, v, slopes, state, { inPlace: ctx.inPlace === true, ...(ctx.segments ? { segments: ctx.segments } : {}) });
  return { o: reshape(r.output, [B, c.hiddenDim]), u, state: r.state };
}

/**
 * The token mixer of a decode step (one token per row, a state carried in): the same mathematics
 * as `tokenMixer` in fused ops, each giving the bits of the chain it replaces — splitQkvu for the
 * four narrows, φ and LRPE of the projection's output, fusedLinear for the joint SRMSNorm, the
 * gate u and the output projection. x [B, 1, M] normed → (out [B, 1, M], next state [B, H, D, E]).
 */
function decodeTokenMixer(x: Tensor, lp: TnlLayerParams, c: TnlConfig, ctx: MixerContext, state: Tensor): { out: Tensor; state: Tensor } {
  const B = x.shape[0];
  const a = decodeAttend(reshape(x, [B, c.dModel]), (xn, o) => splitQkvu(fusedLinear(xn, lp.qkvu), o), lp, c, ctx, state);
  return { out: reshape(fusedLinear(a.o, lp.out, { norm: { eps: EPS, gate: a.u } }), [B, 1, c.dModel]), state: a.state };
}

/**
 * A whole layer of a decode step on the residual stream h [B, 1, M] as it is (not normed; in the
 * compute dtype), as one op, `decodeLayer` of the tensor core, whose decomposition is the chain
 *
 *   q, k, v, u = qkvuProjection(h);  o = lightningStep(q, k, v);  h1 = h + (srms(o) ⊙ u)·Woutᵀ
 *   g = (srms(h1)·W1ᵀ) ⊙ (srms(h1)·W2ᵀ);  h2 = h1 + g·W3ᵀ     (the last three: fusedLinear)
 *
 * A backend without a kernel for the op runs those five ops; the CUDA backend runs it as one kernel
 * where it can. The values are those of `layer` (E.2–E.4): the decompositions of fusedLinear and
 * qkvuProjection are that chain of ops.
 */
function decodeLayer(h: Tensor, lp: TnlLayerParams, c: TnlConfig, ctx: MixerContext, state: Tensor): { x: Tensor; state: Tensor } {
  const B = h.shape[0];
  const H = c.numHeads;
  const h0 = reshape(h, [B, c.dModel]);
  const rope = lp.theta ? { theta: reshape(lp.theta, [H, headDim(c)]), positions: positionsOf(ctx.starts, B, lp.theta, h0) } : {};
  const slopes = ctx.slopes ?? slopesTensor(tnlSlopes(H, ctx.layer, c.numLayers));
  const options = { heads: H, activation: c.activation, eps: EPS, inPlace: ctx.inPlace === true, ...rope, ...(ctx.segments ? { segments: ctx.segments } : {}) };
  const r = decodeLayerOp(h0, lp, state, slopes, options);
  return { x: reshape(r.h, [B, 1, c.dModel]), state: r.state };
}

/**
 * Each row's position as a tensor [B] in the phase dtype of `lrpe` (f32, f64 for an f64 θ): a
 * tensor of positions is used as it is (a recorded step reads the positions written before each
 * replay), numbers (one for every row, or one per row) become one.
 */
function positionsOf(starts: readonly number[] | Tensor, B: number, theta: Tensor, like: Tensor): Tensor {
  const dtype = theta.dtype === "f64" ? "f64" : "f32";
  if (starts instanceof Tensor) return starts.dtype === dtype ? starts : cast(starts, dtype);
  return tensor(Array.from({ length: B }, (_, b) => starts[starts.length === 1 ? 0 : b]), [B], { dtype, backend: like.backend });
}

/** GLA token mixer (E.2) on normed x [B, T, M] → (out [B, T, M], final state [B, H, D, E]). */
function tokenMixer(x: Tensor, lp: TnlLayerParams, c: TnlConfig, ctx: MixerContext): { out: Tensor; state: Tensor } {
  const [B, T] = x.shape as [number, number, number];
  // Decode: the recurrent step S ← λS + kᵀv, o = qS (docs/ALGORITHM.md D).
  if (T === 1 && ctx.state) return decodeTokenMixer(x, lp, c, ctx, ctx.state);
  const H = c.numHeads;
  const hd = headDim(c);
  // Four matmuls with row blocks of the fused weight rather than one matmul split four ways: the
  // gradient of a split pads each piece back to the full width and adds the four, a pass over
  // activations four times as wide; here only the (small) weight blocks are padded back.
  const hid = c.hiddenDim;
  // A decode step (T = 1) reads the weight whole in one matmul and splits its small output: there
  // the four weight blocks would be copies as large as the weight itself, every token.
  const qkvu = T === 1 ? linear(x, lp.qkvu) : undefined;
  const [q0, k0, v0, u] = [0, 1, 2, 3].map((i) => (qkvu ? narrow(qkvu, 2, i * hid, hid) : linear(x, narrow(lp.qkvu, 0, i * hid, hid)))) as [
    Tensor,
    Tensor,
    Tensor,
    Tensor,
  ]; // each [B, T, hid]
  // With one token the permutes move no data: reshapes, so a decode step launches no copies for them.
  const heads = (t: Tensor) => (T === 1 ? reshape(t, [B, H, 1, hd]) : permute(reshape(t, [B, T, H, hd]), [0, 2, 1, 3])); // [B, H, T, hd]
  let q = activate(heads(q0), c.activation);
  let k = activate(heads(k0), c.activation);
  const v = heads(v0);
  if (lp.theta) {
    q = lrpe(q, lp.theta, ctx.starts);
    k = lrpe(k, lp.theta, ctx.starts);
  }
  const slopes = ctx.slopes ?? slopesTensor(tnlSlopes(H, ctx.layer, c.numLayers));
  const attend = ctx.attention ?? lightningAttention;
  const { output: o, state } = attend(q, k, v, slopes, { initialState: ctx.state, returnState: true, blockSize: ctx.blockSize }); // o [B, H, T, E]
  // One SRMSNorm over all heads jointly, then the linear gate u (no sigmoid).
  const merged = reshape(T === 1 ? o : permute(o, [0, 2, 1, 3]), [B, T, c.hiddenDim]);
  return { out: linear(mul(srms(merged), u), lp.out), state };
}

/** SGLU channel mixer (E.4): (x W1ᵀ ⊙ x W2ᵀ) W3ᵀ, no activation. */
function channelMixer(x: Tensor, lp: TnlLayerParams): Tensor {
  return linear(mul(linear(x, lp.l1), linear(x, lp.l2)), lp.l3);
}

/**
 * The Lightning Attention call of the training / prefill forward, replaceable (e.g. by a
 * sequence-parallel one): q, k [B, H, T, D], v [B, H, T, E], slopes f32 [H] → output [B, H, T, E]
 * and the final state [B, H, D, E], as `lightningAttention(…, { returnState: true })` returns them.
 */
export type AttentionFn = (
  q: Tensor,
  k: Tensor,
  v: Tensor,
  slopes: Tensor,
  options: { initialState?: Tensor; returnState: true; blockSize?: number },
) => { output: Tensor; state: Tensor };

export interface ForwardOptions {
  /** Lightning Attention block size (default 64); results do not depend on it. */
  blockSize?: number;
  /**
   * Dtype of the weights and activations (the `compute` of a `Precision`); default: the
   * parameters' dtype. Weights in another dtype are cast on use, so their gradients come back in
   * their own dtype. Norms, matmuls and reductions accumulate in f32, and the loss and Lightning
   * states are f32, whatever this is.
   */
  compute?: ModelDType;
  /** Continue after the tokens this state has seen (LRPE positions continue too). */
  state?: TnlState;
  /**
   * Absolute position of the first token (default 0; added to the state's position): LRPE needs
   * it when the ids are a slice of a longer sequence, as under sequence parallelism.
   */
  positionOffset?: number;
  /** Replaces `lightningAttention` in every layer's token mixer (not in the decode step). */
  attention?: AttentionFn;
  /**
   * Dtype of the residual stream, the sum every layer adds its output into (default: the compute
   * dtype). f32 with half-precision compute keeps the rounding of 2·L additions out of the sum,
   * as PyTorch's autocast does with f32 activations between layers.
   */
  residual?: ModelDType;
}

export interface ForwardFullOptions extends ForwardOptions {
  /** Logits for every position (default) or only the last one ([B, 1, V]). */
  logits?: "all" | "last";
  returnState?: boolean;
  /** Also return HF's `hidden_states`: embeddings, each layer's output, the last one final-normed. */
  hiddenStates?: boolean;
}

export interface ForwardFullResult {
  /** [B, T, V] (or [B, 1, V] with `logits: "last"`), in the compute dtype. */
  logits: Tensor;
  state?: TnlState;
  hiddenStates?: Tensor[];
}

/** Checks token ids (rectangular, integers inside the vocabulary) and makes an i32 [B, T] tensor. */
export function toIdsTensor(ids: TokenIds, c: TnlConfig): Tensor {
  if (ids instanceof Tensor) {
    if (ids.dtype !== "i32" || ids.rank !== 2) throw new TnlInputError(`token ids must be i32 [B, T], got ${ids.describe()}`);
    // Read back only where it is cheap and synchronous (the CPU); elsewhere the embedding op checks.
    if (ids.backend.readSync) checkIds(ids.dataSync(), ids.shape[1], c);
    return ids;
  }
  const raw: unknown = ids; // checked as a JavaScript value: Array.isArray would turn the typed rows into any[]
  if (!Array.isArray(raw) || raw.length === 0 || !Array.isArray(raw[0])) throw new TnlInputError("token ids must be a non-empty array of rows (number[][])");
  const T = ids[0].length;
  if (T === 0) throw new TnlInputError("token ids: rows must not be empty");
  ids.forEach((row, b) => {
    if (row.length !== T) throw new TnlInputError(`token ids: row ${b} has ${row.length} tokens, row 0 has ${T}; rows must have equal length`);
  });
  const flat = ids.flat();
  checkIds(flat, T, c);
  return tensor(flat, [ids.length, T], { dtype: "i32" });
}

function checkIds(flat: ArrayLike<number>, T: number, c: TnlConfig): void {
  for (let i = 0; i < flat.length; i++) {
    const id = flat[i];
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
      throw new TnlInputError(`token id ${id} at [${Math.floor(i / T)}, ${i % T}] is outside the vocabulary [0, ${c.vocabSize})`);
    }
  }
}

/** The whole forward pass; the public functions below pick what they return. */
export function forwardFull(params: TnlParams, c: TnlConfig, ids: TokenIds, options: ForwardFullOptions = {}): ForwardFullResult {
  return scope(() => {
    const idsT = toIdsTensor(ids, c);
    const { state } = options;
    if (state) checkStateFor(state, c, idsT.shape[0]);
    const offset = options.positionOffset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new TnlInputError(`positionOffset must be a non-negative integer, got ${String(offset)}`);
    const position = (state?.position ?? 0) + offset;
    const r = layers(params, c, idsT, [position], state?.kv, options);
    const result: ForwardFullResult = { logits: r.logits };
    if (options.returnState) result.state = { position: position + idsT.shape[1], kv: r.kv };
    if (options.hiddenStates) result.hiddenStates = r.hidden;
    return result;
  });
}

/**
 * A decode step of `BatchDecoder` (decoder.ts): the slopes come in as tensors made once, and each
 * layer's next state is written over the state passed in.
 */
export interface DecodeTensors {
  /** Decay slopes of each layer, f32 [H]. */
  slopes: readonly Tensor[];
  /**
   * Prompt segments (lightningStep's `segments`, i32 [S + 1]): the ids' N rows are tokens of the S
   * sequences whose states are passed, row b < S the last token of sequence b and the others
   * earlier tokens after them; `starts` is then a tensor of each token row's position. The logits
   * are those of the first S rows.
   */
  segments?: Tensor;
}

/** Embedding, the layers and the output head for ids [B, T] with rows starting at `starts`. */
export function layers(
  params: TnlParams,
  c: TnlConfig,
  idsT: Tensor,
  starts: readonly number[] | Tensor,
  kvIn: readonly Tensor[] | undefined,
  options: ForwardFullOptions,
  decode?: DecodeTensors,
) {
  const T = idsT.shape[1];
  const w = computeWeights(params, options.compute);
  const embedScale = c.noScaleEmbedding ? 1 : Math.sqrt(c.dModel);
  const compute = w.embed.dtype;
  const residual = options.residual ?? compute;
  const to = (t: Tensor, dtype: DType) => (t.dtype === dtype ? t : cast(t, dtype));
  // The layers read the residual stream normed, in the compute dtype, and add their outputs to it.
  const normed = (t: Tensor) => to(srms(t), compute);
  let x = mul(to(embedding(w.embed, idsT), residual), embedScale); // [B, T, M]
  const hidden: Tensor[] = options.hiddenStates ? [x] : [];
  const kv: Tensor[] = [];
  const context = (l: number): MixerContext => ({
    layer: l,
    starts,
    state: kvIn?.[l],
    blockSize: options.blockSize,
    attention: options.attention,
    slopes: decode?.slopes[l],
    inPlace: decode !== undefined,
    segments: decode?.segments,
  });
  const mix = (lp: TnlLayerParams, l: number, input: Tensor) => tokenMixer(input, lp, c, context(l));
  const layer = (lp: TnlLayerParams, l: number, input: Tensor) => {
    const mixed = mix(lp, l, normed(input));
    const y = add(input, to(mixed.out, residual));
    return { x: add(y, to(channelMixer(normed(y), lp), residual)), state: mixed.state };
  };
  // One token per row (a decode step): each residual add and the SRMSNorm after it are one fused op
  // (the same values), so a layer gets its input already normed by the layer before; `inNormed` of
  // the first layer is normed here, and the last layer's is the final norm.
  const fused = T === 1;
  const fusedLayer = (lp: TnlLayerParams, l: number, input: Tensor, inNormed: Tensor) => {
    const mixed = mix(lp, l, inNormed);
    const a = addRmsNorm(input, to(mixed.out, residual), 1e-6);
    const b = addRmsNorm(a.sum, to(channelMixer(to(a.normed, compute), lp), residual), 1e-6);
    return { x: b.sum, normed: to(b.normed, compute), state: mixed.state };
  };
  // A decode step with a state in one dtype goes through `decodeLayer`: each layer norms its input
  // itself (in the ops that read it), and so does the head.
  const whole = fused && kvIn !== undefined && residual === compute;
  let xNormed = fused && !whole ? normed(x) : undefined;
  w.layers.forEach((lp, l) => {
    const run = (): { x: Tensor; normed?: Tensor; state: Tensor } => {
      if (whole) return decodeLayer(x, lp, c, context(l), kvIn[l]);
      return xNormed ? fusedLayer(lp, l, x, xNormed) : layer(lp, l, x);
    };
    let r: { x: Tensor; normed?: Tensor; state: Tensor };
    if (decode) {
      // A decode step holds one layer's intermediates at a time (nothing differentiates it): a
      // recorded step then reuses their buffers from layer to layer instead of keeping all of them.
      r = scope(run);
      x.dispose();
      xNormed?.dispose();
    } else {
      r = run();
    }
    x = r.x;
    xNormed = r.normed;
    kv.push(r.state);
    if (options.hiddenStates && l < c.numLayers - 1) hidden.push(x);
  });
  // With one token the last position is x itself.
  if (options.logits === "last" && !fused) x = narrow(x, 1, T - 1, 1);
  // With prompt segments only each sequence's last token (the first rows) has logits.
  if (decode?.segments) {
    const rows = decode.segments.shape[0] - 1;
    x = leadingRows(x, rows);
    if (xNormed) xNormed = leadingRows(xNormed, rows);
  }
  const head = w.lmHead ?? w.embed;
  if (whole && !options.hiddenStates) {
    const B = x.shape[0];
    return { logits: reshape(fusedLinear(reshape(x, [B, c.dModel]), head, { norm: { eps: EPS } }), [B, 1, head.shape[0]]), kv, hidden };
  }
  const final = xNormed ?? normed(x);
  if (options.hiddenStates) hidden.push(final);
  return { logits: linear(final, head), kv, hidden };
}

/**
 * The parameters in the compute dtype: the same tensors when they are in it already, else casts
 * (which autograd differentiates back into the parameters' dtype). LRPE θ is left as it is: its
 * phases are computed in f32 whatever the weights are (see `lrpe`).
 */
function computeWeights(params: TnlParams, compute: ModelDType | undefined): TnlParams {
  if (compute === undefined) return params;
  return mapParams(params, (t, key) => (key === "theta" || t.dtype === compute ? t : cast(t, compute)));
}

/**
 * Logits [B, T, V] for token ids [B, T]: the training / prefill forward on chunked Lightning Attention.
 *
 * @example
 * const logits = forward(params, config, [[1, 5, 9]]); // f32 [1, 3, V]
 */
export function forward(params: TnlParams, config: TnlConfig, ids: TokenIds, options: ForwardOptions = {}): Tensor {
  return forwardFull(params, config, ids, options).logits;
}

/**
 * Runs a prompt and returns its logits and the recurrent state after it. With `options.state`
 * it continues from that state (which stays the caller's).
 *
 * @example
 * const { logits, state } = prefill(params, config, [[1, 5, 9]], { logits: "last" });
 */
export function prefill(
  params: TnlParams,
  config: TnlConfig,
  ids: TokenIds,
  options: ForwardOptions & { logits?: "all" | "last" } = {},
): { logits: Tensor; state: TnlState } {
  const r = forwardFull(params, config, ids, { ...options, returnState: true });
  return { logits: r.logits, state: r.state! };
}

/**
 * One decode step: feeds one token per row and returns logits [B, V] and the next state. The
 * given state is left as it was (dispose it when no longer needed).
 *
 * @example
 * const next = step(params, config, state, [42]);
 * disposeState(state);
 */
export function step(params: TnlParams, config: TnlConfig, state: TnlState, tokens: readonly number[]): { logits: Tensor; state: TnlState } {
  return scope(() => {
    const r = forwardFull(params, config, tokens.map((t) => [t]), { state, returnState: true });
    return { logits: reshape(r.logits, [tokens.length, config.vocabSize]), state: r.state! };
  });
}

/**
 * One decode step for independent sequences, each with its own state (batch 1) and position: the
 * batch a server decodes when sequences join and leave between steps (continuous batching). Row b
 * feeds tokens[b] to states[b]; returns logits [B, V] and each sequence's next state. The given
 * states are left as they were.
 *
 * @example
 * const { logits, states: next } = stepRows(params, config, [stateA, stateB], [17, 4]);
 */
export function stepRows(params: TnlParams, config: TnlConfig, states: readonly TnlState[], tokens: readonly number[]): { logits: Tensor; states: TnlState[] } {
  if (states.length !== tokens.length || states.length === 0) throw new TnlInputError(`stepRows: ${states.length} states for ${tokens.length} tokens`);
  states.forEach((s) => checkStateFor(s, config, 1));
  return scope(() => {
    const ids = toIdsTensor(tokens.map((t) => [t]), config);
    const kvIn = config.lrpe.map((_, l) => (states.length === 1 ? states[0].kv[l] : concat(states.map((s) => s.kv[l]), 0)));
    const r = layers(params, config, ids, states.map((s) => s.position), kvIn, {});
    const next = states.map((s, b) => ({ position: s.position + 1, kv: r.kv.map((t) => narrow(t, 0, b, 1)) }));
    return { logits: reshape(r.logits, [tokens.length, config.vocabSize]), states: next };
  });
}

/**
 * HF's `output_hidden_states` for ids: L + 1 tensors [B, T, M] (embeddings × scale, each layer's
 * output, and the last one after the final norm).
 */
export function hiddenStates(params: TnlParams, config: TnlConfig, ids: TokenIds, options: ForwardOptions = {}): Tensor[] {
  return scope(() => {
    const r = forwardFull(params, config, ids, { ...options, hiddenStates: true });
    return r.hiddenStates!;
  });
}

export interface LossOptions extends ForwardOptions {
  /** Targets [B, T] aligned with ids (default: the ids); position t predicts labels[t + 1], as in HF. */
  labels?: TokenIds;
  /** Label value that contributes nothing (default −100, as in PyTorch). */
  ignoreIndex?: number;
}

/**
 * Mean next-token cross-entropy over the labels that are not ignored (a scalar tensor).
 *
 * @example
 * const { value, grads } = valueAndGrad((p: TnlParams) => loss(p, config, batch))(params);
 */
export function loss(params: TnlParams, config: TnlConfig, ids: TokenIds, options: LossOptions = {}): Tensor {
  const ignoreIndex = options.ignoreIndex ?? -100;
  return scope(() => {
    const logits = forward(params, config, ids, options);
    const [B, T, V] = logits.shape as [number, number, number];
    if (T < 2) throw new TnlInputError("loss needs sequences of at least 2 tokens");
    const labels = options.labels === undefined ? toIdsTensor(ids, config) : toLabels(options.labels, B, T, ignoreIndex);
    // Position t predicts labels[t + 1]; the last position predicts nothing (its label is ignored),
    // so the logits are used whole: slicing off the last position would copy all of them, and its
    // gradient would pad them back.
    const ignored = full([B, 1], ignoreIndex, { dtype: "i32" });
    const target = reshape(concat([narrow(labels, 1, 1, T - 1), ignored], 1), [B * T]);
    const perRow = softmaxCrossEntropy(reshape(logits, [B * T, V]), target, { ignoreIndex });
    const count = maximum(sum(cast(notEqual(target, ignoreIndex), perRow.dtype)), 1);
    return div(sum(perRow), count);
  });
}

function toLabels(labels: TokenIds, B: number, T: number, ignoreIndex: number): Tensor {
  const t = labels instanceof Tensor ? labels : tensor(labels.flat(), [labels.length, labels[0]?.length ?? 0], { dtype: "i32" });
  if (t.dtype !== "i32" || t.shape.join() !== [B, T].join()) throw new TnlInputError(`labels must be i32 [${B}, ${T}] (ignore index ${ignoreIndex} allowed), got ${t.describe()}`);
  return t;
}
