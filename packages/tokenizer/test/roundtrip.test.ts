/**
 * Round trips, incremental decoding and streaming encoding, for every model type: tiktoken,
 * SentencePiece .model, SentencePiece-style tokenizer.json and a trained byte-level tokenizer.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { Tokenizer } from "../src/index.js";
import { loadSentencePieceModel, loadTiktoken, loadTokenizerJson, trainBpe } from "../src/index.js";
import { corpus, llamaPieces, llamaTokenizerJson, randomStrings, tiktokenFile, UNICODE_SAMPLES, writeSentencePieceModel } from "./helpers.js";

const models: Record<string, Tokenizer> = {};
beforeAll(() => {
  models.tiktoken = loadTiktoken(tiktokenFile("cl100k_base"), { specialTokens: { "<|endoftext|>": 100257 } });
  models.sentencepiece = loadSentencePieceModel(writeSentencePieceModel(llamaPieces()));
  models.llamaJson = loadTokenizerJson(llamaTokenizerJson());
  models.trained = trainBpe(corpus().slice(0, 300_000), { vocabSize: 1000, specialTokens: ["<|endoftext|>"] });
});

const kinds = ["tiktoken", "sentencepiece", "llamaJson", "trained"];
const samples = [...UNICODE_SAMPLES, ...randomStrings(42, 200, 40)];

describe.each(kinds)("%s", (kind) => {
  it("round-trips arbitrary Unicode", () => {
    const tok = models[kind];
    for (const s of samples) expect(tok.decode(tok.encode(s)), JSON.stringify(s)).toBe(s);
  });

  it("encodes lone surrogates as U+FFFD, as TextEncoder does", () => {
    const tok = models[kind];
    for (const s of ["a\uD800b", "\uDC00x", "end\uD83D", "\uDE00\uD83D"]) {
      expect(tok.decode(tok.encode(s))).toBe(s.replace(/[\uD800-\uDFFF]/g, "\uFFFD"));
    }
    expect(tok.encode("x\uD83D\uDE00y")).not.toEqual(tok.encode("x\uFFFDy")); // a valid pair is kept
  });

  it("keeps special tokens whole and can skip them when decoding", () => {
    const tok = models[kind];
    const special = tok.model.specials.find((s) => s.special)!;
    if (kind === "sentencepiece") {
      // SentencePiece itself spells "<s>" in text as "<", "s", ">"; a .model file keeps to that.
      const bos = tok.tokenToId("<s>")!;
      expect(tok.encode("hi<s>there")).not.toContain(bos);
      expect(tok.decode([bos])).toBe(""); // control pieces decode to nothing, the unknown piece to " ⁇ "
      expect(tok.decode([special.id])).toBe(" ⁇ ");
      return;
    }
    const ids = tok.encode(`hi${special.content}there`);
    expect(ids).toContain(special.id);
    expect(tok.decode(ids, { skipSpecialTokens: true })).not.toContain(special.content);
  });

  it("decodes incrementally: each push yields only whole characters, and together exactly decode()", () => {
    const tok = models[kind];
    for (const s of samples.slice(0, 60)) {
      const ids = tok.encode(s);
      const stream = tok.decoder();
      const parts = ids.map((id) => stream.push(id));
      parts.push(stream.end());
      for (const p of parts) expect(p.includes("\uFFFD") && !s.includes("\uFFFD"), JSON.stringify(s)).toBe(false);
      expect(parts.join("")).toBe(tok.decode(ids));
    }
  });

  it("encodes a stream in chunks to exactly the ids of the whole text", async () => {
    const tok = models[kind];
    const text = `${corpus().slice(0, 200_000)}\n👍🏽 日本語\nend`;
    const bytes = new TextEncoder().encode(text);
    // 997-byte chunks cut UTF-8 characters in the middle; the stream must reassemble them.
    const chunks = Array.from({ length: Math.ceil(bytes.length / 997) }, (_, i) => bytes.subarray(i * 997, (i + 1) * 997));
    const out: number[] = [];
    let pieces = 0;
    for await (const ids of tok.encodeStream(chunks, { chunkChars: 8192 })) {
      out.push(...ids);
      pieces++;
    }
    expect(out).toEqual(tok.encode(text));
    expect(pieces).toBeGreaterThan(10); // it really streamed
  });
});

describe("incremental decoding of a character spelled in byte tokens", () => {
  it("holds the bytes of 👍 until the last one arrives", () => {
    const tok = models.sentencepiece;
    const ids = tok.encode("👍").filter((id) => id !== tok.tokenToId("▁"));
    expect(ids.map((id) => tok.idToToken(id))).toEqual(["<0xF0>", "<0x9F>", "<0x91>", "<0x8D>"]);
    const stream = tok.decoder();
    expect(ids.map((id) => stream.push(id))).toEqual(["", "", "", "👍"]);
  });

  it("turns bytes that can never form a character into U+FFFD", () => {
    const tok = models.sentencepiece;
    const bad = [tok.tokenToId("<0xFF>")!, tok.tokenToId("<0xF0>")!];
    expect(tok.decode(bad)).toBe("\uFFFD\uFFFD");
    const stream = tok.decoder();
    expect(stream.push(bad[0]) + stream.push(bad[1]) + stream.end()).toBe("\uFFFD\uFFFD");
  });
});
