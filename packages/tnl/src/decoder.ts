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
  /** Per layer [capacity, H, D, E], f32: row r is the state of the sequence in row r. */
  readonly #kv: Tensor[];
  readonly #ids: Tensor;
  readonly #positions: Tensor;
  readonly #slopes: Tensor[];
  readonly #backend: Backend;
  readonly #useGraphs: boolean;
  readonly #graphs = new Map<number, CapturedGraph<StepTensors>>();
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
    this.capacity = capacity;
    this.#backend = params.embed.backend;
    this.#kv = [...initState(config, capacity, { dtype: params.embed.dtype === "f64" ? "f64" : "f32", backend: this.#backend }).kv];
    this.#ids = zeros([capacity, 1], { dtype: "i32", backend: this.#backend });
    this.#positions = zeros([capacity], { dtype: "f32", backend: this.#backend });
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
   * only rows that were in the previous step may take it. The results stay valid until the next step.
   */
  step(tokens: readonly (number | null)[]): DecodeOutput {
    this.#check();
    const n = this.size;
    if (n === 0) throw new TnlInputError("BatchDecoder.step: no rows in use (add a state first)");
    if (tokens.length !== n) throw new TnlInputError(`BatchDecoder.step: ${tokens.length} tokens for ${n} rows in use`);
    const V = this.config.vocabSize;
    tokens.forEach((t, r) => {
      if (t === null) {
        if (!this.#stepped[r]) throw new TnlInputError(`BatchDecoder.step: row ${r} has no previous step whose token a null could feed (it joined after the last step)`);
      } else if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new TnlInputError(`BatchDecoder.step: token ${String(t)} of row ${r} is outside the vocabulary [0, ${V})`);
      }
    });
    const bucket = this.#useGraphs ? bucketFor(n, this.capacity) : n;
    this.#writeIds(tokens, bucket);
    const positions = new Float32Array(bucket);
    positions.set(this.#position);
    this.#backend.write(this.#positions.handle.storage, new Uint8Array(positions.buffer));
    for (const t of this.#handedOut) t.dispose();
    this.#handedOut = [];
    let out: StepTensors;
    const graph = this.#graphs.get(bucket);
    if (graph) {
      graph.replay();
      out = graph.result;
    } else {
      // Without a graph the step runs eagerly. So does the first step of each bucket before it is
      // recorded: lazy set-up (library handles, kernel attributes) happens outside the recording,
      // and the recording itself runs nothing, so the states advance once per step either way.
      out = this.#run(bucket);
      this.#handedOut.push(out.logits, out.greedy);
      if (this.#useGraphs) this.#graphs.set(bucket, this.#backend.captureGraph!(() => this.#run(bucket)));
    }
    for (let r = 0; r < n; r++) {
      this.#position[r]++;
      this.#stepped[r] = true;
    }
    this.#lastGreedy = out.greedy;
    const result = { logits: leadingRows(out.logits, n), greedy: leadingRows(out.greedy, n) };
    this.#handedOut.push(result.logits, result.greedy);
    return result;
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

  /** One step over the first `bucket` rows, the states written in place. */
  #run(bucket: number): StepTensors {
    return scope(() => {
      const ids = leadingRows(this.#ids, bucket);
      const kv = this.#kv.map((t) => leadingRows(t, bucket));
      const r = layers(this.params, this.config, ids, leadingRows(this.#positions, bucket), kv, {}, { slopes: this.#slopes });
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
