/**
 * SentencePiece encoding of text that arrives in pieces (`Tokenizer.encodeStream`), with memory
 * bounded by the chunk size and ids equal to those of the whole text. SentencePiece normalizes and
 * segments a text as one piece, so there is no line or word to cut at; each of the two stages
 * cuts only where the whole-text computation has a boundary of its own:
 *
 * - the normalizer takes one step (a user-defined piece, the longest charsmap key, or one
 *   character) only once no longer key can still match the bytes that follow. Its whitespace state
 *   (leading spaces skipped, the dummy prefix written, the previous output a space) carries over,
 *   and a trailing run of spaces waits until what follows it is known, since
 *   remove_extra_whitespaces drops it at the end of the text;
 * - the normalized text is cut only where no piece of the vocabulary covers the characters on both
 *   sides of the cut. Then no BPE merge can join them, and every Unigram path passes through the
 *   cut: the Viterbi goes on from the best score there (SentencePiece sums in float32, so a fresh
 *   start at 0 could round a near tie the other way), and unknown characters either side still
 *   fuse into one unknown id.
 */
import { utf8 } from "./bytes.js";
import type { SentencePieceNormalizerSpec } from "./sentencepiece-normalizer.js";
import { Bytes, charLength, META, SPACE } from "./sentencepiece-normalizer.js";
import type { IncrementalEncoder } from "./tokenizer.js";

/** What an encoder carries from the text before a cut: the best path score there, and whether it ended in an unknown character. */
export interface EncodeCarry {
  score: number;
  previousUnknown: boolean;
}

/**
 * `normalizeSentencePiece` over text pushed in pieces: the concatenated output of every `push`
 * and the final `end` equals the normalization of the concatenated input.
 *
 * @example
 * const n = new SentencePieceNormalizerStream(spec);
 * n.push("ﬁ") + n.push("ne  ") + n.end(); // "▁fine" under nmt_nfkc, as normalizeSentencePiece("ﬁne  ", spec)
 */
export class SentencePieceNormalizerStream {
  private input = new Uint8Array(256);
  private start = 0;
  private filled = 0;
  private readonly out = new Bytes(256);
  /** The leading run of spaces is behind us and the dummy prefix written. */
  private begun = false;
  private previousSpace: boolean;
  private readonly tail: Uint8Array;

  constructor(private readonly spec: SentencePieceNormalizerSpec) {
    this.previousSpace = spec.removeExtraWhitespaces;
    this.tail = spec.escapeWhitespaces ? META : Uint8Array.of(SPACE);
  }

  /** Appends text (whole characters) and returns the normalized text that nothing after it can change. */
  push(text: string): string {
    this.append(utf8(text));
    return this.run(false);
  }

  /** Normalizes what is left, as the end of the text. */
  end(): string {
    return this.run(true);
  }

  private append(bytes: Uint8Array): void {
    const live = this.filled - this.start;
    if (live + bytes.length > this.input.length) {
      const bigger = new Uint8Array(Math.max(2 * this.input.length, live + bytes.length));
      bigger.set(this.input.subarray(this.start, this.filled));
      this.input = bigger;
    } else {
      this.input.copyWithin(0, this.start, this.filled);
    }
    this.input.set(bytes, live);
    this.start = 0;
    this.filled = live + bytes.length;
  }

  private run(final: boolean): string {
    const { charsmap, userDefined, removeExtraWhitespaces, escapeWhitespaces, addDummyPrefix } = this.spec;
    const { input, out } = this;
    const n = this.filled;
    const space = () => (escapeWhitespaces ? out.push(META) : out.pushByte(SPACE));
    let pos = this.start;
    while (pos < n) {
      // A longer key may begin here once more bytes come: wait for them.
      if (!final && (userDefined.open(input, pos, n) || charsmap?.open(input, pos, n))) break;
      let piece: Uint8Array;
      let consumed = userDefined.empty ? 0 : userDefined.match(input, pos, n);
      if (consumed > 0) {
        piece = input.subarray(pos, pos + consumed);
      } else {
        const m = charsmap?.match(input, pos, n);
        if (m) {
          [consumed, piece] = m;
        } else {
          consumed = Math.min(charLength(input[pos]), n - pos);
          piece = input.subarray(pos, pos + consumed);
        }
      }
      pos += consumed;
      if (!this.begun) {
        if (removeExtraWhitespaces && piece.length === 1 && piece[0] === SPACE) continue;
        this.begun = true;
        if (addDummyPrefix) space();
      }
      let k = 0;
      if (this.previousSpace) while (k < piece.length && piece[k] === SPACE) k++;
      if (k < piece.length) {
        for (; k < piece.length; k++) {
          if (piece[k] === SPACE) space();
          else out.pushByte(piece[k]);
        }
        this.previousSpace = piece[piece.length - 1] === SPACE;
      }
      if (!removeExtraWhitespaces) this.previousSpace = false;
    }
    this.start = pos;
    if (!removeExtraWhitespaces) return out.shift(out.length);
    // Trailing spaces go at the end of the text and stay if anything else follows them.
    const held = out.trailing(this.tail);
    if (final) out.length -= held;
    return out.shift(out.length - (final ? 0 : held));
  }
}

interface TrieNode {
  next: Map<number, TrieNode>;
  piece: boolean;
}

/** The pieces of a vocabulary that may occur in normalized text, to tell where a cut is safe. */
export class PieceCover {
  private readonly root: TrieNode = { next: new Map(), piece: false };
  /** The longest piece, in UTF-16 code units. */
  readonly maxLength: number;

  constructor(pieces: Iterable<string>) {
    let max = 1;
    for (const p of pieces) {
      let node = this.root;
      for (let i = 0; i < p.length; i++) {
        const c = p.charCodeAt(i);
        let child = node.next.get(c);
        if (!child) node.next.set(c, (child = { next: new Map(), piece: false }));
        node = child;
      }
      node.piece = true;
      max = Math.max(max, p.length);
    }
    this.maxLength = max;
  }

  /** Whether some piece occurs in `text` over both `text[at - 1]` and `text[at]`. */
  covers(text: string, at: number): boolean {
    for (let s = Math.max(0, at - this.maxLength + 1); s < at; s++) {
      let node: TrieNode | undefined = this.root;
      for (let e = s; e < text.length; ) {
        node = node.next.get(text.charCodeAt(e++));
        if (!node) break;
        if (node.piece && e > at) return true;
      }
    }
    return false;
  }

  /**
   * The last offset in (after, upTo] where `text` may be cut (between code points, no piece over
   * it), or -1. The caller keeps `maxLength` code units after `upTo`, so every piece that starts
   * before a cut is seen whole.
   */
  lastCut(text: string, after: number, upTo: number): number {
    for (let at = upTo; at > after; at--) {
      const low = text.charCodeAt(at);
      if (low >= 0xdc00 && low <= 0xdfff && text.charCodeAt(at - 1) >= 0xd800 && text.charCodeAt(at - 1) <= 0xdbff) continue;
      if (!this.covers(text, at)) return at;
    }
    return -1;
  }
}

/**
 * A SentencePiece model's incremental encoder: normalized text gathers until `chunkChars` code
 * units are waiting, then everything before the last safe cut is encoded. `cover` undefined means
 * the model has no safe cut (all is encoded at the end).
 */
export class SentencePieceEncodeStream implements IncrementalEncoder {
  private readonly normalizer: SentencePieceNormalizerStream;
  private normalized = "";
  /** Offsets up to here were looked at and none could be cut. */
  private searched = 0;
  private readonly carry: EncodeCarry = { score: 0, previousUnknown: false };

  constructor(
    spec: SentencePieceNormalizerSpec,
    private readonly cover: PieceCover | undefined,
    private readonly encode: (normalized: string, carry: EncodeCarry) => number[],
    private readonly chunkChars: number,
  ) {
    this.normalizer = new SentencePieceNormalizerStream(spec);
  }

  push(text: string): number[] {
    this.normalized += this.normalizer.push(text);
    const cover = this.cover;
    if (!cover || this.normalized.length < this.chunkChars) return [];
    const upTo = this.normalized.length - cover.maxLength;
    const cut = cover.lastCut(this.normalized, this.searched, upTo);
    if (cut < 0) {
      this.searched = Math.max(this.searched, upTo);
      return [];
    }
    const ids = this.encode(this.normalized.slice(0, cut), this.carry);
    this.normalized = this.normalized.slice(cut);
    this.searched = 0;
    return ids;
  }

  end(): number[] {
    const ids = this.encode(this.normalized + this.normalizer.end(), this.carry);
    this.normalized = "";
    return ids;
  }
}
