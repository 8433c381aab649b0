/**
 * encodeStream of SentencePiece models (BPE and Unigram, nmt_nfkc, nmt_nfkc_cf and identity, with
 * and without remove_extra_whitespaces and add_dummy_prefix) gives the ids `encode` gives the whole
 * document, whatever the chunks: cuts after single bytes, inside UTF-8 characters, surrogate pairs,
 * combining sequences, emoji ZWJ sequences, charsmap keys of several characters (ｶﾞ, A + ring) and
 * runs of whitespace. The document is the 1.4 MB of mixed text of the sentencepiece fixtures plus a
 * dense mix of such sequences.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { loadSentencePieceModel, parseSentencePieceModel, PieceType } from "../src/index.js";
import type { Tokenizer } from "../src/index.js";
import { BytePrefixMatcher, normalizeSentencePiece, PrecompiledCharsmap } from "../src/sentencepiece-normalizer.js";
import type { SentencePieceNormalizerSpec } from "../src/sentencepiece-normalizer.js";
import { PieceCover, SentencePieceNormalizerStream } from "../src/sentencepiece-stream.js";
import { llamaPieces, writeSentencePieceModel } from "./helpers.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "fixtures/sentencepiece");
const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as { models: Record<string, unknown> };
const texts = JSON.parse(gunzipSync(readFileSync(join(dir, "text.json.gz"))).toString("utf8")) as string[];
const model = (name: string) => gunzipSync(readFileSync(join(dir, `${name}.model.gz`)));

/** mulberry32: a seeded generator of floats in [0, 1). */
function rng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

// Sequences where a careless cut changes ids: clusters, keys of several characters, whitespace runs,
// the meta symbol itself, the user-defined pieces of unigram-nfkc (<sep>, ◆◆, @@) and their halves.
const FRAGMENTS = [
  "👩‍👩‍👧‍👦", "👍🏽", "🇯🇵🇫🇷", "🏳️‍🌈", "e\u0301", "a\u0300\u0316", "Z\u0351\u036b\u0343\u036a", "A\u030a", "ｶﾞ", "ﾊﾟｰﾃｨｰ", "\u1100\u1161\u11a8",
  "ﬁ", "ﬀl", "①②", "㎏", "ＡＢＣ１２", "ǅ", "™", "…", "Ⅻ", "𝔘𝔫𝔦", "𐍈", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\u3000", "\u00a0", "\u2028",
  "\u200b", "\ufeff", "▁", "▁▁", "<sep>", "◆◆", "◆", "@@", "@", "<s>", "the", "The quick", "1234567", "日本語", "中文", "한국어", "مرحبا", "x",
];

function trickyText(seed: number, length: number): string {
  const next = rng(seed);
  let s = "";
  while (s.length < length) s += FRAGMENTS[Math.floor(next() * FRAGMENTS.length)];
  return s;
}

/** The UTF-8 bytes of `text` in chunks of random sizes: many of one byte, many short, some long. */
function byteChunks(text: string, seed: number): Uint8Array[] {
  const bytes = new TextEncoder().encode(text);
  const next = rng(seed);
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const r = next();
    const len = r < 0.3 ? 1 : r < 0.6 ? 2 + Math.floor(next() * 15) : 17 + Math.floor(next() * 20_000);
    chunks.push(bytes.subarray(at, at + len));
    at += len;
  }
  return chunks;
}

/** `text` as string chunks of random lengths in code units, so some end between the halves of a surrogate pair. */
function stringChunks(text: string, seed: number): string[] {
  const next = rng(seed);
  const chunks: string[] = [];
  for (let at = 0; at < text.length; ) {
    const len = 1 + Math.floor(next() * (next() < 0.5 ? 4 : 3000));
    chunks.push(text.slice(at, at + len));
    at += len;
  }
  return chunks;
}

async function streamed(tok: Tokenizer, chunks: Iterable<string | Uint8Array>, chunkChars: number): Promise<{ ids: number[]; yields: number }> {
  const ids: number[] = [];
  let yields = 0;
  for await (const part of tok.encodeStream(chunks, { chunkChars })) {
    for (const id of part) ids.push(id);
    yields++;
  }
  return { ids, yields };
}

/** "same", or where the two id lists first differ. */
function compare(got: number[], want: number[]): string {
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) return `id ${i}: got ${got.slice(i, i + 5).join(",")}, whole gives ${want.slice(i, i + 5).join(",")}`;
  return got.length === want.length ? "same" : `length ${got.length} vs ${want.length}`;
}

describe("encodeStream of SentencePiece models", () => {
  const document = `${texts.join("\n")}\n${trickyText(17, 60_000)}`;

  it("the document is over 1 MB", () => {
    expect(new TextEncoder().encode(document).length).toBeGreaterThan(1 << 20);
  });

  for (const [i, name] of Object.keys(index.models).entries()) {
    it(`${name}: random chunks give the ids of the whole document`, { timeout: 120_000 }, async () => {
      const tok = loadSentencePieceModel(model(name));
      const whole = tok.encode(document);
      const bytes = await streamed(tok, byteChunks(document, 100 + i), 257 + 61 * i);
      expect(compare(bytes.ids, whole)).toBe("same");
      // Ids come out as the input goes in, not all at the end.
      expect(bytes.yields).toBeGreaterThan(100);
      const strings = await streamed(tok, stringChunks(document, 200 + i), 4093);
      expect(compare(strings.ids, whole)).toBe("same");
    });

    it(`${name}: single bytes through dense clusters, whitespace runs and multi-character keys`, { timeout: 60_000 }, async () => {
      const tok = loadSentencePieceModel(model(name));
      for (const seed of [1, 2, 3]) {
        const text = trickyText(seed * 7 + i, 6_000);
        const whole = tok.encode(text);
        const bytes = new TextEncoder().encode(text);
        // chunkChars 1: a cut is looked for after every byte.
        const { ids } = await streamed(tok, Array.from({ length: bytes.length }, (_, k) => bytes.subarray(k, k + 1)), 1);
        expect(compare(ids, whole), `seed ${seed}`).toBe("same");
      }
    });
  }

  it("edge texts: empty, only spaces, spaces at the ends, a lone surrogate split from nothing", async () => {
    for (const name of Object.keys(index.models)) {
      const tok = loadSentencePieceModel(model(name));
      for (const text of ["", " ", "   ", "\n\n", " a ", "a   ", "   a", "\u200b", "\ud83d", "x\ud83d", "\ud83d\ude00", "▁", "a▁▁"]) {
        const chunks = Array.from(text);
        const split = text.length > 1 ? [text.slice(0, 1), text.slice(1)] : [text];
        expect((await streamed(tok, chunks, 1)).ids, `${name} ${JSON.stringify(text)}`).toEqual(tok.encode(text));
        expect((await streamed(tok, split, 1)).ids, `${name} ${JSON.stringify(text)} split`).toEqual(tok.encode(text));
      }
    }
  });

  it("LLaMA's BPE (identity, spaces kept) streams; with an unused piece it waits for the end, with the same ids", async () => {
    const pieces = llamaPieces();
    const text = `${texts.slice(0, 2000).join("\n")}${trickyText(5, 5_000)}`;
    const plain = loadSentencePieceModel(writeSentencePieceModel(pieces));
    const whole = plain.encode(text);
    const a = await streamed(plain, byteChunks(text, 9), 500);
    expect(compare(a.ids, whole)).toBe("same");
    expect(a.yields).toBeGreaterThan(10);
    // An unused piece that merges make: split back as the last pair that formed it anywhere in the text.
    const unusedAt = pieces.findIndex((p) => p.piece === "▁the");
    const withUnused = loadSentencePieceModel(writeSentencePieceModel(pieces.map((p, id) => (id === unusedAt ? { ...p, type: PieceType.UNUSED } : p))));
    const wholeUnused = withUnused.encode(text);
    expect(wholeUnused).not.toContain(unusedAt);
    const b = await streamed(withUnused, byteChunks(text, 9), 500);
    expect(compare(b.ids, wholeUnused)).toBe("same");
    expect(b.yields).toBe(1);
  });
});

describe("SentencePieceNormalizerStream", () => {
  /** The normalizer of a fixture model, with its switches set as given. */
  function spec(name: string, over: Partial<SentencePieceNormalizerSpec> = {}): SentencePieceNormalizerSpec {
    const m = parseSentencePieceModel(model(name));
    const user = m.pieces.filter((p) => p.type === PieceType.USER_DEFINED).map((p) => p.piece);
    return {
      charsmap: m.precompiledCharsmap.length > 0 ? new PrecompiledCharsmap(m.precompiledCharsmap) : undefined,
      addDummyPrefix: m.addDummyPrefix,
      removeExtraWhitespaces: m.removeExtraWhitespaces,
      escapeWhitespaces: m.escapeWhitespaces,
      userDefined: new BytePrefixMatcher(user),
      ...over,
    };
  }

  const variants: [string, Partial<SentencePieceNormalizerSpec>][] = [];
  for (const name of Object.keys(index.models)) {
    for (const removeExtraWhitespaces of [false, true]) {
      for (const addDummyPrefix of [false, true]) variants.push([name, { removeExtraWhitespaces, addDummyPrefix, escapeWhitespaces: !(removeExtraWhitespaces && addDummyPrefix) }]);
    }
  }

  it("pushed in random pieces, gives normalizeSentencePiece of the whole under every setting", () => {
    const next = rng(4242);
    for (const [name, over] of variants) {
      const s = spec(name, over);
      for (let trial = 0; trial < 60; trial++) {
        const text = trickyText(Math.floor(next() * 1e9), 1 + Math.floor(next() * 80));
        const stream = new SentencePieceNormalizerStream(s);
        let out = "";
        const cps = Array.from(text);
        for (let at = 0; at < cps.length; ) {
          const len = 1 + Math.floor(next() * 4);
          out += stream.push(cps.slice(at, at + len).join(""));
          at += len;
        }
        out += stream.end();
        expect(out, `${name} ${JSON.stringify(over)} ${JSON.stringify(text)}`).toBe(normalizeSentencePiece(text, s));
      }
    }
  });

  it("holds back a key that more input could lengthen, and trailing spaces until something follows", () => {
    const s = spec("unigram-nfkc");
    const stream = new SentencePieceNormalizerStream(s);
    // "ｶ" alone maps to "カ", but "ｶﾞ" is one key ("ガ"): nothing of it may come out before "ﾞ" or the end.
    expect(stream.push("aｶ")).toBe("▁a");
    expect(stream.push("ﾞ ")).toBe("ガ");
    expect(stream.push("  ")).toBe("");
    // "b" too may start a longer key (a combining mark may follow): it comes out with what follows it.
    expect(stream.push("b")).toBe("");
    expect(stream.push("  ")).toBe("▁b");
    expect(stream.end()).toBe("");
    expect(normalizeSentencePiece("aｶﾞ   b  ", s)).toBe("▁aガ▁b");
  });
});

describe("PieceCover", () => {
  it("allows a cut only where no piece spans it, and never inside a surrogate pair", () => {
    const cover = new PieceCover(["ab", "bcd", "x"]);
    expect(cover.maxLength).toBe(3);
    const text = "abcdab😀x";
    // offsets: a0 b1 c2 d3 a4 b5 😀6-7 x8
    expect([1, 2, 3, 4, 5, 6, 7, 8].filter((at) => !cover.covers(text, at))).toEqual([4, 6, 7, 8]);
    expect(cover.lastCut(text, 0, 8)).toBe(8);
    expect(cover.lastCut(text, 0, 7)).toBe(6); // 7 is between the halves of 😀
    expect(cover.lastCut(text, 0, 3)).toBe(-1);
    expect(cover.lastCut(text, 4, 5)).toBe(-1); // only (4, 5] is looked at
  });
});
