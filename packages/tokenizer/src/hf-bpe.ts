/**
 * Hugging Face's BPE model on one pre-tokenized piece, as `tokenizers` runs it (`merge_word`): each
 * character is looked up, with the continuing-subword prefix on all but the first and the
 * end-of-word suffix on the last; a character not in the vocabulary becomes its byte-fallback
 * tokens (all of them or none), else the unknown token (runs fused with `fuse_unk`), else nothing.
 * Then the merges, lowest rank first.
 */
import { bytePiece, utf8 } from "./bytes.js";
import type { MergeTable } from "./merge.js";

export interface HfBpeOptions {
  /** The model's vocabulary (not the added tokens). */
  idOf: ReadonlyMap<string, number>;
  merges: MergeTable;
  unk?: number;
  fuseUnk: boolean;
  byteFallback: boolean;
  prefix: string;
  suffix: string;
  /** Look the whole piece up before merging (`ignore_merges`). */
  ignoreMerges: boolean;
}

export function hfBpe(o: HfBpeOptions): (piece: string) => number[] {
  const byteIds = o.byteFallback ? Array.from({ length: 256 }, (_, b) => o.idOf.get(bytePiece(b))) : undefined;
  return (piece) => {
    if (o.ignoreMerges) {
      const whole = o.idOf.get(piece);
      if (whole !== undefined) return [whole];
    }
    const ids: number[] = [];
    let pendingUnk = false;
    const chars = Array.from(piece);
    chars.forEach((c, i) => {
      const s = `${i > 0 ? o.prefix : ""}${c}${i === chars.length - 1 ? o.suffix : ""}`;
      const id = o.idOf.get(s);
      if (id !== undefined) {
        if (pendingUnk) ids.push(o.unk!);
        pendingUnk = false;
        ids.push(id);
        return;
      }
      if (byteIds) {
        const bytes = Array.from(utf8(s), (b) => byteIds[b]);
        // HF adds these before an unknown token still waiting to be fused.
        if (bytes.every((b) => b !== undefined)) {
          ids.push(...bytes);
          return;
        }
      }
      if (o.unk === undefined) return; // HF drops a character it cannot spell
      if (pendingUnk && !o.fuseUnk) ids.push(o.unk);
      pendingUnk = true;
    });
    if (pendingUnk) ids.push(o.unk!);
    return o.merges.apply(ids);
  };
}
