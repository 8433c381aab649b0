/**
 * SentencePiece `.model` files trained by python `sentencepiece` give its ids, id for id, on 1.4 MB
 * of mixed text, and decode as it decodes. The models, the text and the expected ids are made by
 * tools/fixtures/make-sentencepiece-fixtures.py (see its docstring for the file layout).
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { crc32, gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { loadSentencePieceModel, parseSentencePieceModel } from "../src/index.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "fixtures/sentencepiece");
const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as { samples: number; utf8_bytes: number; models: Record<string, { tokens: number }> };
const texts = JSON.parse(gunzipSync(readFileSync(join(dir, "text.json.gz"))).toString("utf8")) as string[];
const model = (name: string) => gunzipSync(readFileSync(join(dir, `${name}.model.gz`)));

/** The expected ids of every sample: uint16 LE count, then the ids. */
function expectedIds(name: string): number[][] {
  const raw = gunzipSync(readFileSync(join(dir, `${name}.ids.gz`)));
  const words = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  const out: number[][] = [];
  for (let at = 0; at < words.length; ) {
    const n = words[at++];
    out.push(Array.from(words.subarray(at, at + n)));
    at += n;
  }
  return out;
}

function expectedDecodeCrcs(name: string): Uint32Array {
  const raw = gunzipSync(readFileSync(join(dir, `${name}.decoded.gz`)));
  return new Uint32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
}

describe("SentencePiece models trained by python sentencepiece", () => {
  it("the fixture holds at least 1 MB of text", () => {
    expect(texts.length).toBe(index.samples);
    expect(index.utf8_bytes).toBeGreaterThan(1 << 20);
  });

  for (const name of Object.keys(index.models)) {
    describe(name, () => {
      const tok = loadSentencePieceModel(model(name));

      it("encodes every sample to sentencepiece's ids", () => {
        const expected = expectedIds(name);
        expect(expected.length).toBe(texts.length);
        let mismatches = 0;
        let first = "";
        texts.forEach((t, i) => {
          const ids = tok.encode(t);
          if (ids.join(",") === expected[i].join(",")) return;
          if (mismatches++ === 0) first = `sample ${i} ${JSON.stringify(t)}: got ${ids.join(" ")}, expected ${expected[i].join(" ")}`;
        });
        expect(first).toBe("");
        expect(mismatches).toBe(0);
      });

      it("decodes sentencepiece's ids to sentencepiece's text", () => {
        const expected = expectedIds(name);
        const crcs = expectedDecodeCrcs(name);
        let first = "";
        let mismatches = 0;
        expected.forEach((ids, i) => {
          const text = tok.decode(ids);
          if (crc32(text) === crcs[i]) return;
          if (mismatches++ === 0) first = `sample ${i} ${JSON.stringify(texts[i])} decoded as ${JSON.stringify(text)}`;
        });
        expect(first).toBe("");
        expect(mismatches).toBe(0);
      });

      it("encodes the samples streamed as one text as it encodes them one by one", async () => {
        // Whole lines joined by "\n": the ids of the whole equal what encode gives the whole.
        const whole = texts.slice(0, 3000).join("\n");
        const chunks = [];
        for (let at = 0; at < whole.length; at += 10_000) chunks.push(whole.slice(at, at + 10_000));
        const streamed: number[] = [];
        for await (const ids of tok.encodeStream(chunks, { chunkChars: 50_000 })) streamed.push(...ids);
        expect(streamed).toEqual(tok.encode(whole));
      });
    });
  }

  it("streams nmt_nfkc BPE with remove_extra_whitespaces in chunks, with the ids of the whole", async () => {
    // bpe-nfkc-bytes with remove_extra_whitespaces switched on: a second normalizer_spec field
    // (field 3) holding only remove_extra_whitespaces = 1 merges into the first, as protobuf does.
    // (sentencepiece-stream.test.ts streams every fixture model with random chunks.)
    const tok = loadSentencePieceModel(new Uint8Array([...model("bpe-nfkc-bytes"), 0x1a, 0x02, 0x20, 0x01]));
    expect(parseSentencePieceModel(new Uint8Array([...model("bpe-nfkc-bytes"), 0x1a, 0x02, 0x20, 0x01])).removeExtraWhitespaces).toBe(true);
    const whole = texts.slice(0, 4000).join("\n");
    const streamed: number[] = [];
    let chunks = 0;
    const parts = Array.from({ length: Math.ceil(whole.length / 5000) }, (_, i) => whole.slice(i * 5000, (i + 1) * 5000));
    for await (const ids of tok.encodeStream(parts, { chunkChars: 20_000 })) {
      streamed.push(...ids);
      chunks++;
    }
    expect(chunks).toBeGreaterThan(5);
    expect(streamed).toEqual(tok.encode(whole));
  });

  it("reads the normalizer as the file states it", () => {
    const spec = (name: string) => {
      const m = parseSentencePieceModel(model(name));
      return [m.modelType, m.normalizerName, m.precompiledCharsmap.length > 0, m.addDummyPrefix, m.removeExtraWhitespaces, m.byteFallback];
    };
    expect(spec("bpe-nfkc-bytes")).toEqual([2, "nmt_nfkc", true, true, false, true]);
    expect(spec("unigram-nfkc")).toEqual([1, "nmt_nfkc", true, true, true, false]);
    expect(spec("bpe-identity")).toEqual([2, "identity", false, true, true, false]);
    expect(spec("unigram-nfkc-cf-bytes")).toEqual([1, "nmt_nfkc_cf", true, false, true, true]);
  });

  it("normalizes compatibility characters with the model's charsmap, not String.normalize", () => {
    const tok = loadSentencePieceModel(model("unigram-nfkc"));
    const text = (s: string) => tok.decode(tok.encode(s));
    expect(text("ﬁne ① ㎏ ℌ ＡＢＣ")).toBe("fine 1 kg H ABC");
    expect(text("  a \t b  ")).toBe("a b"); // tabs are spaces under nmt_nfkc; runs collapse
    expect(text("<s>")).toBe("<s>"); // control pieces are not looked for in the text
    expect(tok.encode("x<sep>y")).toContain(tok.tokenToId("<sep>")); // user-defined pieces are
  });
});
