/**
 * Training batches: random windows of the token stream, drawn from the counter-based RNG of the
 * tensor core with the step number as the counter. A batch depends only on (seed, step), so a
 * resumed run sees exactly the batches an uninterrupted one would.
 */
import { counterBlock, seedKey } from "@lightning-ts/tensor";

/** B windows of `seqLen + 1` tokens (inputs and their next-token targets) for training step `step`. */
export function trainingBatch(tokens: Int32Array, seed: number, step: number, batchSize: number, seqLen: number): Int32Array {
  const span = seqLen + 1;
  const starts = tokens.length - span + 1;
  if (starts < 1) throw new Error(`the training text has ${tokens.length} tokens, fewer than one sequence of ${span}`);
  const key = seedKey(seed);
  const block = new Uint32Array(4);
  const out = new Int32Array(batchSize * span);
  for (let b = 0; b < batchSize; b++) {
    counterBlock(key, step * batchSize + b, block);
    // 53 random bits → a start in [0, starts) with negligible bias.
    const u = (block[0] * 2 ** 21 + (block[1] >>> 11)) / 2 ** 53;
    const start = Math.floor(u * starts);
    out.set(tokens.subarray(start, start + span), b * span);
  }
  return out;
}

/** `count` windows of `seqLen + 1` tokens spread evenly over `tokens` (all of them when count is 0). */
export function evaluationWindows(tokens: Int32Array, seqLen: number, count = 0): Int32Array[] {
  const span = seqLen + 1;
  // Consecutive windows overlap by one token, so every token but the first is a target once.
  const total = Math.floor((tokens.length - 1) / seqLen);
  const n = count === 0 ? total : Math.min(count, total);
  return Array.from({ length: n }, (_, i) => {
    const w = n === total ? i : Math.floor((i * total) / n);
    return tokens.subarray(w * seqLen, w * seqLen + span);
  });
}
