/**
 * The BPE merge loop shared by every model type. A model is reduced to a table of allowed pairs:
 * (left id, right id) → rank, and rank → the merged id. Lower ranks merge first and ties go to the
 * leftmost pair. That one rule is HF BPE (rank = line in `merges`), tiktoken (rank = rank of the
 * merged bytes) and SentencePiece BPE (rank = order of the merged piece's score).
 *
 * The loop keeps the symbols in a linked list and the candidate pairs in a binary heap, so a word of
 * n symbols costs O(n log n), not the O(n²) of rescanning all pairs after every merge.
 */
import { fail } from "./errors.js";

const ID_SPAN = 2 ** 21; // ids must stay below this; pairs are keyed by left * ID_SPAN + right
const POS_SPAN = 2 ** 26; // heap keys are rank * POS_SPAN + position, exact in a float64

export class MergeTable {
  private readonly rankOf = new Map<number, number>();
  private results: number[] = [];
  private lefts: number[] = [];
  private rights: number[] = [];

  /** Adds a merge with the next rank; a pair already present keeps its earlier (better) rank. */
  add(left: number, right: number, merged: number): void {
    if (left >= ID_SPAN || right >= ID_SPAN || merged >= ID_SPAN) fail("merge ids", `ids below ${ID_SPAN}`, Math.max(left, right, merged));
    const key = left * ID_SPAN + right;
    if (this.rankOf.has(key)) return;
    this.rankOf.set(key, this.results.length);
    this.results.push(merged);
    this.lefts.push(left);
    this.rights.push(right);
  }

  /** The pair merged at `rank`, for writing the merges list back out. */
  pair(rank: number): [number, number] {
    return [this.lefts[rank], this.rights[rank]];
  }

  get size(): number {
    return this.results.length;
  }

  /** Rank of the pair, or -1 if the pair never merges. */
  rank(left: number, right: number): number {
    return this.rankOf.get(left * ID_SPAN + right) ?? -1;
  }

  merged(rank: number): number {
    return this.results[rank];
  }

  /** Merges `ids` in place order and returns the final ids. */
  apply(ids: ArrayLike<number>): number[] {
    const n = ids.length;
    if (n < 2) return Array.from(ids);
    if (n >= POS_SPAN) fail("text piece", `fewer than ${POS_SPAN} symbols between split points`, n);
    const sym = Int32Array.from(ids);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const heap: number[] = [];
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const consider = (i: number) => {
      const j = next[i];
      if (i < 0 || j < 0) return;
      const r = this.rank(sym[i], sym[j]);
      if (r >= 0) heapPush(heap, r * POS_SPAN + i);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);

    while (heap.length > 0) {
      const key = heapPop(heap);
      const i = key % POS_SPAN;
      const r = (key - i) / POS_SPAN;
      const j = next[i];
      // Stale entries are skipped: a merged symbol always has a different id, so the pair's rank changes.
      if (sym[i] < 0 || j < 0 || this.rank(sym[i], sym[j]) !== r) continue;
      sym[i] = this.results[r];
      sym[j] = -1;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      consider(prev[i]);
      consider(i);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }
}

/** True if some merged token has "\n" before its last byte: then a cut after "\n" could split a token. */
export function mergesSpanNewline(merges: MergeTable, bytes: Uint8Array[]): boolean {
  for (let r = 0; r < merges.size; r++) {
    const b = bytes[merges.merged(r)];
    const nl = b.indexOf(10);
    if (nl >= 0 && nl < b.length - 1) return true;
  }
  return false;
}

function heapPush(heap: number[], key: number): void {
  let i = heap.length;
  heap.push(key);
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent] <= key) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = key;
}

function heapPop(heap: number[]): number {
  const top = heap[0];
  const last = heap.pop()!;
  const n = heap.length;
  if (n === 0) return top;
  let i = 0;
  for (;;) {
    let child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap[child + 1] < heap[child]) child++;
    if (heap[child] >= last) break;
    heap[i] = heap[child];
    i = child;
  }
  heap[i] = last;
  return top;
}
