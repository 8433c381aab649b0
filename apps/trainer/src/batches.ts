/**
 * Training batches: random windows of the token stream, drawn from the counter-based RNG of the
 * tensor core with the step number as the counter. A batch depends only on (seed, step), so a
 * resumed run sees exactly the batches an uninterrupted one would.
 */
import { counterBlock, seedKey } from "@lightning-ts/tensor";
import { DataError } from "./data.js";
import type { TokenSource } from "./shards.js";

/**
 * B windows of `seqLen + 1` tokens (inputs and their next-token targets) for training step `step`,
 * read from `tokens` (in memory, or token shards on disk).
 */
export function trainingBatch(tokens: TokenSource, seed: number, step: number, batchSize: number, seqLen: number): Int32Array {
  const span = seqLen + 1;
  const starts = tokens.length - span + 1;
  if (starts < 1) throw new DataError(`data: the training split has ${tokens.length} tokens, fewer than one sequence of ${span} (--seq-len ${seqLen})`);
  const key = seedKey(seed);
  const block = new Uint32Array(4);
  const out = new Int32Array(batchSize * span);
  for (let b = 0; b < batchSize; b++) {
    counterBlock(key, step * batchSize + b, block);
    // 53 random bits → a start in [0, starts) with negligible bias.
    const u = (block[0] * 2 ** 21 + (block[1] >>> 11)) / 2 ** 53;
    const start = Math.floor(u * starts);
    out.set(tokens.read(start, span), b * span);
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
