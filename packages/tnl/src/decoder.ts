/**
 * Batched decoding for serving: the recurrent states of up to `capacity` sequences live in the rows
 * of one state tensor per layer, and a decode step runs on the first n rows, writing the next states
 * over the current ones. Sequences join by copying their state into the next free row (or, from the
 * empty state, by zeroing it: `addFresh`) and leave by moving the last row into theirs, so the rows
 * in use are always the first `size` and nothing is concatenated or split per step. A join or a
 * leave touches one row of every layer as one `copyIntoMany` (one launch on CUDA, whatever the
 * number of layers), and a fresh sequence allocates nothing.
 *
 * A row may feed the token its previous step picked (`null` in `step`'s tokens): it is copied from
 * that step's argmax on the device, so a greedy loop can launch step n+1 before it has read step
 * n's tokens back, and the device never waits for the host's turn-around.
 *
 * On a backend that records graphs (`Backend.captureGraph`: CUDA), the step of each batch bucket
 * (1, 2, 4, … capacity rows) is recorded once and replayed, so a token costs one graph launch
 * instead of hundreds of kernel launches from JavaScript. Everything a recorded step reads or
 * writes therefore stays at one address: the token ids and positions are written into fixed
 * tensors before each replay, the states are updated in place, and the logits and greedy tokens
 * land in tensors the graph owns. A bucket runs rows past `size` too; those rows are free, their
 * results are never read and `add` overwrites their state.
 *
 * With `extraRows`, a step may also feed a row tokens before its own (`step`'s `before`: a prompt
 * read several tokens a step instead of one): they run as extra token rows of the same step, after
 * the bucket's rows, and lightningStep's prompt segments step each row's state through them in
 * order. Their count is bucketed too (1, 2, 4, … extraRows), so a graph is recorded per pair.
 */
import {
  argmax,
  type Backend,
  type CapturedGraph,
  copyInto,
  copyIntoMany,
  leadingRows,
  reshape,
  scope,
  slopesTensor,
  type Tensor,
  tnlSlopes,
  zeros,
} from "@lightning-ts/tensor";
import type { TnlConfig } from "./config.js";
import { TnlInputError } from "./errors.js";
import { layers } from "./model.js";
import type { TnlParams } from "./params.js";
import { checkStateFor, initState, stateBatch, type TnlState } from "./state.js";

export interface BatchDecoderOptions {
  /** Rows (sequences decoded at once). */
  capacity: number;
  /** Record each bucket's step as a graph where the backend can (default true). */
  graphs?: boolean;
  /**
   * Most tokens a step may feed before the rows' own (`step`'s `before`, all rows together);
   * default 0: one token per row. Needs a backend whose lightningStep takes prompt segments (CUDA, CPU).
   */
  extraRows?: number;
}

export interface StepOptions {
  /**
   * Tokens row r reads before `tokens[r]` in this step, in order (e.g. the rest of a prompt):
   * the row's state and position advance by all of them, and its logits and greedy token are
   * those after `tokens[r]`. At most the decoder's `extraRows` in all; missing rows read none.
   */
  before?: readonly (readonly number[] | undefined)[];
}

/** A step's results, valid until the next step or `dispose`. */
export interface DecodeOutput {
  /** Logits [n, V] of the rows in use, in the compute dtype. */
  logits: Tensor;
  /** The highest logit's token of each row (the first on ties), i32 [n]. */
  greedy: Tensor;
}

interface StepTensors {
  logits: Tensor;
  greedy: Tensor;
}

/**
 * @example
 * const decoder = new BatchDecoder(model.params, model.config, { capacity: 64 });
 * const row = decoder.add(prefilled.state); // state after the prompt
 * const fresh = decoder.addFresh();          // the empty state, to read a prompt by decode steps
 * const { greedy } = decoder.step([lastToken]);
 * const [next] = await greedy.data();
 */
export class BatchDecoder {
  readonly capacity: number;
  /** Most tokens a step may feed before the rows' own (BatchDecoderOptions.extraRows). */
  readonly extraRows: number;
  /** Per layer [capacity, H, D, E], f32: row r is the state of the sequence in row r. */
  readonly #kv: Tensor[];
  readonly #ids: Tensor;
  readonly #positions: Tensor;
  /** Prompt segments of a step with extra rows, i32 [capacity + 1] (null without extra rows). */
  readonly #segments: Tensor | null;
  readonly #slopes: Tensor[];
  readonly #backend: Backend;
  readonly #useGraphs: boolean;
  /** Recorded steps by bucket and extra-row bucket ("rows+extra"). */
  readonly #graphs = new Map<string, CapturedGraph<StepTensors>>();
  /** What the last step handed out (and its eager results), disposed by the next step. */
  #handedOut: Tensor[] = [];
  /** The last step's argmax, all its bucket's rows, kept in row order as rows move (`null` before a step). */
  #lastGreedy: Tensor | null = null;
  /** Absolute position of the next token of each row in use. */
  #position: number[] = [];
  /** Whether each row in use was in the last step (so `null` may feed the token it picked). */
  #stepped: boolean[] = [];
  #disposed = false;

  constructor(
    readonly params: TnlParams,
    readonly config: TnlConfig,
    options: BatchDecoderOptions,
  ) {
    const { capacity } = options;
    if (!Number.isInteger(capacity) || capacity < 1) throw new TnlInputError(`BatchDecoder: capacity must be a positive integer, got ${String(capacity)}`);
    const extraRows = options.extraRows ?? 0;
    if (!Number.isInteger(extraRows) || extraRows < 0) throw new TnlInputError(`BatchDecoder: extraRows must be a non-negative integer, got ${String(extraRows)}`);
    this.capacity = capacity;
    this.extraRows = extraRows;
    this.#backend = params.embed.backend;
    this.#kv = [...initState(config, capacity, { dtype: params.embed.dtype === "f64" ? "f64" : "f32", backend: this.#backend }).kv];
    this.#ids = zeros([capacity + extraRows, 1], { dtype: "i32", backend: this.#backend });
    this.#positions = zeros([capacity + extraRows], { dtype: "f32", backend: this.#backend });
    this.#segments = extraRows > 0 ? zeros([capacity + 1], { dtype: "i32", backend: this.#backend }) : null;
    this.#slopes = config.lrpe.map((_, l) => slopesTensor(tnlSlopes(config.numHeads, l, config.numLayers), this.#backend));
    this.#useGraphs = (options.graphs ?? true) && this.#backend.captureGraph !== undefined;
  }

  /** Rows in use. */
  get size(): number {
    return this.#position.length;
  }

  /** Whether steps replay recorded graphs. */
  get graphs(): boolean {
    return this.#useGraphs;
  }

  /** Dtype of the states (f32; f64 for a float64 model): what `add` takes. */
  get stateDtype(): "f32" | "f64" {
    return this.#kv[0].dtype === "f64" ? "f64" : "f32";
  }

  /** Bytes of the state rows (all `capacity` of them). */
  get stateBytes(): number {
    return this.#kv.reduce((sum, t) => sum + t.size * (t.dtype === "f64" ? 8 : 4), 0);
  }

  /**
   * Copies a state (it stays the caller's) into the next free rows, one row per sequence of its
   * batch, and returns the first of those rows.
   */
  add(state: TnlState): number {
    this.#check();
    const batch = stateBatch(state);
    if (this.size + batch > this.capacity) {
      throw new TnlInputError(`BatchDecoder.add: a state of ${batch} sequences does not fit in the ${this.capacity - this.size} free rows (capacity ${this.capacity})`);
    }
    checkStateFor(state, this.config, batch);
    const row = this.size;
    state.kv.forEach((s, l) => {
      if (s.dtype !== this.#kv[l].dtype) throw new TnlInputError(`BatchDecoder.add: layer ${l} of the state is ${s.describe()}, the decoder's states are ${this.#kv[l].dtype}`);
    });
    copyIntoMany(state.kv.map((s, l) => ({ dst: this.#kv[l], src: s, dstOffset: (row * s.size) / batch })));
    return this.#join(batch, state.position);
  }

  /**
   * Starts a sequence from the empty state (zeros at position 0, as `initState`) in the next free
   * row, and returns that row: the row of every layer is zeroed in place, so nothing is allocated
   * and nothing is copied from the host.
   */
  addFresh(): number {
    this.#check();
    if (this.size >= this.capacity) throw new TnlInputError(`BatchDecoder.addFresh: no free row (all ${this.capacity} in use)`);
    const row = this.size;
    copyIntoMany(this.#kv.map((t) => ({ dst: t, src: null, dstOffset: row * this.#rowSize(t), count: this.#rowSize(t) })));
    return this.#join(1, 0);
  }

  /** Takes `batch` rows from the next free one, at `position`; returns the first. */
  #join(batch: number, position: number): number {
    const row = this.size;
    for (let b = 0; b < batch; b++) {
      this.#position.push(position);
      this.#stepped.push(false);
    }
    return row;
  }

  /** Elements of one row of a layer's state tensor. */
  #rowSize(t: Tensor): number {
    return t.size / this.capacity;
  }

  /** A copy of row `row`'s state (batch 1), e.g. to keep a finished conversation. */
  state(row: number): TnlState {
    this.#checkRow("state", row);
    const kv = this.#kv.map((t) => zeros([1, ...t.shape.slice(1)], { dtype: t.dtype, backend: this.#backend }));
    copyIntoMany(kv.map((out, l) => ({ dst: out, src: this.#kv[l], srcOffset: row * out.size, count: out.size })));
    return { position: this.#position[row], kv };
  }

  /**
   * Frees row `row`: the last row in use moves into it. Returns the row that moved (its old index),
   * or −1 when `row` was the last.
   */
  remove(row: number): number {
    this.#checkRow("remove", row);
    const last = this.size - 1;
    if (row !== last) {
      // Every layer's row, and the token the last row picked if a null may still feed it: one launch.
      const moves = this.#kv.map((t) => ({ dst: t, src: t, dstOffset: row * this.#rowSize(t), srcOffset: last * this.#rowSize(t), count: this.#rowSize(t) }));
      if (this.#stepped[last]) moves.push({ dst: this.#lastGreedy!, src: this.#lastGreedy!, dstOffset: row, srcOffset: last, count: 1 });
      copyIntoMany(moves);
      this.#position[row] = this.#position[last];
      this.#stepped[row] = this.#stepped[last];
    }
    this.#position.pop();
    this.#stepped.pop();
    return row === last ? -1 : last;
  }

  /**
   * Feeds `tokens[r]` to row r for every row in use and advances their states. A `null` token feeds
   * the token the row's previous step picked (its `greedy`), copied on the device without a read;
   * only rows that were in the previous step may take it. `before` feeds rows tokens ahead of their
   * own in the same step (StepOptions). The results stay valid until the next step.
   */
  step(tokens: readonly (number | null)[], options: StepOptions = {}): DecodeOutput {
    this.#check();
    const n = this.size;
    if (n === 0) throw new TnlInputError("BatchDecoder.step: no rows in use (add a state first)");
    if (tokens.length !== n) throw new TnlInputError(`BatchDecoder.step: ${tokens.length} tokens for ${n} rows in use`);
    const V = this.config.vocabSize;
    const inVocabulary = (t: unknown, where: string) => {
      if (!Number.isInteger(t) || (t as number) < 0 || (t as number) >= V) throw new TnlInputError(`BatchDecoder.step: token ${String(t)} ${where} is outside the vocabulary [0, ${V})`);
    };
    tokens.forEach((t, r) => {
      if (t === null) {
        if (!this.#stepped[r]) throw new TnlInputError(`BatchDecoder.step: row ${r} has no previous step whose token a null could feed (it joined after the last step)`);
      } else {
        inVocabulary(t, `of row ${r}`);
      }
    });
    const before = this.#checkBefore(options, n, inVocabulary);
    const extra = before.reduce((sum, b) => sum + b.length, 0);
    const bucket = this.#useGraphs ? bucketFor(n, this.capacity) : n;
    const extraBucket = extra === 0 ? 0 : this.#useGraphs ? bucketFor(extra, this.extraRows) : extra;
    this.#writeIds(tokens, bucket);
    const positions = new Float32Array(bucket + extraBucket);
    for (let r = 0; r < n; r++) positions[r] = this.#position[r] + before[r].length;
    if (extraBucket > 0) this.#writeExtra(before, bucket, extraBucket, positions);
    this.#backend.write(this.#positions.handle.storage, new Uint8Array(positions.buffer));
    for (const t of this.#handedOut) t.dispose();
    this.#handedOut = [];
    let out: StepTensors;
    const key = `${bucket}+${extraBucket}`;
    const graph = this.#graphs.get(key);
    if (graph) {
      graph.replay();
      out = graph.result;
    } else {
      // Without a graph the step runs eagerly. So does the first step of each bucket before it is
      // recorded: lazy set-up (library handles, kernel attributes) happens outside the recording,
      // and the recording itself runs nothing, so the states advance once per step either way.
      out = this.#run(bucket, extraBucket);
      this.#handedOut.push(out.logits, out.greedy);
      if (this.#useGraphs) this.#graphs.set(key, this.#backend.captureGraph!(() => this.#run(bucket, extraBucket)));
    }
    for (let r = 0; r < n; r++) {
      this.#position[r] += 1 + before[r].length;
      this.#stepped[r] = true;
    }
    this.#lastGreedy = out.greedy;
    const result = { logits: leadingRows(out.logits, n), greedy: leadingRows(out.greedy, n) };
    this.#handedOut.push(result.logits, result.greedy);
    return result;
  }

  /** `options.before` checked: a list per row in use (empty where none is given). */
  #checkBefore(options: StepOptions, n: number, inVocabulary: (t: unknown, what: string) => void): (readonly number[])[] {
    if (options === null || typeof options !== "object") throw new TnlInputError(`BatchDecoder.step: options must be an object { before? }, got ${String(options)}`);
    const { before } = options;
    if (before === undefined) return Array.from({ length: n }, () => []);
    if (!Array.isArray(before) || before.length > n) throw new TnlInputError(`BatchDecoder.step: before must be an array of at most ${n} token lists (one per row in use), got ${Array.isArray(before) ? `${before.length} entries` : typeof before}`);
    const lists = Array.from({ length: n }, (_, r) => {
      const list: unknown = before[r];
      if (list === undefined) return [];
      if (!Array.isArray(list)) throw new TnlInputError(`BatchDecoder.step: before[${r}] must be an array of token ids, got ${typeof list}`);
      list.forEach((t, i) => inVocabulary(t, `at before[${r}][${i}]`));
      return list as number[];
    });
    const extra = lists.reduce((sum, b) => sum + b.length, 0);
    if (extra > this.extraRows) {
      throw new TnlInputError(`BatchDecoder.step: before holds ${extra} tokens, more than the decoder's extraRows (${this.extraRows})`);
    }
    return lists;
  }

  /**
   * The extra token rows (after the bucket's `bucket` rows, `extraBucket` of them): their ids, their
   * positions into `positions`, and the segment offsets (rows past the last in use read none).
   */
  #writeExtra(before: readonly (readonly number[])[], bucket: number, extraBucket: number, positions: Float32Array): void {
    const ids = new Int32Array(extraBucket);
    const offsets = new Int32Array(bucket + 1);
    let at = 0;
    before.forEach((list, r) => {
      list.forEach((t, j) => {
        ids[at + j] = t;
        positions[bucket + at + j] = this.#position[r] + j;
      });
      at += list.length;
      offsets[r + 1] = at;
    });
    offsets.fill(at, before.length + 1);
    this.#backend.write(this.#ids.handle.storage, new Uint8Array(ids.buffer), bucket * 4);
    this.#backend.write(this.#segments!.handle.storage, new Uint8Array(offsets.buffer));
  }

  /** Frees the state rows, the fixed inputs and every recorded graph. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const g of this.#graphs.values()) {
      g.result.logits.dispose();
      g.result.greedy.dispose();
      g.dispose();
    }
    this.#graphs.clear();
    for (const t of this.#handedOut) t.dispose();
    for (const t of [...this.#kv, this.#ids, this.#positions, ...this.#slopes]) t.dispose();
    this.#segments?.dispose();
  }

  /**
   * The step's token ids: `null` rows take the last step's argmax (one device copy of the leading
   * rows), the others are written from the host — all at once when no row is `null`, else one
   * write per run of given rows.
   */
  #writeIds(tokens: readonly (number | null)[], bucket: number): void {
    const storage = this.#ids.handle.storage;
    if (!tokens.includes(null)) {
      const ids = new Int32Array(bucket);
      ids.set(tokens as readonly number[]);
      this.#backend.write(storage, new Uint8Array(ids.buffer));
      return;
    }
    // Rows past the last step's (they joined since) are never null: the copy covers the rows it had.
    copyInto(this.#ids, this.#lastGreedy!, { count: Math.min(tokens.length, this.#lastGreedy!.size) });
    for (let r = 0; r < tokens.length; ) {
      if (tokens[r] === null) {
        r++;
        continue;
      }
      let end = r;
      while (end < tokens.length && tokens[end] !== null) end++;
      const run = Int32Array.from(tokens.slice(r, end) as number[]);
      this.#backend.write(storage, new Uint8Array(run.buffer), r * 4);
      r = end;
    }
  }

  /** One step over the first `bucket` rows (and `extra` token rows after them), the states written in place. */
  #run(bucket: number, extra: number): StepTensors {
    return scope(() => {
      const ids = leadingRows(this.#ids, bucket + extra);
      const kv = this.#kv.map((t) => leadingRows(t, bucket));
      const segments = extra > 0 ? leadingRows(this.#segments!, bucket + 1) : undefined;
      const r = layers(this.params, this.config, ids, leadingRows(this.#positions, bucket + extra), kv, {}, { slopes: this.#slopes, segments });
      const logits = reshape(r.logits, [bucket, this.config.vocabSize]);
      return { logits, greedy: argmax(logits, -1) };
    });
  }

  #check(): void {
    if (this.#disposed) throw new TnlInputError("BatchDecoder: used after dispose()");
  }

  #checkRow(method: string, row: number): void {
    this.#check();
    if (!Number.isInteger(row) || row < 0 || row >= this.size) throw new TnlInputError(`BatchDecoder.${method}: row must be an integer in [0, ${this.size}), got ${String(row)}`);
  }
}

/** The smallest power of two ≥ n, at most `capacity` (the graphs recorded per decoder). */
function bucketFor(n: number, capacity: number): number {
  let b = 1;
  while (b < n) b *= 2;
  return Math.min(b, capacity);
}
