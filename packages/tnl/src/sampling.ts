/**
 * Token sampling as small composable functions over one row of logits (a Float32Array of V).
 * A `LogitsTransform` rewrites logits (a removed token becomes −∞); a `Sampler` picks a token.
 * `chain(t1, t2, …, pick)` applies transforms in order and then picks:
 *
 *   const sampler = chain(repetitionPenalty(1.1), temperature(0.8), topK(40), topP(0.95), categorical());
 *
 * Randomness comes from `SampleContext.random`, which `generate` seeds per row, so a seed
 * reproduces a run exactly.
 */
import { counterBlock, seedKey, uniformFromU32 } from "@lightning-ts/tensor";

export interface SampleContext {
  /** The prompt tokens of this row. */
  readonly prompt: readonly number[];
  /** Tokens generated so far for this row. */
  readonly generated: readonly number[];
  /** Uniform numbers in [0, 1). */
  readonly random: () => number;
}

/** Returns new or in-place modified logits; must not change their length. */
export type LogitsTransform = (logits: Float32Array, ctx: SampleContext) => Float32Array;
export type Sampler = (logits: Float32Array, ctx: SampleContext) => number;

/**
 * A reproducible stream of uniform numbers: Philox4x32 counters under `seed`, the tensor
 * core's RNG, so it is the same on every platform.
 *
 * @example
 * const random = seededRandom(7); random(); // 0.… the same on every run
 */
export function seededRandom(seed: number, stream = 0): () => number {
  const key = seedKey(seed);
  const words = new Uint32Array(4);
  // Counter c of stream s: 2^32·s + c, so streams (batch rows) never overlap.
  let counter = stream * 2 ** 32;
  return () => uniformFromU32(counterBlock(key, counter++, words)[0]);
}

function checkPositive(name: string, x: number, allowZero = false): void {
  if (!(allowZero ? x >= 0 : x > 0) || !Number.isFinite(x)) throw new RangeError(`${name} must be ${allowZero ? "non-negative" : "positive"} and finite, got ${x}`);
}

/**
 * Applies `steps` (all but the last are transforms) and then the last, a sampler.
 *
 * @example
 * const pick = chain(temperature(0.7), topP(0.9), categorical());
 */
export function chain(...steps: [...LogitsTransform[], Sampler]): Sampler {
  const pick = steps[steps.length - 1] as Sampler;
  const transforms = steps.slice(0, -1) as LogitsTransform[];
  const sampler: Sampler = (logits, ctx) => {
    let l: Float32Array = Float32Array.from(logits); // transforms may work in place: never on the caller's array
    for (const t of transforms) l = t(l, ctx);
    return pick(l, ctx);
  };
  if (transforms.length === 0 && highestLogitSamplers.has(pick)) highestLogitSamplers.add(sampler);
  return sampler;
}

/** Samplers known to pick the highest raw logit, the first on ties (see `picksHighestLogit`). */
const highestLogitSamplers = new WeakSet<Sampler>();

/**
 * Whether `sampler` picks the highest raw logit (the first on ties) and uses nothing else: `greedy()`,
 * alone or in a chain without transforms. A server can then pick the token on the device (argmax)
 * and read back one number per sequence instead of the logits.
 *
 * @example
 * picksHighestLogit(greedy()); // true
 * picksHighestLogit(chain(temperature(0.7), categorical())); // false
 */
export function picksHighestLogit(sampler: Sampler): boolean {
  return highestLogitSamplers.has(sampler);
}

/** The highest logit (the first one on ties), ignoring the context. */
export function greedy(): Sampler {
  const sampler: Sampler = (logits) => {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  };
  highestLogitSamplers.add(sampler);
  return sampler;
}

/** Softmax probabilities of logits (−∞ becomes 0). */
export function softmaxOf(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  const p = new Float64Array(logits.length);
  if (max === -Infinity) throw new Error("sampling: every token was removed (all logits are −∞)");
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += p[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < p.length; i++) p[i] /= total;
  return p;
}

/** Draws a token from softmax(logits) with `ctx.random`. */
export function categorical(): Sampler {
  return (logits, ctx) => {
    const p = softmaxOf(logits);
    const u = ctx.random();
    let acc = 0;
    let last = 0;
    for (let i = 0; i < p.length; i++) {
      if (p[i] === 0) continue;
      acc += p[i];
      last = i;
      if (u < acc) return i;
    }
    return last; // rounding left acc just below 1
  };
}

/** Divides logits by `t` (> 0); below 1 sharpens, above 1 flattens. */
export function temperature(t: number): LogitsTransform {
  checkPositive("temperature", t);
  return (logits) => logits.map((x) => x / t);
}

/** Keeps the `k` highest logits (and any tied with the k-th). */
export function topK(k: number): LogitsTransform {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`topK: k must be a positive integer, got ${k}`);
  return (logits) => {
    if (k >= logits.length) return logits;
    const kth = Float32Array.from(logits).sort().reverse()[k - 1];
    return logits.map((x) => (x >= kth ? x : -Infinity));
  };
}

/** Nucleus sampling: keeps the most likely tokens whose probabilities first sum to ≥ p (at least one). */
export function topP(p: number): LogitsTransform {
  if (!(p > 0 && p <= 1)) throw new RangeError(`topP: p must be in (0, 1], got ${p}`);
  return (logits) => {
    if (p === 1) return logits;
    const prob = softmaxOf(logits);
    const order = Array.from(prob.keys()).sort((a, b) => prob[b] - prob[a] || a - b);
    const keep = new Uint8Array(logits.length);
    let acc = 0;
    for (const i of order) {
      keep[i] = 1;
      acc += prob[i];
      if (acc >= p) break;
    }
    return logits.map((x, i) => (keep[i] ? x : -Infinity));
  };
}

/** Keeps tokens whose probability is at least `p` times the most likely token's. */
export function minP(p: number): LogitsTransform {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`minP: p must be in [0, 1], got ${p}`);
  return (logits) => {
    const prob = softmaxOf(logits);
    const floor = p * Math.max(...prob);
    return logits.map((x, i) => (prob[i] >= floor ? x : -Infinity));
  };
}

/**
 * CTRL / Hugging Face repetition penalty over the prompt and the generated tokens: a seen token's
 * logit is divided by `r` when positive and multiplied by `r` when negative.
 */
export function repetitionPenalty(r: number): LogitsTransform {
  checkPositive("repetitionPenalty", r);
  return (logits, ctx) => {
    const seen = new Set([...ctx.prompt, ...ctx.generated]);
    for (const id of seen) if (id >= 0 && id < logits.length) logits[id] = logits[id] > 0 ? logits[id] / r : logits[id] * r;
    return logits;
  };
}

function counts(tokens: readonly number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const t of tokens) m.set(t, (m.get(t) ?? 0) + 1);
  return m;
}

/** OpenAI-style: subtracts `f` × (times the token was generated) from its logit. */
export function frequencyPenalty(f: number): LogitsTransform {
  if (!Number.isFinite(f)) throw new RangeError(`frequencyPenalty must be finite, got ${f}`);
  return (logits, ctx) => {
    for (const [id, n] of counts(ctx.generated)) if (id < logits.length) logits[id] -= f * n;
    return logits;
  };
}

/** OpenAI-style: subtracts `p` from the logit of every token generated at least once. */
export function presencePenalty(p: number): LogitsTransform {
  if (!Number.isFinite(p)) throw new RangeError(`presencePenalty must be finite, got ${p}`);
  return (logits, ctx) => {
    for (const id of new Set(ctx.generated)) if (id < logits.length) logits[id] -= p;
    return logits;
  };
}

export interface SamplingOptions {
  /** 0 (default) means greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
}

/**
 * The usual pipeline from plain options: penalties, then temperature, top-k, top-p, min-p and a
 * random draw; greedy (after the penalties) when the temperature is 0 or absent.
 *
 * @example
 * const sampler = samplerFromOptions({ temperature: 0.8, topP: 0.95, repetitionPenalty: 1.1 });
 */
export function samplerFromOptions(o: SamplingOptions): Sampler {
  const steps: LogitsTransform[] = [];
  if (o.repetitionPenalty !== undefined && o.repetitionPenalty !== 1) steps.push(repetitionPenalty(o.repetitionPenalty));
  if (o.frequencyPenalty) steps.push(frequencyPenalty(o.frequencyPenalty));
  if (o.presencePenalty) steps.push(presencePenalty(o.presencePenalty));
  const t = o.temperature ?? 0;
  checkPositive("temperature", t, true);
  if (t === 0) return chain(...steps, greedy());
  steps.push(temperature(t));
  if (o.topK !== undefined) steps.push(topK(o.topK));
  if (o.topP !== undefined) steps.push(topP(o.topP));
  if (o.minP !== undefined) steps.push(minP(o.minP));
  return chain(...steps, categorical());
}
