/**
 * The scheduler: continuous batching over constant-size recurrent states.
 *
 * Each sequence owns one TNL state of batch 1. The loop repeats:
 *   1. admit waiting sequences while fewer than `maxBatch` are active;
 *   2. run one prefill chunk (chunked Lightning Attention) for the oldest sequence still reading
 *      its prompt, so a long prompt never stalls the others for more than one chunk, and let the
 *      HTTP side run after each chunk (the CPU backend computes synchronously, so a chunk is time
 *      during which nothing else is answered: `prefillChunk` is kept small, 128 tokens, for that);
 *   3. run one recurrent decode step for every sequence that is generating, sample, and retire
 *      the sequences that finished or whose client went away.
 * Sequences therefore join and leave the batch between any two steps.
 *
 * Generating sequences keep their states in the rows of a `BatchDecoder` (one state tensor per
 * layer, updated in place; on CUDA each batch size's step is a recorded graph, replayed). A
 * sequence enters it when its prompt is read and leaves when it ends. Greedy sequences without
 * log probabilities take the token the device picked (argmax), so only one number per sequence
 * comes back; the others read their logits rows.
 *
 * Prompts that start from the empty state are cut at multiples of `prefixBlock`, and the state at
 * each cut is kept in a memory-bounded LRU keyed by the prefix (`prefixKeys`), so a later prompt
 * sharing that prefix starts from the cached state and skips that part of the prefill.
 */
import { gather, scope, type Tensor, tensor } from "@lightning-ts/tensor";
import { BatchDecoder, cloneState, disposeState, picksHighestLogit, prefill, type Sampler, seededRandom, type TnlModel, type TnlState } from "@lightning-ts/tnl";
import { RateWindow } from "./rate.js";
import { prefixKeys, StateLru, stateBytes } from "./state-cache.js";

export interface EngineOptions {
  /** Sequences generating at once (the decode batch). */
  maxBatch: number;
  /** Sequences waiting for a batch slot; more are refused (HTTP 429). */
  maxQueue: number;
  /** Prompt tokens per prefill call; a multiple of `prefixBlock`. The event loop waits this long between turns. */
  prefillChunk: number;
  /** Prefix-cache granularity in tokens. */
  prefixBlock: number;
  /** Prefix-cache budget in bytes (0 turns it off). */
  prefixCacheBytes: number;
  /**
   * Prompts up to this many tokens are read by the decode steps, one token per step beside the
   * generating rows, instead of by a prefill call of their own (default: 32 where the steps replay
   * graphs, where a prefill call costs hundreds of launches from JavaScript and a step's extra row
   * almost nothing; else 0).
   */
  decodePrefill?: number;
  /**
   * Prompt tokens a decode step may read beyond one per row, all rows together: a row reading its
   * prompt takes as many of its tokens in one step as this budget leaves (lightningStep's prompt
   * segments), so a short prompt is read in one step instead of one step per token. Default: 16
   * where the steps replay graphs (each extra-row count recorded once), else 0 (one token a step).
   */
  decodePrefillRows?: number;
  /**
   * Most sequences decoding for which a step still takes extra prompt rows (default 64). Extra
   * rows cost a step what its products pay for more rows: measured on the H200 at the 436M shape
   * (docs/benchmarks/serve-h200.md), that is less than the steps they save up to 64 sequences and
   * more from 128 on, where a new prompt arrives nearly every step.
   */
  decodePrefillBatch?: number;
}

export const DEFAULT_ENGINE_OPTIONS: EngineOptions = { maxBatch: 32, maxQueue: 256, prefillChunk: 128, prefixBlock: 64, prefixCacheBytes: 256 * 2 ** 20 };

export interface TokenInfo {
  token: number;
  /** log p(token) under the model (before sampler transforms), when logprobs were asked for. */
  logprob?: number;
  /** The `topLogprobs` most likely tokens and their log probabilities. */
  top?: [number, number][];
}

export interface SequenceRequest {
  /** Tokens to feed; non-empty. */
  prompt: number[];
  /** Start from this state (the engine takes ownership); default: the empty state. */
  state?: TnlState;
  maxTokens: number;
  sampler: Sampler;
  seed: number;
  /** Random stream within the seed (choice index), as `generate` uses the batch row. */
  stream?: number;
  stopIds: ReadonlySet<number>;
  /** Compute log probabilities, with this many alternatives per token (0 for none). */
  logprobs?: number;
  /** Hand the final state back in the result. */
  keepState?: boolean;
  signal?: AbortSignal;
  /** Called for every generated token; returning true ends the sequence (a stop string matched). */
  onToken(info: TokenInfo): boolean | void;
}

export interface SequenceResult {
  finishReason: "stop" | "length" | "cancelled";
  generated: number[];
  promptTokens: number;
  /** Prompt tokens served from the prefix cache. */
  cachedTokens: number;
  /** With `keepState`: the state after everything but the last generated token, which is `pending`. */
  state?: TnlState;
  pending?: number[];
}

export class QueueFullError extends Error {
  override name = "QueueFullError";
}
export class ShuttingDownError extends Error {
  override name = "ShuttingDownError";
}

/** A decode step on the device, its results not read yet. */
interface LaunchedStep {
  /** The step's number (`Engine.steps` after it): `Sequence.lastStep` of the rows in it. */
  id: number;
  batch: Sequence[];
  /** Rows still reading their prompt after this step. */
  reading: boolean[];
  logits: Tensor;
  greedy: Tensor;
  /** The read of `greedy`, started right after the step so that a next step launched before it is read cannot delay it. */
  picked: Promise<Int32Array>;
}

interface Sequence {
  req: SequenceRequest;
  /** Prompt tokens fed so far. */
  fed: number;
  /** The state while the prompt is read; then it moves into the decoder's row `row`. */
  state?: TnlState;
  row?: number;
  /** Prefix-cache keys of the prompt, when it starts from the empty state. */
  keys?: string[];
  cachedTokens: number;
  generated: number[];
  random: () => number;
  lastToken: number;
  /** The last decode step the sequence was in (`LaunchedStep.id`), 0 before any. */
  lastStep: number;
  /** Whether its next token is the highest logit with nothing else read (greedy, no log probabilities): the device's argmax. */
  takesArgmax: boolean;
  /** When `submit` queued it (performance.now()), and the decode steps launched when it was admitted. */
  submittedAt: number;
  admittedAtStep: number;
  resolve(r: SequenceResult): void;
  reject(err: unknown): void;
}

/**
 * @example
 * const engine = new Engine(model);
 * const result = await engine.submit({ prompt: [1, 5, 9], maxTokens: 16, sampler: greedy(), seed: 0, stopIds: new Set([2]), onToken: (t) => console.log(t.token) });
 */
export class Engine {
  readonly options: EngineOptions;
  readonly prefixCache: StateLru<void>;
  private readonly waiting: Sequence[] = [];
  private readonly active: Sequence[] = [];
  private wake: (() => void) | null = null;
  private draining = false;
  private stopped = false;
  private readonly loopDone: Promise<void>;
  /** Generated tokens, for the metrics. */
  tokensGenerated = 0;
  prefillTokens = 0;
  steps = 0;
  /** Decode steps launched before the previous step's tokens were read (greedy rows, argmax on the device). */
  chainedSteps = 0;
  cancelled = 0;
  /**
   * Admitted sequences, the seconds they waited in the queue before admission, and the decode steps
   * launched between admission and their first token (the prompt read by decode steps, or the steps
   * that ran while its prefill did): where a time to first token goes, for the metrics.
   */
  admitted = 0;
  queueSeconds = 0;
  firstTokens = 0;
  stepsToFirstToken = 0;
  /** Generated tokens, for the rate over the last seconds, and how many of them it has counted. */
  private readonly recent = new RateWindow(5000);
  private countedTokens = 0;
  /** The generating sequences' states, by row. */
  readonly decoder: BatchDecoder;
  /** The sequence in each row of the decoder. */
  private readonly rows: Sequence[] = [];
  /** Longest prompt read by decode steps (EngineOptions.decodePrefill). */
  readonly decodePrefill: number;
  /** Prompt tokens a decode step reads beyond one per row (EngineOptions.decodePrefillRows). */
  readonly decodePrefillRows: number;
  /** Most rows decoding for which a step takes extra prompt rows (EngineOptions.decodePrefillBatch). */
  readonly decodePrefillBatch: number;

  constructor(
    readonly model: TnlModel,
    options: Partial<EngineOptions> = {},
  ) {
    this.options = { ...DEFAULT_ENGINE_OPTIONS, ...options };
    const { prefillChunk, prefixBlock } = this.options;
    if (prefillChunk % prefixBlock !== 0) throw new RangeError(`prefillChunk (${prefillChunk}) must be a multiple of prefixBlock (${prefixBlock})`);
    this.prefixCache = new StateLru(this.options.prefixCacheBytes);
    const graphs = model.params.embed.backend.captureGraph !== undefined;
    this.decodePrefillRows = this.options.decodePrefillRows ?? (graphs ? 16 : 0);
    this.decodePrefillBatch = this.options.decodePrefillBatch ?? 64;
    for (const [name, value] of [["decodePrefillRows", this.decodePrefillRows], ["decodePrefillBatch", this.decodePrefillBatch]] as const) {
      if (!Number.isInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer, got ${String(value)}`);
    }
    this.decoder = new BatchDecoder(model.params, model.config, { capacity: this.options.maxBatch, extraRows: this.decodePrefillRows });
    this.decodePrefill = this.options.decodePrefill ?? (this.decoder.graphs ? 32 : 0);
    if (!Number.isInteger(this.decodePrefill) || this.decodePrefill < 0) throw new RangeError(`decodePrefill must be a non-negative integer, got ${String(this.decodePrefill)}`);
    this.loopDone = this.loop();
  }

  get queueDepth(): number {
    return this.waiting.length;
  }
  get activeCount(): number {
    return this.active.length;
  }
  /** Bytes of the states of active sequences. */
  get activeStateBytes(): number {
    const perRow = this.decoder.stateBytes / this.decoder.capacity;
    return this.active.reduce((sum, s) => sum + (s.state ? stateBytes(s.state) : s.row !== undefined ? perRow : 0), 0);
  }
  /** Generated tokens per second over the last five seconds. */
  tokensPerSecond(): number {
    return this.recent.perSecond();
  }

  /** Queues a sequence; throws QueueFullError or ShuttingDownError at once instead of waiting. */
  submit(req: SequenceRequest): Promise<SequenceResult> {
    if (this.draining) {
      if (req.state) disposeState(req.state);
      throw new ShuttingDownError("the server is shutting down");
    }
    const freeSlots = Math.max(0, this.options.maxBatch - this.active.length);
    if (this.waiting.length - freeSlots >= this.options.maxQueue) {
      if (req.state) disposeState(req.state);
      throw new QueueFullError(`the queue is full (${this.options.maxQueue} waiting, ${this.options.maxBatch} generating)`);
    }
    if (req.prompt.length === 0) throw new RangeError("submit: the prompt must hold at least one token");
    return new Promise((resolve, reject) => {
      const seq: Sequence = {
        req,
        fed: 0,
        state: req.state,
        cachedTokens: 0,
        generated: [],
        random: seededRandom(req.seed, req.stream ?? 0),
        lastToken: -1,
        lastStep: 0,
        takesArgmax: picksHighestLogit(req.sampler) && req.logprobs === undefined,
        submittedAt: performance.now(),
        admittedAtStep: 0,
        resolve,
        reject,
      };
      this.waiting.push(seq);
      req.signal?.addEventListener("abort", () => this.wakeUp(), { once: true });
      this.wakeUp();
    });
  }

  /** Refuses new sequences and resolves when the queued and active ones have finished. */
  async drain(): Promise<void> {
    this.draining = true;
    while (this.waiting.length || this.active.length) await new Promise((r) => setTimeout(r, 10));
  }

  /** Stops the loop and frees every state. */
  async close(): Promise<void> {
    this.draining = true;
    this.stopped = true;
    this.wakeUp();
    await this.loopDone;
    for (const s of [...this.waiting, ...this.active]) this.finish(s, "cancelled");
    this.prefixCache.clear();
    this.decoder.dispose();
  }

  private wakeUp(): void {
    this.wake?.();
    this.wake = null;
  }

  private async loop(): Promise<void> {
    /** A launched decode step whose results are not read yet. */
    let inflight: LaunchedStep | null = null;
    while (!this.stopped) {
      this.retireCancelled();
      while (this.waiting.length && this.active.length < this.options.maxBatch) {
        const s = this.waiting.shift()!;
        this.active.push(s);
        this.admitted++;
        this.queueSeconds += (performance.now() - s.submittedAt) / 1000;
        s.admittedAtStep = this.steps;
        // A short prompt goes straight into a decoder row and is read by the decode steps (from
        // the empty state, the row is zeroed in place: nothing allocated, one launch).
        if (s.req.prompt.length <= this.decodePrefill) this.enterDecoder(s);
      }
      if (this.active.length === 0 && !inflight) {
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      try {
        // Prefill up to `prefillChunk` prompt tokens per iteration, over as many sequences as fit,
        // so a burst of short prompts starts together while a long one still goes a chunk at a time.
        let budget = this.options.prefillChunk;
        for (const s of this.active.filter((x) => x.row === undefined && x.fed < x.req.prompt.length)) {
          if (budget <= 0) break;
          budget -= await this.prefillChunk(s);
          await yieldToIo();
        }
        if (!inflight && this.decoder.size > 0) inflight = this.launchDecode(null);
        if (inflight) {
          const launched: LaunchedStep = inflight;
          // Where every row's next token is known without this step's logits on the host (greedy
          // rows take the argmax on the device), the next step is launched before this one is read:
          // the device runs it while the host reads, streams and retires this one's tokens.
          inflight = this.decoder.size > 0 && this.chainsFrom(launched) ? this.launchDecode(launched) : null;
          // The HTTP side (streamed writes of the last tokens, new requests, disconnects) runs while
          // the device computes, instead of between steps with the device idle.
          await yieldToIo();
          await this.finishDecode(launched, inflight !== null);
          continue;
        }
      } catch (err) {
        // A failing step fails the sequences in it, never the server.
        inflight = null;
        for (const s of [...this.active]) this.fail(s, err);
      }
      // Let the HTTP side run (new requests, streamed writes, disconnects) between steps.
      await yieldToIo();
    }
  }

  private retireCancelled(): void {
    for (const s of [...this.waiting, ...this.active]) if (s.req.signal?.aborted) this.finish(s, "cancelled");
  }

  /** Runs the next piece of `s`'s prompt; returns how many tokens it ran. */
  private async prefillChunk(s: Sequence): Promise<number> {
    const { prompt } = s.req;
    const { prefillChunk, prefixBlock } = this.options;
    const caching = this.options.prefixCacheBytes > 0;
    if (s.fed === 0 && !s.state && caching) {
      // Look up the longest cached prefix that leaves at least one token to run (its logits pick the first token).
      s.keys = prefixKeys(prompt.slice(0, prompt.length - 1), prefixBlock);
      for (let i = s.keys.length - 1; i >= 0; i--) {
        const hit = this.prefixCache.has(s.keys[i]) ? this.prefixCache.get(s.keys[i]) : undefined;
        if (hit) {
          s.state = hit.state;
          s.fed = s.cachedTokens = (i + 1) * prefixBlock;
          break;
        }
      }
      if (s.fed === 0) this.prefixCache.misses++;
    }
    // Cut at the next chunk boundary, and at the last block boundary so that prefix gets cached.
    let end = Math.min(prompt.length, (Math.floor(s.fed / prefillChunk) + 1) * prefillChunk);
    const lastBoundary = s.keys ? s.keys.length * prefixBlock : 0;
    if (lastBoundary > s.fed && lastBoundary < end) end = lastBoundary;
    const r = prefill(this.model.params, this.model.config, [prompt.slice(s.fed, end)], { state: s.state, logits: "last" });
    if (s.state) disposeState(s.state);
    s.state = r.state;
    const ran = end - s.fed;
    this.prefillTokens += ran;
    s.fed = end;
    if (s.keys && end % prefixBlock === 0 && end / prefixBlock <= s.keys.length) {
      const key = s.keys[end / prefixBlock - 1];
      if (!this.prefixCache.has(key)) this.prefixCache.put(key, cloneState(r.state), undefined);
    }
    try {
      if (end === prompt.length) {
        const logits = (await r.logits.data()) as Float32Array;
        // The prompt is read: from here on the sequence's state lives in a decoder row.
        if (this.active.includes(s)) this.enterDecoder(s);
        this.accept(s, logits);
        this.countTokens();
      }
    } finally {
      r.logits.dispose();
    }
    return ran;
  }

  /** Moves `s` into the next decoder row: its state, or the empty state where it has none. */
  private enterDecoder(s: Sequence): void {
    if (s.state) {
      s.row = this.decoder.add(s.state);
      disposeState(s.state);
      s.state = undefined;
    } else {
      s.row = this.decoder.addFresh();
    }
    this.rows[s.row] = s;
  }

  /** Takes `s` out of the decoder (its state copied out when `keep`); the last row moves into its place. */
  private leaveDecoder(s: Sequence, keep: boolean): TnlState | undefined {
    const row = s.row!;
    const state = keep ? this.decoder.state(row) : undefined;
    const moved = this.decoder.remove(row);
    if (moved >= 0) {
      this.rows[row] = this.rows[moved];
      this.rows[row].row = row;
    }
    this.rows.length = this.decoder.size;
    s.row = undefined;
    return state;
  }

  /**
   * Whether the next step can be launched before `launched` is read: every row that generates from
   * `launched`'s output takes its argmax (greedy, no log probabilities) and keeps no state (a row
   * that ends at `launched` still runs the next step, and its kept state would hold one token too
   * many). Rows still reading their prompt, or that joined since, feed tokens the host knows.
   */
  private chainsFrom(launched: LaunchedStep): boolean {
    return this.rows.every((s) => s.lastStep !== launched.id || s.fed < s.req.prompt.length || (s.takesArgmax && s.req.keepState !== true));
  }

  /**
   * Launches one step of every decoder row: a generating row feeds its last token, a row still
   * reading its prompt its next prompt tokens — one, and more while the step's budget of extra rows
   * lasts (`decodePrefillRows`, given to the rows in order, while at most `decodePrefillBatch` rows
   * decode); its output is wanted only after the prompt's last token. After `chainFrom`, a row that
   * generated in it feeds the token it picked there, copied on the device (its host copy is not read
   * yet). `finishDecode` reads the results.
   */
  private launchDecode(chainFrom: LaunchedStep | null): LaunchedStep {
    const batch = [...this.rows];
    const reading = batch.map((s) => s.fed < s.req.prompt.length);
    const allowed = batch.length <= this.decodePrefillBatch ? this.decodePrefillRows : 0;
    let budget = allowed;
    // Prompt tokens each reading row takes this step (its own token row included).
    const taking = batch.map((s, r) => {
      if (!reading[r]) return 0;
      const n = Math.min(s.req.prompt.length - s.fed, 1 + budget);
      budget -= n - 1;
      return n;
    });
    const tokens = batch.map((s, r) => (reading[r] ? s.req.prompt[s.fed + taking[r] - 1] : chainFrom && s.lastStep === chainFrom.id ? null : s.lastToken));
    const before = budget < allowed ? batch.map((s, r) => (taking[r] > 1 ? s.req.prompt.slice(s.fed, s.fed + taking[r] - 1) : undefined)) : undefined;
    const { logits, greedy } = this.decoder.step(tokens, before ? { before } : {});
    const picked = greedy.data() as Promise<Int32Array>;
    picked.catch(() => undefined); // awaited by finishDecode; a failed step is handled there
    const id = ++this.steps;
    if (chainFrom) this.chainedSteps++;
    batch.forEach((s, r) => {
      s.lastStep = id;
      if (!reading[r]) return;
      s.fed += taking[r];
      this.prefillTokens += taking[r];
      reading[r] = s.fed < s.req.prompt.length;
    });
    return { id, batch, reading, logits, greedy, picked };
  }

  /**
   * Reads a launched step's tokens (or logits where a row samples) and hands them to the
   * sequences. With `successor`, the next step is already running: then no row may need logits
   * (`chainsFrom`), since that step has overwritten them.
   */
  private async finishDecode({ batch, reading, logits, picked: pickedRead }: LaunchedStep, successor: boolean): Promise<void> {
    // Rows whose sampler needs the logits (anything but plain greedy, or log probabilities) read
    // them, gathered into one read; the others take the device's argmax.
    const needLogits: number[] = [];
    for (let r = 0; r < batch.length; r++) if (!reading[r] && !batch[r].takesArgmax) needLogits.push(r);
    if (successor && needLogits.length > 0) throw new Error(`internal: ${needLogits.length} rows need the logits of a step whose successor is already running`);
    const picked = await pickedRead;
    if (needLogits.length === 0) {
      // Every row takes the device's argmax (the common case, and the one per token that matters).
      for (let r = 0; r < batch.length; r++) if (!reading[r] && batch[r].row !== undefined) this.acceptToken(batch[r], picked[r]);
      this.countTokens();
      return;
    }
    const wanted = batch.flatMap((_, r) => (reading[r] ? [] : [r]));
    let rows: Float32Array | null = null;
    if (needLogits.length === batch.length) rows = (await logits.data()) as Float32Array;
    else if (needLogits.length > 0) {
      const some = scope(() => gather(logits, tensor(needLogits, [needLogits.length], { dtype: "i32", backend: logits.backend }), 0));
      try {
        rows = (await some.data()) as Float32Array;
      } finally {
        some.dispose();
      }
    }
    const V = this.model.config.vocabSize;
    const logitsRow = new Map(needLogits.map((r, at) => [r, at]));
    for (const r of wanted) {
      const s = batch[r];
      if (s.row === undefined) continue; // it ended meanwhile and left the batch
      const at = logitsRow.get(r);
      if (at !== undefined) this.accept(s, rows!.subarray(at * V, (at + 1) * V));
      else this.acceptToken(s, picked[r]);
    }
    this.countTokens();
  }

  /** Feeds the tokens generated since the last call to the rate window (once per step, not per token). */
  private countTokens(): void {
    this.recent.add(this.tokensGenerated - this.countedTokens);
    this.countedTokens = this.tokensGenerated;
  }

  /** Samples the next token of `s` from its logits row and retires `s` if that ends it. */
  private accept(s: Sequence, row: Float32Array): void {
    const { req } = s;
    const raw = Float32Array.from(row);
    const token = req.sampler(raw, { prompt: req.prompt, generated: s.generated, random: s.random });
    this.acceptToken(s, token, row);
  }

  /** Records `token` as `s`'s next token (with its log probabilities from `row` when asked) and retires `s` if that ends it. */
  private acceptToken(s: Sequence, token: number, row?: Float32Array): void {
    const { req } = s;
    if (s.generated.length === 0) {
      this.firstTokens++;
      this.stepsToFirstToken += this.steps - s.admittedAtStep;
    }
    s.generated.push(token);
    s.lastToken = token;
    this.tokensGenerated++;
    const info: TokenInfo = { token };
    if (req.logprobs !== undefined && row) Object.assign(info, logprobsOf(row, token, req.logprobs));
    const stopString = req.onToken(info) === true;
    if (stopString || req.stopIds.has(token)) this.finish(s, "stop");
    else if (s.generated.length >= req.maxTokens) this.finish(s, "length");
  }

  private remove(s: Sequence): void {
    for (const list of [this.waiting, this.active]) {
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
    }
    if (s.row !== undefined) this.leaveDecoder(s, false);
  }

  private finish(s: Sequence, finishReason: SequenceResult["finishReason"]): void {
    if (s.row !== undefined) s.state = this.leaveDecoder(s, s.req.keepState === true && finishReason !== "cancelled");
    this.remove(s);
    if (finishReason === "cancelled") this.cancelled++;
    const result: SequenceResult = { finishReason, generated: s.generated, promptTokens: s.req.prompt.length, cachedTokens: s.cachedTokens };
    if (s.req.keepState && s.state && finishReason !== "cancelled") {
      result.state = s.state;
      result.pending = s.generated.length ? [s.lastToken] : [];
    } else if (s.state) {
      disposeState(s.state);
    }
    s.state = undefined;
    s.resolve(result);
  }

  private fail(s: Sequence, err: unknown): void {
    this.remove(s);
    if (s.state) disposeState(s.state);
    s.state = undefined;
    s.reject(err);
  }
}

/** Resolves after the event loop has handled pending I/O (setImmediate runs after the poll phase). */
const yieldToIo = () => new Promise<void>((r) => setImmediate(r));

/** log p of `token` and the `top` most likely tokens, from raw logits. */
export function logprobsOf(row: Float32Array, token: number, top: number): { logprob: number; top: [number, number][] } {
  let max = -Infinity;
  for (const x of row) if (x > max) max = x;
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  const logZ = max + Math.log(sum);
  const best: [number, number][] = [];
  if (top > 0) {
    for (let i = 0; i < row.length; i++) {
      if (best.length < top || row[i] > best[best.length - 1][1]) {
        best.push([i, row[i]]);
        best.sort((a, b) => b[1] - a[1]);
        if (best.length > top) best.pop();
      }
    }
  }
  return { logprob: row[token] - logZ, top: best.map(([i, x]) => [i, x - logZ]) };
}
