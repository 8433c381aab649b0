/**
 * Training batches: random windows of the token stream, drawn from the counter-based RNG of the
 * tensor core with the step number as the counter. A batch depends only on (seed, step), so a
 * resumed run sees exactly the batches an uninterrupted one would.
 */
import { appendFileSync, writeFileSync } from "node:fs";
import { counterBlock, seedKey } from "@lightning-ts/tensor";
import { writeFileAtomic } from "./checkpoint.js";
import { DataError } from "./data.js";
import type { TokenSource } from "./shards.js";

/**
 * B windows of `seqLen + 1` tokens (inputs and their next-token targets) for training step `step`,
 * read from `tokens` (in memory, or token shards on disk). `rows` picks some of them (a
 * data-parallel rank's share): the same windows as those rows of the whole batch.
 */
export function trainingBatch(tokens: TokenSource, seed: number, step: number, batchSize: number, seqLen: number, rows = { first: 0, count: batchSize }): Int32Array {
  const span = seqLen + 1;
  const starts = tokens.length - span + 1;
  if (starts < 1) throw new DataError(`data: the training split has ${tokens.length} tokens, fewer than one sequence of ${span} (--seq-len ${seqLen})`);
  const key = seedKey(seed);
  const block = new Uint32Array(4);
  if (!(rows.first >= 0 && rows.count >= 0 && rows.first + rows.count <= batchSize)) throw new RangeError(`trainingBatch: rows ${rows.first}…${rows.first + rows.count - 1} are not rows of a batch of ${batchSize}`);
  const out = new Int32Array(rows.count * span);
  for (let i = 0; i < rows.count; i++) {
    const b = rows.first + i;
    counterBlock(key, step * batchSize + b, block);
    // 53 random bits → a start in [0, starts) with negligible bias.
    const u = (block[0] * 2 ** 21 + (block[1] >>> 11)) / 2 ** 53;
    const start = Math.floor(u * starts);
    out.set(tokens.read(start, span), i * span);
  }
  return out;
}

/**
 * `count` windows of `seqLen + 1` tokens spread evenly over `tokens` (all of them when count is 0),
 * read one at a time as they are iterated.
 */
export function evaluationWindows(tokens: TokenSource, seqLen: number, count = 0): { length: number; [Symbol.iterator](): Iterator<Int32Array> } {
  const span = seqLen + 1;
  // Consecutive windows overlap by one token, so every token but the first is a target once.
  const total = Math.floor((tokens.length - 1) / seqLen);
  const n = count === 0 ? total : Math.min(count, total);
  return {
    length: n,
    *[Symbol.iterator]() {
      for (let i = 0; i < n; i++) {
        const w = n === total ? i : Math.floor((i * total) / n);
        yield tokens.read(w * seqLen, span);
      }
    },
  };
}

/** What `<file>.json` says about a batch dump. */
export interface BatchDumpInfo {
  format: "lightning-ts.batches/1";
  /** Each id as a little-endian unsigned 32-bit integer, no header. */
  dtype: "uint32";
  /** Sequences per step, each `span` = seq-len + 1 ids: rows × span ids per step, steps one after another. */
  rows: number;
  span: number;
  /** The step (1-based) of the first batch in the file. */
  first_step: number;
}

/**
 * The token ids of every step's batch, as trained on, in one file (`--dump-batches`): another
 * implementation reads the very same rows in the same order, whatever our RNG.
 *
 * @example
 * const dump = new BatchDump("batches.u32", { rows: 8, span: 2049, firstStep: 1 });
 * dump.write(trainingBatch(tokens, seed, 0, 8, 2048));
 */
export class BatchDump {
  constructor(
    readonly file: string,
    private readonly shape: { rows: number; span: number; firstStep: number },
  ) {
    const info: BatchDumpInfo = { format: "lightning-ts.batches/1", dtype: "uint32", rows: shape.rows, span: shape.span, first_step: shape.firstStep };
    writeFileAtomic(`${file}.json`, JSON.stringify(info, null, 2) + "\n");
    writeFileSync(file, new Uint8Array(0));
  }

  /** Appends one step's batch (rows × span ids). */
  write(batch: Int32Array): void {
    if (batch.length !== this.shape.rows * this.shape.span) throw new Error(`BatchDump: a batch of ${batch.length} ids, expected ${this.shape.rows} × ${this.shape.span}`);
    // Ids are non-negative, so their int32 bytes are their uint32 bytes.
    appendFileSync(this.file, new Uint8Array(batch.buffer, batch.byteOffset, batch.byteLength));
  }
}
