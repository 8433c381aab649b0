/**
 * Byte-level BPE training. The corpus is split with the pre-tokenizer pattern and counted as words;
 * then, until the vocabulary is full, the most frequent adjacent pair becomes a new token. Pair
 * counts are updated incrementally, only in the words that contain the merged pair, and a heap with
 * lazily refreshed counts finds the best pair, so a merge costs time in proportion to where it occurs.
 *
 * Ids: the special tokens first, then the 256 bytes in byte order, then merges in the order learned.
 * Ties between equally frequent pairs go to the pair with the smaller left id, then right id, so
 * training is deterministic.
 */
import { BYTE_TO_CHAR, concatBytes, utf8, wellFormed } from "./bytes.js";
import { fail } from "./errors.js";
import { MergeTable } from "./merge.js";
import { compilePattern, escapeRegExp, GPT2_PATTERN, regexSplit } from "./pretokenize.js";
import { Tokenizer } from "./tokenizer.js";

export interface TrainOptions {
  /** Final vocabulary size, special tokens and the 256 byte tokens included. */
  vocabSize: number;
  /** Special tokens, given the first ids and never split or learned from. */
  specialTokens?: string[];
  /** Pre-tokenizer split pattern. Default: GPT-2's. */
  pattern?: string;
  /** Pairs seen fewer times than this are never merged. Default 2. */
  minFrequency?: number;
}

/** Counts pre-tokenized words; feed it text in pieces, then call `train`. */
export class BpeTrainer {
  private readonly counts = new Map<string, number>();
  private readonly split: RegExp;
  private readonly specialSplit: RegExp | undefined;
  readonly options: Required<TrainOptions>;

  constructor(options: TrainOptions) {
    const specials = options.specialTokens ?? [];
    const pattern = options.pattern ?? GPT2_PATTERN;
    this.options = { vocabSize: options.vocabSize, specialTokens: specials, pattern, minFrequency: options.minFrequency ?? 2 };
    if (!Number.isInteger(options.vocabSize) || options.vocabSize < 256 + specials.length) {
      fail("vocabSize", `an integer of at least ${256 + specials.length} (256 bytes + ${specials.length} special tokens)`, options.vocabSize);
    }
    if (new Set(specials).size !== specials.length || specials.some((s) => s.length === 0)) fail("specialTokens", "distinct non-empty strings", specials);
    this.split = compilePattern(pattern);
    this.specialSplit = specials.length ? new RegExp(specials.map(escapeRegExp).join("|"), "g") : undefined;
  }

  /** Adds text to the word counts. Special tokens in it are not learned from. */
  feed(text: string): void {
    const segments = this.specialSplit ? wellFormed(text).split(this.specialSplit) : [wellFormed(text)];
    for (const segment of segments) {
      for (const piece of regexSplit(this.split)([segment], "start")) this.counts.set(piece, (this.counts.get(piece) ?? 0) + 1);
    }
  }

  train(): Tokenizer {
    const { vocabSize, specialTokens, pattern, minFrequency } = this.options;
    const base = specialTokens.length;
    const tokens: string[] = [...specialTokens, ...BYTE_TO_CHAR];
    const bytes: Uint8Array[] = [...specialTokens.map(utf8), ...BYTE_TO_CHAR.map((_, b) => Uint8Array.of(b))];
    const words: number[][] = [];
    const freq: number[] = [];
    for (const [word, count] of this.counts) {
      words.push(Array.from(utf8(word), (b) => base + b));
      freq.push(count);
    }

    const pairs = new PairCounts();
    words.forEach((w, wi) => {
      for (let i = 0; i + 1 < w.length; i++) pairs.add(w[i], w[i + 1], freq[wi], wi);
    });
    const heap = new PairHeap();
    for (const [key, count] of pairs.count) heap.push(count, key);

    const merges = new MergeTable();
    while (tokens.length < vocabSize && heap.size > 0) {
      const { count, key } = heap.pop();
      const current = pairs.count.get(key) ?? 0;
      if (current !== count) {
        if (current > 0) heap.push(current, key); // stale entry: requeue with the true count
        continue;
      }
      if (count < minFrequency) break;
      const [a, b] = unkey(key);
      const id = tokens.length;
      tokens.push(tokens[a] + tokens[b]);
      bytes.push(concatBytes([bytes[a], bytes[b]]));
      merges.add(a, b, id);
      const touched = new Set<number>();
      for (const wi of pairs.where.get(key) ?? []) mergeInWord(words[wi], a, b, id, freq[wi], wi, pairs, touched);
      pairs.count.delete(key);
      pairs.where.delete(key);
      for (const k of touched) {
        const c = pairs.count.get(k) ?? 0;
        if (c > 0) heap.push(c, k);
      }
    }

    return new Tokenizer({
      kind: "byte-level",
      tokens,
      bytes,
      merges,
      initial: { kind: "bytes", byteIds: Int32Array.from({ length: 256 }, (_, b) => base + b) },
      normalizers: [],
      preTokenizers: [regexSplit(pattern)],
      specials: specialTokens.map((content, id) => ({ content, id, special: true })),
      ignoreMerges: false,
      stripLeadingSpace: false,
      template: { prefix: [], suffix: [] },
      splitsAfterNewline: true,
      pattern,
    });
  }
}

/**
 * Trains a byte-level BPE tokenizer on text.
 *
 * @example
 * const tok = trainBpe(readFileSync("corpus.txt", "utf8"), { vocabSize: 8000, specialTokens: ["<|endoftext|>"] });
 * writeFileSync("tokenizer.json", saveTokenizerJson(tok));
 */
export function trainBpe(corpus: string | Iterable<string>, options: TrainOptions): Tokenizer {
  const trainer = new BpeTrainer(options);
  for (const text of typeof corpus === "string" ? [corpus] : corpus) trainer.feed(text);
  return trainer.train();
}

const SPAN = 2 ** 21;
const pairKey = (a: number, b: number) => a * SPAN + b;
const unkey = (key: number): [number, number] => [Math.floor(key / SPAN), key % SPAN];

class PairCounts {
  readonly count = new Map<number, number>();
  /** Words that contain (or once contained) each pair; counts are exact, this list may be stale. */
  readonly where = new Map<number, Set<number>>();

  add(a: number, b: number, n: number, word: number, touched?: Set<number>): void {
    const key = pairKey(a, b);
    this.count.set(key, (this.count.get(key) ?? 0) + n);
    if (n > 0) {
      let set = this.where.get(key);
      if (!set) this.where.set(key, (set = new Set()));
      set.add(word);
      touched?.add(key);
    }
  }
}

/** Replaces each (a, b) in the word by `id`, left to right, keeping the neighbouring pair counts exact. */
function mergeInWord(w: number[], a: number, b: number, id: number, n: number, wi: number, pairs: PairCounts, touched: Set<number>): void {
  for (let i = 0; i + 1 < w.length; i++) {
    if (w[i] !== a || w[i + 1] !== b) continue;
    if (i > 0) {
      pairs.add(w[i - 1], a, -n, wi);
      pairs.add(w[i - 1], id, n, wi, touched);
    }
    if (i + 2 < w.length) {
      pairs.add(b, w[i + 2], -n, wi);
      pairs.add(id, w[i + 2], n, wi, touched);
    }
    w.splice(i, 2, id);
  }
}

/** Max-heap on count; equal counts pop the smaller pair key (left id, then right id) first. */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  private before(i: number, j: number): boolean {
    return this.counts[i] > this.counts[j] || (this.counts[i] === this.counts[j] && this.keys[i] < this.keys[j]);
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    for (let i = this.keys.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { count: number; key: number } {
    const top = { count: this.counts[0], key: this.keys[0] };
    const last = this.keys.length - 1;
    this.swap(0, last);
    this.counts.pop();
    this.keys.pop();
    for (let i = 0; ; ) {
      let best = i;
      for (const c of [2 * i + 1, 2 * i + 2]) if (c < last && this.before(c, best)) best = c;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return top;
  }
}
