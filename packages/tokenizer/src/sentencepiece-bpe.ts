/**
 * SentencePiece's own BPE encoder (bpe_model.cc), for `.model` files of BPE type such as the
 * Baichuan tokenizer of TNL-1B/7B.
 *
 * The normalized text starts as one symbol per character (a user-defined piece found there is one
 * frozen symbol, never merged). Then, repeatedly, the adjacent pair whose join is a piece with the
 * highest score is merged, ties going to the leftmost pair. A merge may produce an unused piece;
 * such a piece is split back into the two symbols it was made of at the end.
 *
 * This differs from the rank table of `MergeTable` only where two pieces have equal scores or
 * unused pieces exist, but those are exactly the cases where ids would silently differ.
 */

/** One candidate merge: symbols `left` and `right`, whose join is a piece of `score` and `length`. */
interface Pair {
  score: number;
  left: number;
  right: number;
  length: number;
}

/** `a` is merged before `b`: higher score first, then the leftmost. */
const before = (a: Pair, b: Pair) => a.score > b.score || (a.score === b.score && a.left < b.left);

export interface SentencePieceBpeVocab {
  /** Normal, user-defined and unused pieces by their text (SentencePiece's `pieces_`). */
  pieces: ReadonlyMap<string, number>;
  scores: ArrayLike<number>;
  isUnused: (id: number) => boolean;
  /** User-defined pieces: matched first, longest match, and never merged. */
  userDefined: readonly string[];
  /** SentencePiece's PieceToId: control, unknown and byte pieces first, then `pieces`, else the unknown id. */
  pieceToId: (piece: string) => number;
}

export class SentencePieceBpe {
  private readonly user = new Map<number, string[]>(); // first UTF-16 unit → user-defined pieces, longest first

  constructor(private readonly vocab: SentencePieceBpeVocab) {
    for (const p of vocab.userDefined) {
      const list = this.user.get(p.charCodeAt(0)) ?? [];
      list.push(p);
      this.user.set(p.charCodeAt(0), list);
    }
    for (const list of this.user.values()) list.sort((a, b) => b.length - a.length);
  }

  /**
   * The pieces of normalized text with their ids (the unknown id for a character no piece spells).
   *
   * @example
   * bpe.encode("▁hello"); // [["▁hell", 812], ["o", 31]]
   */
  encode(text: string): [string, number][] {
    const { pieces, scores } = this.vocab;
    // Symbols as [start, end) offsets into `text`; a merged-away symbol has start === end.
    const start: number[] = [];
    const end: number[] = [];
    const frozen: boolean[] = [];
    for (let at = 0; at < text.length; ) {
      const user = this.user.get(text.charCodeAt(at))?.find((p) => text.startsWith(p, at));
      const c = text.charCodeAt(at);
      const len = user ? user.length : c >= 0xd800 && c <= 0xdbff && at + 1 < text.length ? 2 : 1;
      start.push(at);
      end.push(at + len);
      frozen.push(user !== undefined);
      at += len;
    }
    const n = start.length;
    const prev = Array.from({ length: n }, (_, i) => i - 1);
    const next = Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const heap: Pair[] = [];
    // Unused pieces made by a merge, and the two symbols they were made of.
    const madeOf = new Map<string, [string, string]>();

    const consider = (left: number, right: number) => {
      if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
      const joined = text.slice(start[left], end[right]);
      const id = pieces.get(joined);
      if (id === undefined) return;
      heapPush(heap, { score: scores[id], left, right, length: joined.length });
      if (this.vocab.isUnused(id)) madeOf.set(joined, [text.slice(start[left], end[left]), text.slice(start[right], end[right])]);
    };
    for (let i = 1; i < n; i++) consider(i - 1, i);

    while (heap.length > 0) {
      const { left, right, length } = heapPop(heap);
      const leftLength = end[left] - start[left];
      const rightLength = end[right] - start[right];
      // A stale pair: one side was merged into something else since it was queued.
      if (leftLength === 0 || rightLength === 0 || leftLength + rightLength !== length) continue;
      end[left] = end[right];
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      end[right] = start[right];
      consider(prev[left], left);
      consider(left, next[left]);
    }

    const out: [string, number][] = [];
    const resegment = (piece: string) => {
      const id = this.vocab.pieceToId(piece);
      const parts = id >= 0 && this.vocab.isUnused(id) ? madeOf.get(piece) : undefined;
      if (!parts) {
        out.push([piece, id]);
        return;
      }
      resegment(parts[0]);
      resegment(parts[1]);
    };
    for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]) resegment(text.slice(start[i], end[i]));
    return out;
  }
}

function heapPush(heap: Pair[], pair: Pair): void {
  let i = heap.length;
  heap.push(pair);
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (!before(pair, heap[parent])) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = pair;
}

function heapPop(heap: Pair[]): Pair {
  const top = heap[0];
  const last = heap.pop()!;
  const n = heap.length;
  if (n === 0) return top;
  let i = 0;
  for (;;) {
    let child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && before(heap[child + 1], heap[child])) child++;
    if (!before(heap[child], last)) break;
    heap[i] = heap[child];
    i = child;
  }
  heap[i] = last;
  return top;
}
