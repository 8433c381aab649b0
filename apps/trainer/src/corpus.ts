/**
 * What a run trains on: the tokenizer and the token streams of the train and held-out splits,
 * either from text (the built-in corpus or the user's files, tokenised here and cached) or from a
 * tokenised corpus that `pnpm train prepare` wrote (streamed from its shards).
 */
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadTokenizerFile, type Tokenizer } from "@lightning-ts/tokenizer";
import type { TrainConfig } from "./config.js";
import { byteEntropy, DataError, loadCorpus, prepareTokenizer, tokenize, tokenizerKey, unigramBitsPerByte } from "./data.js";
import { sha256 } from "./prepare.js";
import { arraySource, isTokenDir, readShardIndex, ShardSource, type TokenSource } from "./shards.js";

export interface TrainingData {
  /** Where the text came from, for the logs. */
  source: string;
  tokenizer: Tokenizer;
  train: TokenSource;
  heldout: TokenSource;
  /** The unigram byte entropy of the held-out text, in bits per byte. */
  unigramBitsPerByte: () => number;
  close: () => void;
}

export interface DataOptions {
  config: TrainConfig;
  /** The run's copy of the tokenizer (written here). */
  tokenizerFile: string;
  /** A checkpoint whose tokenizer the run continues with. */
  resumeDir?: string;
  cacheDir: string;
  say: (line: string) => void;
}

export async function loadTrainingData(o: DataOptions): Promise<TrainingData> {
  const { config } = o;
  if (config.data.length === 1 && isTokenDir(config.data[0])) return loadShards(o, config.data[0]);
  const corpus = loadCorpus(config);
  let tokenizer: Tokenizer;
  let key: string;
  if (o.resumeDir) {
    copyFileSync(join(o.resumeDir, "tokenizer.json"), o.tokenizerFile);
    tokenizer = await loadTokenizerFile(o.tokenizerFile);
    key = readFileSync(o.tokenizerFile, "utf8");
  } else {
    const t0 = performance.now();
    const prepared = await prepareTokenizer(config, corpus, o.tokenizerFile);
    tokenizer = prepared.tokenizer;
    if (!prepared.json) copyFileSync(config.tokenizerPath!, o.tokenizerFile);
    key = tokenizerKey(prepared.json, config.tokenizerPath);
    o.say(`tokenizer: ${tokenizer.vocabSize} tokens (${prepared.json ? `trained in ${((performance.now() - t0) / 1000).toFixed(1)} s` : `loaded from ${config.tokenizerPath}`})`);
  }
  const train = tokenize(tokenizer, key, corpus.train, o.cacheDir);
  const heldout = tokenize(tokenizer, key, corpus.heldout, o.cacheDir);
  return {
    source: corpus.source,
    tokenizer,
    train: arraySource(train),
    heldout: arraySource(heldout),
    unigramBitsPerByte: () => unigramBitsPerByte(corpus.heldout),
    close: () => {},
  };
}

/** A tokenised corpus: its own tokenizer (a `--tokenizer` or a resumed run's must be the same file). */
async function loadShards(o: DataOptions, dir: string): Promise<TrainingData> {
  const index = readShardIndex(dir);
  const file = join(dir, index.tokenizer.file);
  if (!existsSync(file)) throw new DataError(`--data ${dir}: the tokenizer ${index.tokenizer.file} named by index.json is missing`);
  const given = o.resumeDir ? join(o.resumeDir, "tokenizer.json") : o.config.tokenizerPath;
  if (given !== null && sha256(readFileSync(given)) !== index.tokenizer.sha256) {
    const what = o.resumeDir ? `the tokenizer of the checkpoint ${o.resumeDir}` : `--tokenizer ${given}`;
    throw new DataError(`--data ${dir}: its shards were made with another tokenizer than ${what} (sha256 ${index.tokenizer.sha256.slice(0, 12)}…)`);
  }
  if (sha256(readFileSync(file)) !== index.tokenizer.sha256) throw new DataError(`--data ${dir}: ${index.tokenizer.file} does not match the sha256 in index.json`);
  copyFileSync(file, o.tokenizerFile);
  const tokenizer = await loadTokenizerFile(file);
  if (tokenizer.vocabSize !== index.vocab_size) throw new DataError(`--data ${dir}: index.json says vocab_size ${index.vocab_size}, its tokenizer has ${tokenizer.vocabSize}`);
  o.say(`tokenizer: ${tokenizer.vocabSize} tokens (from ${resolve(file)})`);
  const train = new ShardSource(dir, index, "train");
  const heldout = new ShardSource(dir, index, "heldout");
  return {
    source: `${dir} (${index.dtype} token shards)`,
    tokenizer,
    train,
    heldout,
    unigramBitsPerByte: () => unigramOfTokens(tokenizer, heldout),
    close: () => {
      train.close();
      heldout.close();
    },
  };
}

/** The unigram byte entropy of the text that `tokens` stand for (special tokens stand for none). */
function unigramOfTokens(tokenizer: Tokenizer, tokens: TokenSource): number {
  const counts = new Float64Array(256);
  const chunk = 1 << 20;
  for (let at = 0; at < tokens.length; at += chunk) {
    for (const id of tokens.read(at, Math.min(chunk, tokens.length - at))) {
      if (!tokenizer.isSpecial(id)) for (const b of tokenizer.tokenBytes(id)) counts[b]++;
    }
  }
  return byteEntropy(counts);
}
