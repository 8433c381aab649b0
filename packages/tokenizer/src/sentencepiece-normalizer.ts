/**
 * SentencePiece's normalizer, as a `.model` file's normalizer_spec describes it: the precompiled
 * character map (nmt_nfkc, nmt_nfkc_cf, nfkc, or rules of the model's own), then
 * remove_extra_whitespaces, add_dummy_prefix and escape_whitespaces (" " → "▁").
 *
 * The character map is not approximated with `String.normalize`: it is the model's own table, read
 * as SentencePiece reads it. The blob is a little-endian uint32 byte count, a Darts-clone double-array
 * trie of that many bytes over UTF-8 keys, and the pool of replacement strings (each ended by NUL)
 * the trie's values point into. At each position the longest key that prefixes the remaining UTF-8
 * input is replaced; where no key matches, one character is copied as is. User-defined pieces are
 * matched first and copied unchanged, as SentencePiece's prefix matcher does.
 */
import { utf8 } from "./bytes.js";
import { fail, prose } from "./errors.js";

export const SPACE = 0x20;
export const META = utf8("▁"); // U+2581, what escape_whitespaces writes for a space

/** A Darts-clone double array read from a precompiled charsmap, with its replacement pool. */
export class PrecompiledCharsmap {
  private readonly units: Uint32Array;
  private readonly pool: Uint8Array;
  private readonly replacements = new Map<number, Uint8Array>();

  constructor(blob: Uint8Array, what = ".model normalizer_spec.precompiled_charsmap") {
    if (blob.length <= 4) fail(what, "a trie size and a trie", prose(`${blob.length} bytes`));
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieSize = view.getUint32(0, true);
    if (trieSize >= blob.length || trieSize % 4 !== 0) fail(what, `a trie size below ${blob.length} and divisible by 4`, trieSize);
    this.units = new Uint32Array(trieSize / 4);
    for (let i = 0; i < this.units.length; i++) this.units[i] = view.getUint32(4 + 4 * i, true);
    this.pool = blob.subarray(4 + trieSize);
  }

  /**
   * The longest key that prefixes `input[pos..end)`: [its length in bytes, its replacement], or
   * undefined. Darts' commonPrefixSearch: walk the bytes, and remember each node that has a leaf.
   */
  match(input: Uint8Array, pos: number, end: number): [number, Uint8Array] | undefined {
    const units = this.units;
    let node = offset(units[0]);
    let length = 0;
    let value = 0;
    for (let i = pos; i < end; i++) {
      const c = input[i];
      node ^= c;
      if (node >= units.length) break;
      const unit = units[node];
      // label(): the low byte and the leaf flag (bit 31), so a leaf unit never matches a key byte.
      if ((unit & 0x800000ff) >>> 0 !== c) break;
      node ^= offset(unit);
      if ((unit >>> 8) & 1 && node < units.length) {
        length = i + 1 - pos;
        value = units[node] & 0x7fffffff;
      }
    }
    return length > 0 ? [length, this.replacement(value)] : undefined;
  }

  /**
   * Whether a key longer than `input[pos..end)` may still match once more bytes follow: the walk
   * from `pos` stays in the trie through every byte up to `end`. A streamed input must wait then.
   */
  open(input: Uint8Array, pos: number, end: number): boolean {
    const units = this.units;
    let node = offset(units[0]);
    for (let i = pos; i < end; i++) {
      const c = input[i];
      node ^= c;
      if (node >= units.length) return false;
      const unit = units[node];
      if ((unit & 0x800000ff) >>> 0 !== c) return false;
      node ^= offset(unit);
    }
    return true;
  }

  /**
   * The replacement of the shortest key that prefixes `input`, or undefined: Hugging Face's
   * `Precompiled::transform` takes the first hit of a common-prefix search, whether or not it
   * covers the whole input (a NUL byte ends the search).
   */
  shortest(input: Uint8Array): Uint8Array | undefined {
    const units = this.units;
    let node = offset(units[0]);
    for (const c of input) {
      if (c === 0) break;
      node ^= c;
      if (node >= units.length) break;
      const unit = units[node];
      if ((unit & 0x800000ff) >>> 0 !== c) break;
      node ^= offset(unit);
      if ((unit >>> 8) & 1 && node < units.length) return this.replacement(units[node] & 0x7fffffff);
    }
    return undefined;
  }

  private replacement(at: number): Uint8Array {
    let r = this.replacements.get(at);
    if (!r) {
      let end = at;
      while (end < this.pool.length && this.pool[end] !== 0) end++;
      r = this.pool.subarray(at, end);
      this.replacements.set(at, r);
    }
    return r;
  }
}

function offset(unit: number): number {
  return (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
}

/** Longest-prefix matching of a set of strings over UTF-8 bytes (SentencePiece's PrefixMatcher). */
export class BytePrefixMatcher {
  private readonly root = new Map<number, unknown>();
  private static readonly END = -1;

  constructor(words: Iterable<string>) {
    for (const w of words) {
      let node = this.root;
      for (const b of utf8(w)) {
        let child = node.get(b) as Map<number, unknown> | undefined;
        if (!child) node.set(b, (child = new Map()));
        node = child;
      }
      node.set(BytePrefixMatcher.END, true);
    }
  }

  get empty(): boolean {
    return this.root.size === 0;
  }

  /** Length in bytes of the longest word that prefixes `input[pos..end)`, 0 if none. */
  match(input: Uint8Array, pos: number, end: number): number {
    let node: Map<number, unknown> | undefined = this.root;
    let best = 0;
    for (let i = pos; i < end && node; i++) {
      node = node.get(input[i]) as Map<number, unknown> | undefined;
      if (node?.has(BytePrefixMatcher.END)) best = i + 1 - pos;
    }
    return best;
  }

  /** Whether a longer word may still match once bytes after `input[pos..end)` follow. */
  open(input: Uint8Array, pos: number, end: number): boolean {
    let node: Map<number, unknown> | undefined = this.root;
    for (let i = pos; i < end && node; i++) node = node.get(input[i]) as Map<number, unknown> | undefined;
    return node !== undefined && node.size > (node.has(BytePrefixMatcher.END) ? 1 : 0);
  }
}

export interface SentencePieceNormalizerSpec {
  /** Undefined: identity (the model has no rules). */
  charsmap?: PrecompiledCharsmap;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
  /** User-defined pieces, passed through unnormalized. */
  userDefined: BytePrefixMatcher;
}

/** Bytes of the UTF-8 character starting with lead byte `b` (input from a JS string is well formed). */
export function charLength(b: number): number {
  return b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
}

/**
 * Normalizes text as SentencePiece's `Normalizer::Normalize`. `SentencePieceNormalizerStream`
 * (sentencepiece-stream.ts) does the same over text that arrives in pieces.
 *
 * @example
 * normalizeSentencePiece("  ﬁne ①", spec); // "▁fine▁1" under nmt_nfkc
 */
export function normalizeSentencePiece(text: string, spec: SentencePieceNormalizerSpec): string {
  const input = utf8(text);
  const n = input.length;
  const { charsmap, userDefined, removeExtraWhitespaces, escapeWhitespaces } = spec;
  const checkUser = !userDefined.empty;
  let pos = 0;
  // One step of NormalizePrefix: what the text at `pos` becomes, and how many input bytes it used.
  let piece: Uint8Array = input;
  let consumed = 0;
  const step = () => {
    if (checkUser) {
      const len = userDefined.match(input, pos, n);
      if (len > 0) {
        piece = input.subarray(pos, pos + len);
        consumed = len;
        return;
      }
    }
    const m = charsmap?.match(input, pos, n);
    if (m) {
      consumed = m[0];
      piece = m[1];
      return;
    }
    consumed = Math.min(charLength(input[pos]), n - pos);
    piece = input.subarray(pos, pos + consumed);
  };

  if (removeExtraWhitespaces) {
    for (; pos < n; pos += consumed) {
      step();
      if (!(piece.length === 1 && piece[0] === SPACE)) break;
    }
  }
  if (pos >= n) return "";

  const out = new Bytes(n + 8);
  const space = () => (escapeWhitespaces ? out.push(META) : out.pushByte(SPACE));
  if (spec.addDummyPrefix) space();
  let previousSpace = removeExtraWhitespaces;
  while (pos < n) {
    step();
    let k = 0;
    if (previousSpace) while (k < piece.length && piece[k] === SPACE) k++;
    if (k < piece.length) {
      for (; k < piece.length; k++) {
        if (piece[k] === SPACE) space();
        else out.pushByte(piece[k]);
      }
      previousSpace = piece[piece.length - 1] === SPACE;
    }
    pos += consumed;
    if (!removeExtraWhitespaces) previousSpace = false;
  }
  if (removeExtraWhitespaces) {
    const tail = escapeWhitespaces ? META : Uint8Array.of(SPACE);
    while (out.endsWith(tail)) out.length -= tail.length;
  }
  return out.text();
}

/** A growable byte buffer. */
export class Bytes {
  private data: Uint8Array;
  length = 0;
  constructor(capacity: number) {
    this.data = new Uint8Array(capacity);
  }
  private reserve(extra: number): void {
    if (this.length + extra <= this.data.length) return;
    const bigger = new Uint8Array(Math.max(this.data.length * 2, this.length + extra));
    bigger.set(this.data.subarray(0, this.length));
    this.data = bigger;
  }
  pushByte(b: number): void {
    this.reserve(1);
    this.data[this.length++] = b;
  }
  push(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    this.data.set(bytes, this.length);
    this.length += bytes.length;
  }
  /** Bytes in the run of whole `tail`s that ends the buffer. */
  trailing(tail: Uint8Array): number {
    let end = this.length;
    for (;;) {
      if (end < tail.length) return this.length - end;
      for (let i = 0; i < tail.length; i++) if (this.data[end - tail.length + i] !== tail[i]) return this.length - end;
      end -= tail.length;
    }
  }
  endsWith(tail: Uint8Array): boolean {
    if (this.length < tail.length) return false;
    for (let i = 0; i < tail.length; i++) if (this.data[this.length - tail.length + i] !== tail[i]) return false;
    return true;
  }
  text(): string {
    return decoder.decode(this.data.subarray(0, this.length));
  }
  /** The first `count` bytes as text; the rest moves to the front. */
  shift(count: number): string {
    const head = decoder.decode(this.data.subarray(0, count));
    this.data.copyWithin(0, count, this.length);
    this.length -= count;
    return head;
  }
}

const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
