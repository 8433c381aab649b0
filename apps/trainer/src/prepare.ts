/**
 * `pnpm train prepare`: tokenise a corpus once into token shards that training streams (shards.ts
 * describes the layout). The inputs are read as streams; the last `heldoutFraction` of their
 * bytes, cut at a line or record boundary, becomes the held-out split. Each document (a text file,
 * a JSONL record) ends with the tokenizer's end-of-text token when it has one.
 *
 * @example
 * await prepare({ inputs: ["corpus/"], out: "tokens", trainTokenizer: 8192 });
 * // then: pnpm train --data tokens
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, extname, join, resolve } from "node:path";
import { BpeTrainer, loadTokenizerFile, saveTokenizerJson, type Tokenizer } from "@lightning-ts/tokenizer";
import { DataError, SPECIAL_TOKENS } from "./data.js";
import { documentParts, type InputFile, listInputs } from "./inputs.js";
import { dtypeFor, INDEX_FILE, INDEX_FORMAT, isTokenDir, type ShardIndex, ShardWriter, type Split, SPLITS } from "./shards.js";
import { documentSeparator } from "./special.js";

export interface PrepareOptions {
  /** Text (.txt, .md, anything not .jsonl) and JSONL files, or directories of them. */
  inputs: string[];
  out: string;
  /** A tokenizer file to use… */
  tokenizer?: string;
  /** …or the vocabulary size of a byte-level BPE tokenizer to train on the training split. */
  trainTokenizer?: number;
  /** The field of a JSONL record that holds its text (default "text"). */
  jsonlField?: string;
  /** Fraction of the input bytes, at the end, held out (default 0.01). */
  heldoutFraction?: number;
  /** Tokens per shard file (default 100,000,000). */
  shardTokens?: number;
  /** Bytes of the training split a tokenizer is trained on, at most (default 256 MiB). */
  tokenizerSampleBytes?: number;
  log?: (line: string) => void;
}

export const PREPARE_DEFAULTS = { jsonlField: "text", heldoutFraction: 0.01, shardTokens: 100_000_000, tokenizerSampleBytes: 256 * 2 ** 20 };

export async function prepare(options: PrepareOptions): Promise<ShardIndex> {
  const o = { ...PREPARE_DEFAULTS, ...options };
  const say = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  if ((o.tokenizer === undefined) === (o.trainTokenizer === undefined)) throw new DataError("give either --tokenizer FILE or --train-tokenizer VOCAB_SIZE");
  if (!(o.heldoutFraction >= 0 && o.heldoutFraction < 1)) throw new DataError(`--heldout-fraction expected a number in [0, 1), got ${o.heldoutFraction}`);
  const inputs = listInputs(o.inputs);
  const total = inputs.reduce((n, f) => n + f.bytes, 0);
  if (total === 0) throw new DataError(`--input: the corpus is empty (${inputs.length} file${inputs.length === 1 ? "" : "s"}, 0 bytes)`);
  const out = resolve(o.out);
  if (existsSync(out) && !(statSync(out).isDirectory() && (readdirSync(out).length === 0 || isTokenDir(out)))) {
    throw new DataError(`--out ${o.out} exists and is not a tokenised corpus; give a new or empty directory`);
  }
  // Shards go to a temporary directory renamed into place at the end: a failed run leaves no half corpus.
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    // The held-out split starts at the first line or record boundary at or after this byte.
    const cut = Math.floor(total * (1 - o.heldoutFraction));
    const { tokenizer, file } = await tokenizerFor(o, inputs, cut, tmp, say);
    const separator = documentSeparator(tokenizer);
    const dtype = dtypeFor(tokenizer.vocabSize);
    const writers = { train: new ShardWriter(tmp, "train", dtype, o.shardTokens), heldout: new ShardWriter(tmp, "heldout", dtype, o.shardTokens) };
    const stats = { train: { bytes: 0, documents: 0 }, heldout: { bytes: 0, documents: 0 } };
    const t0 = performance.now();
    let start = 0;
    for (const input of inputs.filter((f) => f.bytes > 0)) {
      const fileCut = cut - start;
      const splitOf = (offset: number): Split => (offset >= fileCut && o.heldoutFraction > 0 ? "heldout" : "train");
      const parts = documentParts(input, { field: o.jsonlField, cut: fileCut })[Symbol.asyncIterator]();
      let next = await parts.next();
      let ended = false;
      // The parts of one split in a row, as one text stream for the tokenizer; `ended` says whether the document ended in it.
      async function* run(split: Split): AsyncGenerator<string> {
        while (!next.done && (next.value.end || splitOf(next.value.offset) === split)) {
          const part = next.value;
          stats[split].bytes += part.bytes;
          yield part.text;
          next = await parts.next();
          if ((ended = part.end)) return;
        }
      }
      while (!next.done) {
        const split = splitOf(next.value.offset);
        if (input.kind === "jsonl") {
          const part = next.value;
          writers[split].write(tokenizer.encode(part.text));
          if (separator !== null) writers[split].write([separator]);
          stats[split].bytes += part.bytes;
          stats[split].documents++;
          next = await parts.next();
          continue;
        }
        for await (const ids of tokenizer.encodeStream(run(split))) writers[split].write(ids);
        if (ended) {
          if (separator !== null) writers[split].write([separator]);
          stats[split].documents++;
        }
      }
      start += input.bytes;
    }
    const shards = { train: writers.train.close(), heldout: writers.heldout.close() };
    const tokens = (split: Split) => shards[split].reduce((n, s) => n + s.tokens, 0);
    if (tokens("train") === 0) throw new DataError(`--input: the corpus holds no text to train on (${inputs.length} files, ${total} bytes)`);
    if (o.heldoutFraction > 0 && tokens("heldout") === 0) {
      throw new DataError(`--heldout-fraction ${o.heldoutFraction}: the held-out split is empty (the last ${Math.round(total * o.heldoutFraction)} bytes of the inputs hold no whole line); raise it`);
    }
    const index: ShardIndex = {
      format: INDEX_FORMAT,
      dtype,
      vocab_size: tokenizer.vocabSize,
      tokenizer: { file, sha256: sha256(readFileSync(join(tmp, file))) },
      document_separator: separator,
      heldout_fraction: o.heldoutFraction,
      splits: Object.fromEntries(SPLITS.map((s) => [s, { tokens: tokens(s), ...stats[s], shards: shards[s] }])) as ShardIndex["splits"],
      inputs: inputs.map((f) => f.path),
    };
    writeFileSync(join(tmp, INDEX_FILE), JSON.stringify(index, null, 2) + "\n");
    rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
    const seconds = (performance.now() - t0) / 1000;
    say(`prepared ${o.out}: ${tokens("train").toLocaleString("en")} training tokens, ${tokens("heldout").toLocaleString("en")} held out, ${dtype}, ${shards.train.length + shards.heldout.length} shards (${seconds.toFixed(1)} s)`);
    return index;
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

export const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

/** The tokenizer, loaded or trained, saved into `dir`; returns its file name there. */
async function tokenizerFor(
  o: Required<Pick<PrepareOptions, "jsonlField" | "tokenizerSampleBytes">> & PrepareOptions,
  inputs: InputFile[],
  cut: number,
  dir: string,
  say: (line: string) => void,
): Promise<{ tokenizer: Tokenizer; file: string }> {
  if (o.tokenizer !== undefined) {
    if (!existsSync(o.tokenizer)) throw new DataError(`--tokenizer: ${o.tokenizer} does not exist`);
    const tokenizer = await loadTokenizerFile(o.tokenizer);
    const file = extname(o.tokenizer) === ".json" ? "tokenizer.json" : basename(o.tokenizer);
    copyFileSync(o.tokenizer, join(dir, file));
    return { tokenizer, file };
  }
  const t0 = performance.now();
  const trainer = new BpeTrainer({ vocabSize: o.trainTokenizer!, specialTokens: SPECIAL_TOKENS });
  let fed = 0;
  let start = 0;
  for (const input of inputs) {
    if (fed >= o.tokenizerSampleBytes || start >= cut) break;
    for await (const part of documentParts(input, { field: o.jsonlField, cut: cut - start })) {
      if (start + part.offset >= cut || fed >= o.tokenizerSampleBytes) break;
      trainer.feed(part.text);
      fed += part.bytes;
    }
    start += input.bytes;
  }
  if (fed === 0) throw new DataError("--input: the training split holds no text to train a tokenizer on");
  const tokenizer = trainer.train();
  writeFileSync(join(dir, "tokenizer.json"), saveTokenizerJson(tokenizer));
  say(`tokenizer: ${tokenizer.vocabSize} tokens, trained on ${(fed / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { tokenizer, file: "tokenizer.json" };
}
