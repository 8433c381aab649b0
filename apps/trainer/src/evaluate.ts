/**
 * Held-out evaluation: mean next-token loss, perplexity, and bits per byte — the loss summed over
 * predicted tokens, in bits, divided by the UTF-8 bytes those tokens stand for, which makes runs
 * with different tokenizers comparable. Special tokens (the end-of-text token between documents)
 * stand for no bytes of text.
 */
import { scope, tensor } from "@lightning-ts/tensor";
import { loss, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";
import type { Tokenizer } from "@lightning-ts/tokenizer";

export interface Evaluation {
  loss: number;
  perplexity: number;
  bitsPerByte: number;
  tokens: number;
  bytes: number;
}

/** Windows of equal length, `batchSize` at a time. */
function* batched(windows: Iterable<Int32Array>, batchSize: number): Generator<Int32Array[]> {
  let batch: Int32Array[] = [];
  for (const w of windows) {
    batch.push(w);
    if (batch.length === batchSize) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

export async function evaluate(params: TnlParams, config: TnlConfig, tokenizer: Tokenizer, windows: Iterable<Int32Array>, batchSize: number): Promise<Evaluation> {
  const byteLength = new Map<number, number>();
  const bytesOf = (id: number) => {
    let n = byteLength.get(id);
    if (n === undefined) byteLength.set(id, (n = tokenizer.isSpecial(id) ? 0 : tokenizer.tokenBytes(id).length));
    return n;
  };
  let nats = 0;
  let tokens = 0;
  let bytes = 0;
  for (const batch of batched(windows, batchSize)) {
    const span = batch[0].length;
    const flat = new Int32Array(batch.length * span);
    batch.forEach((w, b) => flat.set(w, b * span));
    const lossT = scope(() => loss(params, config, tensor(flat, [batch.length, span], { dtype: "i32" })));
    const mean = (await lossT.data())[0];
    lossT.dispose();
    const targets = batch.length * (span - 1);
    nats += mean * targets;
    tokens += targets;
    for (const w of batch) for (let t = 1; t < span; t++) bytes += bytesOf(w[t]);
  }
  const meanLoss = nats / tokens;
  return { loss: meanLoss, perplexity: Math.exp(meanLoss), bitsPerByte: nats / Math.LN2 / bytes, tokens, bytes };
}
