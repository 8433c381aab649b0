/**
 * The Unigram language model of SentencePiece (and of Hugging Face's `Unigram` model): text is cut
 * into the pieces whose scores (log probabilities) sum highest, found by Viterbi over every way of
 * cutting it. It is SentencePiece's `EncodeOptimized`: one pass over the characters, keeping only the
 * best path that ends at each position.
 *
 * The details that decide ties and rounding, so ids match the reference bit for bit:
 * - candidates ending at one position are tried in order of their start, and the first with the
 *   highest score is kept (a later one must be strictly better);
 * - a character that no matchable piece spells alone gets an unknown node of score
 *   `minScore - 10`;
 * - SentencePiece adds scores in float32 (`float32: true`); Hugging Face adds in float64;
 * - SentencePiece's user-defined pieces score `UTF-8 length × maxScore - 0.1`, so they always win.
 */
import { utf8 } from "./bytes.js";
import { fail } from "./errors.js";

/** One entry of the vocabulary; its id is its index. */
export interface UnigramPiece {
  piece: string;
  score: number;
}

export interface UnigramOptions {
  /** Id given to characters no piece covers; undefined makes such a character an error. */
  unkId?: number;
  /** Unknown characters become their UTF-8 bytes as `byteIds[b]` (the `<0xNN>` pieces). */
  byteIds?: ArrayLike<number>;
  /** Consecutive unknown characters become one unknown id (default true; ignored with byteIds). */
  fuseUnk?: boolean;
  /** Add scores in float32 as SentencePiece does (default false: float64, as Hugging Face). */
  float32?: boolean;
  /** Ids that may be matched in text (default: all). SentencePiece matches normal, user-defined and unused pieces. */
  matchable?: (id: number) => boolean;
  /** Ids that score as SentencePiece user-defined pieces. */
  userDefined?: (id: number) => boolean;
  /** Ids matched in text but then dropped from the path, as SentencePiece's unused pieces. */
  unused?: (id: number) => boolean;
  /** The lowest score, for the unknown node (default: the lowest among matchable pieces that are neither user-defined nor unused). */
  minScore?: number;
  /** The highest score, for user-defined pieces (default: as minScore; SentencePiece starts it at FLT_MIN, so it is never below 1.2e-38). */
  maxScore?: number;
}

const UNK_PENALTY = 10;

/**
 * What `encode` carries from one text to the next where a longer text is cut at a point no piece
 * covers: the best path score at the cut (paths go on from it) and whether the path ended in an
 * unknown character (so a run of them still fuses).
 */
export interface UnigramCarry {
  score: number;
  previousUnknown: boolean;
}

interface TrieNode {
  next: Map<number, TrieNode>;
  id: number;
}

/**
 * A Unigram model: `encode(text)` gives the ids of the best segmentation of `text`, which should
 * already be normalized (SentencePiece: spaces written "▁").
 *
 * @example
 * const model = new Unigram([{ piece: "<unk>", score: 0 }, { piece: "▁a", score: -1 }, { piece: "b", score: -2 }], { unkId: 0 });
 * model.encode("▁ab"); // [1, 2]
 */
export class Unigram {
  readonly pieces: readonly UnigramPiece[];
  private readonly root: TrieNode = { next: new Map(), id: -1 };
  private readonly unkScore: number;
  private readonly maxScore: number;
  private readonly userLength: Map<number, number> = new Map();
  private readonly options: UnigramOptions;

  constructor(pieces: readonly UnigramPiece[], options: UnigramOptions = {}) {
    this.pieces = pieces;
    this.options = options;
    const matchable = options.matchable ?? (() => true);
    let min = Infinity;
    let max = -Infinity;
    pieces.forEach(({ piece, score }, id) => {
      if (!matchable(id) || piece.length === 0) return;
      if (!options.userDefined?.(id) && !options.unused?.(id)) {
        min = Math.min(min, score);
        max = Math.max(max, score);
      }
      let node = this.root;
      for (let i = 0; i < piece.length; i++) {
        const c = piece.charCodeAt(i);
        let child = node.next.get(c);
        if (!child) node.next.set(c, (child = { next: new Map(), id: -1 }));
        node = child;
      }
      if (node.id < 0) node.id = id;
      if (options.userDefined?.(id)) this.userLength.set(id, utf8(piece).length);
    });
    const round = options.float32 ? Math.fround : (x: number) => x;
    this.unkScore = round((options.minScore ?? (min === Infinity ? 0 : min)) - UNK_PENALTY);
    this.maxScore = options.maxScore ?? (max === -Infinity ? 0 : max);
    if (options.unkId !== undefined && (options.unkId < 0 || options.unkId >= pieces.length)) fail("Unigram unkId", `an id in [0, ${pieces.length})`, options.unkId);
  }

  /**
   * The best segmentation of normalized text as ids. With `carry`, `text` continues the text of the
   * previous call, cut where no piece covers the cut; `carry` is updated for the next.
   */
  encode(text: string, carry?: UnigramCarry): number[] {
    const { byteIds, unkId, fuseUnk = true } = this.options;
    const out: number[] = [];
    let previousUnknown = carry?.previousUnknown ?? false;
    for (const [start, end, id] of this.segment(text, carry)) {
      if (id >= 0) {
        out.push(id);
      } else if (byteIds) {
        for (const b of utf8(text.slice(start, end))) out.push(byteIds[b]);
      } else if (unkId === undefined) {
        fail("text", "characters the Unigram vocabulary covers (it has no unknown piece)", text.slice(start, end));
      } else if (!(fuseUnk && previousUnknown)) {
        out.push(unkId);
      }
      previousUnknown = id < 0;
    }
    if (carry) carry.previousUnknown = previousUnknown;
    return out;
  }

  /**
   * The best path as [start, end, id] triples over UTF-16 offsets of `text`, in order; id -1 marks
   * one unknown character. Unused pieces on the path are not split here (SentencePiece's Unigram
   * never selects them). Paths start from `carry.score` (default 0), and `carry.score` becomes
   * the best score at the end.
   */
  segment(text: string, carry?: { score: number }): [number, number, number][] {
    const n = text.length;
    const f32 = this.options.float32 === true;
    const unused = this.options.unused;
    // Best path ending at each offset: its score, where its last piece starts, and that piece's id.
    const score = new Float64Array(n + 1);
    const from = new Int32Array(n + 1).fill(-1);
    const ids = new Int32Array(n + 1).fill(-1);
    score[0] = carry?.score ?? 0;
    for (let start = 0; start < n; ) {
      const base = score[start];
      const c = text.charCodeAt(start);
      const charLen = c >= 0xd800 && c <= 0xdbff && start + 1 < n ? 2 : 1;
      let single = false;
      let node: TrieNode | undefined = this.root;
      for (let end = start; end < n; ) {
        node = node.next.get(text.charCodeAt(end++));
        if (!node) break;
        const id = node.id;
        if (id < 0 || unused?.(id)) continue;
        const userLen = this.userLength.get(id);
        let candidate: number;
        if (userLen !== undefined) {
          // SentencePiece computes this one in double: (float(length × max) − 0.1) + path score.
          candidate = (f32 ? Math.fround(userLen * this.maxScore) : userLen * this.maxScore) - 0.1 + base;
        } else {
          candidate = f32 ? Math.fround(this.pieces[id].score + base) : this.pieces[id].score + base;
        }
        if (from[end] < 0 || candidate > score[end]) {
          score[end] = f32 ? Math.fround(candidate) : candidate;
          from[end] = start;
          ids[end] = id;
        }
        if (end - start === charLen) single = true;
      }
      if (!single) {
        const end = start + charLen;
        const candidate = f32 ? Math.fround(this.unkScore + base) : this.unkScore + base;
        if (from[end] < 0 || candidate > score[end]) {
          score[end] = candidate;
          from[end] = start;
          ids[end] = -1;
        }
      }
      start += charLen;
    }
    if (carry) carry.score = score[n];
    const path: [number, number, number][] = [];
    for (let end = n; end > 0; end = from[end]) path.push([from[end], end, ids[end]]);
    return path.reverse();
  }
}
