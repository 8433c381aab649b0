/**
 * Autoregressive generation: prefill the prompt once, then one recurrent step per token through a
 * `BatchDecoder` (the state has constant size, whatever the context length). Tokens arrive as an async iterable, so a
 * caller can stream them, stop early with `break` (the state is freed either way), or collect them.
 */
import type { Tensor } from "@lightning-ts/tensor";
import type { TnlModel } from "./params.js";
import { BatchDecoder } from "./decoder.js";
import { prefill } from "./model.js";
import { picksHighestLogit, type Sampler, samplerFromOptions, type SamplingOptions, seededRandom } from "./sampling.js";
import { disposeState, type TnlState } from "./state.js";

export interface TokenEvent {
  /** Batch row the token belongs to. */
  row: number;
  /** Position among this row's generated tokens (0 for the first). */
  index: number;
  token: number;
  /** The logits the token was drawn from (before any sampler transform), with `returnLogits`. */
  logits?: Float32Array;
  /** On the row's last event: it drew a stop id, or reached `maxTokens`. */
  finishReason?: "stop" | "length";
}

export interface GenerateOptions extends SamplingOptions {
  /** New tokens per row at most (default 64). */
  maxTokens?: number;
  /** Picks each token; overrides the sampling options. */
  sampler?: Sampler;
  /** Seed of the per-row random streams (default 0). */
  seed?: number;
  /** Tokens that end a row (default: the config's eos_token_id; [] for none). The stop token is reported. */
  stopIds?: readonly number[];
  returnLogits?: boolean;
  /** Lightning Attention block size for the prefill. */
  blockSize?: number;
  /** Continue after this state (it stays the caller's); the prompt then holds only the new tokens. */
  state?: TnlState;
}

/**
 * Generates tokens for one prompt (number[]) or a batch of equal-length prompts (number[][]).
 *
 * @example
 * for await (const { token, finishReason } of generate(model, [1, 306, 4658], { maxTokens: 32, temperature: 0.8, topP: 0.95, seed: 1 })) {
 *   process.stdout.write(decoder.push(token));
 * }
 */
export async function* generate(
  model: TnlModel,
  prompt: readonly number[] | readonly (readonly number[])[],
  options: GenerateOptions = {},
): AsyncGenerator<TokenEvent> {
  const { params, config } = model;
  const rows = (prompt.length > 0 && Array.isArray(prompt[0]) ? prompt : [prompt]) as readonly (readonly number[])[];
  const maxTokens = options.maxTokens ?? 64;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new RangeError(`generate: maxTokens must be a non-negative integer, got ${maxTokens}`);
  const sampler = options.sampler ?? samplerFromOptions(options);
  const stopIds = new Set(options.stopIds ?? [config.eosTokenId]);
  const seed = options.seed ?? 0;
  const generated = rows.map(() => [] as number[]);
  const contexts = rows.map((p, b) => ({ prompt: p, generated: generated[b], random: seededRandom(seed, b) }));
  const done = rows.map(() => false);
  if (maxTokens === 0) return;

  const first = prefill(params, config, rows, { state: options.state, logits: "last", blockSize: options.blockSize });
  // The rows' states move into a batch decoder: steps in place, recorded as a graph where the
  // backend can (CUDA), so a token costs one replay rather than hundreds of launches.
  const decoder = new BatchDecoder(params, config, { capacity: rows.length });
  let logits = first.logits;
  // Plain greedy with no logits to hand out: each step's token is its argmax on the device, so the
  // next step is launched before this one's tokens are read (one i32 a row comes back instead of
  // the logits) and the device does not wait for the host between tokens.
  const chained = picksHighestLogit(sampler) && !options.returnLogits;
  let pending: Promise<Int32Array> | null = null; // chained: the tokens of the step last launched, not yet read
  try {
    decoder.add(first.state);
    disposeState(first.state);
    for (let index = 0; ; index++) {
      const V = config.vocabSize;
      let picks: Int32Array | null = null;
      let data: Float32Array | null = null;
      if (pending) {
        const current = pending;
        // Every row feeds the token it picked in the step being read, copied on the device
        // (finished rows ride along; their outputs are ignored).
        pending = readTokens(decoder.step(rows.map(() => null)).greedy);
        picks = await current;
      } else {
        data = (await logits.data()) as Float32Array;
      }
      for (let b = 0; b < rows.length; b++) {
        if (done[b]) continue;
        const row = data?.slice(b * V, (b + 1) * V);
        const token = picks ? picks[b] : sampler(Float32Array.from(row!), contexts[b]);
        generated[b].push(token);
        const event: TokenEvent = { row: b, index, token };
        if (options.returnLogits) event.logits = row;
        if (stopIds.has(token)) event.finishReason = "stop";
        else if (generated[b].length >= maxTokens) event.finishReason = "length";
        if (event.finishReason) done[b] = true;
        yield event;
      }
      if (done.every(Boolean)) break;
      if (pending) continue;
      // Finished rows still ride along in the batch (their outputs are ignored).
      const out = decoder.step(generated.map((g) => g[g.length - 1]));
      if (chained) pending = readTokens(out.greedy);
      else logits = out.logits;
    }
  } finally {
    // A step launched ahead is read (or has failed) before its decoder goes.
    if (pending) await pending.catch(() => undefined);
    first.logits.dispose();
    disposeState(first.state);
    decoder.dispose();
  }
}

/** Starts reading a step's tokens; a failure surfaces where the promise is awaited. */
function readTokens(greedy: Tensor): Promise<Int32Array> {
  const read = greedy.data() as Promise<Int32Array>;
  read.catch(() => undefined);
  return read;
}

/**
 * Runs `generate` to the end and returns each row's tokens.
 *
 * @example
 * const [ids] = await generateIds(model, [1, 306], { maxTokens: 8 });
 */
export async function generateIds(
  model: TnlModel,
  prompt: readonly number[] | readonly (readonly number[])[],
  options: GenerateOptions = {},
): Promise<number[][]> {
  const rows = prompt.length > 0 && Array.isArray(prompt[0]) ? prompt.length : 1;
  const out = Array.from({ length: rows }, () => [] as number[]);
  for await (const ev of generate(model, prompt, options)) out[ev.row].push(ev.token);
  return out;
}
