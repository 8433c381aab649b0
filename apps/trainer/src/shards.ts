/**
 * A tokenised corpus on disk, as `pnpm train prepare` writes it and `pnpm train --data DIR` reads it:
 *
 *   DIR/index.json          dtype, vocabulary size, tokenizer file and sha256, shards and their token counts
 *   DIR/tokenizer.json      the tokenizer the ids come from (or the .model / .tiktoken file given)
 *   DIR/train-00000.bin     token ids, little-endian uint16 (vocabulary ≤ 65,536) or uint32, no header
 *   DIR/heldout-00000.bin   the held-out split, the same way
 *
 * The shards of a split are one token stream cut into files. Training reads the windows it needs
 * with positional reads; no split is ever held in memory whole.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync, writeSync } from "node:fs";
import { endianness } from "node:os";
import { join } from "node:path";
import { DataError } from "./data.js";

export const INDEX_FILE = "index.json";
export const INDEX_FORMAT = "lightning-ts.tokens/1";
export type TokenDType = "uint16" | "uint32";
export type Split = "train" | "heldout";
export const SPLITS: readonly Split[] = ["train", "heldout"];

export interface ShardEntry {
  file: string;
  tokens: number;
}

export interface SplitIndex {
  tokens: number;
  /** UTF-8 bytes of the text these tokens came from. */
  bytes: number;
  documents: number;
  shards: ShardEntry[];
}

export interface ShardIndex {
  format: typeof INDEX_FORMAT;
  dtype: TokenDType;
  /** The tokenizer's vocabulary: every id is below it. */
  vocab_size: number;
  tokenizer: { file: string; sha256: string };
  /** The id that ends each document (the tokenizer's end-of-text token), or null if it has none. */
  document_separator: number | null;
  /** The fraction of the input bytes, at the end of the inputs, that went to the held-out split. */
  heldout_fraction: number;
  splits: Record<Split, SplitIndex>;
  inputs: string[];
}

/** The narrowest width that holds every id of a vocabulary. */
export const dtypeFor = (vocabSize: number): TokenDType => (vocabSize <= 65_536 ? "uint16" : "uint32");
const WIDTH: Record<TokenDType, number> = { uint16: 2, uint32: 4 };

function checkEndianness(): void {
  if (endianness() !== "LE") throw new DataError("token shards are little-endian; this machine is big-endian");
}

/** Token ids at positions of a stream. */
export interface TokenSource {
  readonly length: number;
  /** `count` ids from position `start` (a fresh array). */
  read(start: number, count: number): Int32Array;
}

/** A token stream held in memory. */
export function arraySource(ids: Int32Array): TokenSource {
  return { length: ids.length, read: (start, count) => ids.slice(start, start + count) };
}

/** Appends ids to consecutive shards `<prefix>-00000.bin`, … of at most `shardTokens` ids each. */
export class ShardWriter {
  readonly shards: ShardEntry[] = [];
  private readonly buffer: Uint16Array | Uint32Array;
  private used = 0;
  private fd: number | null = null;
  private inShard = 0;

  constructor(
    private readonly dir: string,
    private readonly prefix: Split,
    private readonly dtype: TokenDType,
    private readonly shardTokens: number,
  ) {
    checkEndianness();
    this.buffer = dtype === "uint16" ? new Uint16Array(1 << 16) : new Uint32Array(1 << 16);
  }

  get tokens(): number {
    return this.shards.reduce((n, s) => n + s.tokens, 0) + this.used;
  }

  write(ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) {
      if (this.inShard + this.used === this.shardTokens || this.used === this.buffer.length) this.flush();
      this.buffer[this.used++] = ids[i];
    }
  }

  /** Writes what is buffered, ending the current shard when it is full. */
  private flush(): void {
    if (this.used > 0) {
      if (this.fd === null) {
        const file = `${this.prefix}-${String(this.shards.length).padStart(5, "0")}.bin`;
        this.fd = openSync(join(this.dir, file), "w");
        this.shards.push({ file, tokens: 0 });
      }
      writeSync(this.fd, new Uint8Array(this.buffer.buffer, 0, this.used * this.buffer.BYTES_PER_ELEMENT));
      this.shards[this.shards.length - 1].tokens += this.used;
      this.inShard += this.used;
      this.used = 0;
    }
    if (this.fd !== null && this.inShard === this.shardTokens) this.closeShard();
  }

  private closeShard(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.inShard = 0;
  }

  close(): ShardEntry[] {
    this.flush();
    this.closeShard();
    return this.shards;
  }
}

/** True when `dir` is a tokenised corpus (or what is left of one: shards without their index). */
export function isTokenDir(dir: string): boolean {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return false;
  return existsSync(join(dir, INDEX_FILE)) || readdirSync(dir).some((f) => /^(train|heldout)-\d+\.bin$/.test(f));
}

/** Reads and checks `dir/index.json`; `arg` names the option the directory came from. */
export function readShardIndex(dir: string, arg = "--data"): ShardIndex {
  const file = join(dir, INDEX_FILE);
  const bad = (what: string): never => {
    throw new DataError(`${arg} ${dir}: ${INDEX_FILE} is corrupt: ${what}; run \`pnpm train prepare\` again`);
  };
  if (!existsSync(file)) throw new DataError(`${arg} ${dir}: token shards but no ${INDEX_FILE}; run \`pnpm train prepare\` again`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    return bad((err as Error).message);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) bad("not a JSON object");
  // Checked field by field below; the type says what a valid index holds.
  const index = raw as ShardIndex;
  const format: unknown = index.format;
  const dtype: unknown = index.dtype;
  if (format !== INDEX_FORMAT) bad(`format ${JSON.stringify(format)}, expected "${INDEX_FORMAT}"`);
  if (dtype !== "uint16" && dtype !== "uint32") bad(`dtype ${JSON.stringify(dtype)}, expected "uint16" or "uint32"`);
  const count = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
  if (!count(index.vocab_size) || index.vocab_size === 0) bad(`vocab_size ${JSON.stringify(index.vocab_size)}`);
  if (typeof index.tokenizer?.file !== "string" || typeof index.tokenizer.sha256 !== "string") bad("no tokenizer file and sha256");
  for (const split of SPLITS) {
    const s = index.splits?.[split];
    if (!s || !count(s.tokens) || !Array.isArray(s.shards)) bad(`no "${split}" split with its tokens and shards`);
    const sum = s.shards.reduce((n, e) => n + (count(e?.tokens) ? e.tokens : NaN), 0);
    if (s.shards.some((e) => typeof e?.file !== "string") || Number.isNaN(sum)) bad(`a "${split}" shard without its file and token count`);
    if (sum !== s.tokens) bad(`the "${split}" shards hold ${sum} tokens, the split says ${s.tokens}`);
  }
  return index;
}

/** The token stream of one split, read from its shards with positional reads. */
export class ShardSource implements TokenSource {
  readonly length: number;
  private readonly starts: number[] = [];
  private readonly fds: number[];
  private readonly width: number;

  constructor(
    private readonly dir: string,
    private readonly index: ShardIndex,
    split: Split,
    arg = "--data",
  ) {
    checkEndianness();
    this.width = WIDTH[index.dtype];
    let start = 0;
    for (const shard of index.splits[split].shards) {
      const path = join(dir, shard.file);
      if (!existsSync(path)) throw new DataError(`${arg} ${dir}: shard ${shard.file} is missing`);
      const bytes = statSync(path).size;
      if (bytes % this.width !== 0) {
        throw new DataError(`${arg} ${dir}: shard ${shard.file} is ${bytes} bytes, not a whole number of ${this.width}-byte ${index.dtype} tokens (truncated mid-token)`);
      }
      if (bytes / this.width !== shard.tokens) throw new DataError(`${arg} ${dir}: shard ${shard.file} holds ${bytes / this.width} tokens, ${INDEX_FILE} says ${shard.tokens}`);
      this.starts.push(start);
      start += shard.tokens;
    }
    this.length = start;
    this.fds = this.index.splits[split].shards.map((s) => openSync(join(dir, s.file), "r"));
  }

  read(start: number, count: number): Int32Array {
    if (start < 0 || start + count > this.length) throw new RangeError(`tokens [${start}, ${start + count}) are outside the stream of ${this.length}`);
    const out = new Int32Array(count);
    let at = 0;
    // The shard holding `start`: the last one starting at or before it.
    let s = this.starts.length - 1;
    while (this.starts[s] > start) s--;
    while (at < count) {
      const from = start + at - this.starts[s];
      const n = Math.min(count - at, this.shardTokens(s) - from);
      const bytes = new Uint8Array(n * this.width);
      readSync(this.fds[s], bytes, 0, bytes.length, from * this.width);
      out.set(this.width === 2 ? new Uint16Array(bytes.buffer) : new Uint32Array(bytes.buffer), at);
      at += n;
      s++;
    }
    for (let i = 0; i < count; i++) {
      if (out[i] < 0 || out[i] >= this.index.vocab_size) throw new DataError(`token ${start + i} of ${this.dir} is ${out[i]}, outside the vocabulary of ${this.index.vocab_size}`);
    }
    return out;
  }

  private shardTokens(s: number): number {
    return (s + 1 < this.starts.length ? this.starts[s + 1] : this.length) - this.starts[s];
  }

  close(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }
}
