/**
 * Token-for-token agreement with independent implementations on the 1.2 MB corpus: gpt-tokenizer
 * and js-tiktoken for the tiktoken encodings, SentencePiece itself (its WebAssembly build) and llama-tokenizer-js for LLaMA's vocabulary,
 * and Hugging Face `tokenizers` for tokenizer.json files.
 */
import { describe, expect, it } from "vitest";
import { encode as cl100k } from "gpt-tokenizer/encoding/cl100k_base";
import { encode as o200k } from "gpt-tokenizer/encoding/o200k_base";
import { encode as r50k } from "gpt-tokenizer/encoding/r50k_base";
import { Tiktoken } from "js-tiktoken/lite";
import cl100kRanks from "js-tiktoken/ranks/cl100k_base";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SentencePieceProcessor } from "@agnai/sentencepiece-js";
import llama from "llama-tokenizer-js";
import { Tokenizer as HfTokenizer } from "tokenizers";
import { loadSentencePieceModel, loadTiktoken, loadTokenizerJson, saveTokenizerJson } from "../src/index.js";
import { corpus, llamaPieces, llamaTokenizerJson, randomStrings, tiktokenFile, tiktokenToTokenizerJson, UNICODE_SAMPLES, writeSentencePieceModel } from "./helpers.js";

const texts = () => [...UNICODE_SAMPLES, ...randomStrings(7, 40, 60)];

/** Compares id arrays and reports the first disagreement with context, rather than a 300k-element diff. */
function expectSameIds(ours: number[], theirs: number[], label: string): void {
  const at = ours.findIndex((id, i) => id !== theirs[i]);
  const where = at >= 0 ? at : ours.length !== theirs.length ? Math.min(ours.length, theirs.length) : -1;
  expect(where >= 0 ? `${label}: first difference at ${where}: ours ${ours.slice(where, where + 6).join(",")} vs ${theirs.slice(where, where + 6).join(",")}` : "same", label).toBe("same");
}

describe("tiktoken rank files", () => {
  it("cl100k_base matches gpt-tokenizer and js-tiktoken on the corpus and on Unicode", () => {
    const tok = loadTiktoken(tiktokenFile("cl100k_base"), { pattern: "cl100k_base", specialTokens: { "<|endoftext|>": 100257 } });
    const jsTiktoken = new Tiktoken(cl100kRanks);
    const text = corpus();
    expect(text.length).toBeGreaterThan(1_000_000);
    const ids = tok.encode(text);
    expectSameIds(ids, cl100k(text), "gpt-tokenizer cl100k corpus");
    expectSameIds(ids, jsTiktoken.encode(text), "js-tiktoken cl100k corpus");
    for (const s of texts()) expectSameIds(tok.encode(s), jsTiktoken.encode(s), `js-tiktoken ${JSON.stringify(s)}`);
    expect(tok.encode("a<|endoftext|>b")).toEqual(jsTiktoken.encode("a<|endoftext|>b", "all"));
  });

  it("o200k_base and r50k_base match gpt-tokenizer on the corpus", () => {
    const text = corpus();
    const o = loadTiktoken(tiktokenFile("o200k_base"), { pattern: "o200k_base" });
    expectSameIds(o.encode(text), o200k(text), "o200k corpus");
    for (const s of texts()) expectSameIds(o.encode(s), o200k(s), `o200k ${JSON.stringify(s)}`);
    const r = loadTiktoken(tiktokenFile("r50k_base"), { pattern: "r50k_base" });
    expectSameIds(r.encode(text), r50k(text), "r50k corpus");
  });
});

describe("SentencePiece BPE (LLaMA vocabulary, byte fallback)", () => {
  it(".model encoding matches SentencePiece itself (compiled to WebAssembly) on the corpus and on Unicode", async () => {
    const model = writeSentencePieceModel(llamaPieces());
    const dir = mkdtempSync(join(tmpdir(), "spm-"));
    writeFileSync(join(dir, "llama.model"), model);
    const sp = new SentencePieceProcessor();
    await sp.load(join(dir, "llama.model"));
    const tok = loadSentencePieceModel(model);
    const text = corpus();
    expectSameIds(tok.encode(text), sp.encodeIds(text), "sentencepiece corpus");
    for (const s of texts()) {
      const ids = tok.encode(s);
      expectSameIds(ids, sp.encodeIds(s), `sentencepiece ${JSON.stringify(s)}`);
      expect(tok.decode(ids)).toBe(sp.decodeIds(ids));
    }
    expect(tok.encode("Hello", { addSpecialTokens: true })).toEqual(llama.encode("Hello"));
  });

  it("SentencePiece and LLaMA's merges list disagree on runs of spaces; each loader follows its own format", () => {
    // SentencePiece merges by piece score over every split; LLaMA's tokenizer.json lists fewer merges.
    const text = "    “The"; // with the dummy prefix: five "▁" then “The
    const viaModel = loadSentencePieceModel(writeSentencePieceModel(llamaPieces())).encode(text);
    const viaJson = loadTokenizerJson(llamaTokenizerJson()).encode(text);
    expect(viaModel).toEqual([418, 30015, 1576]); // ▁▁▁▁▁ “ The, as SentencePiece gives
    expect(viaJson).toEqual(llama.encode(text, false, true));
    expect(viaJson).toEqual([268, 1346, 1576]); // ▁▁▁▁ ▁“ The
  });

  it("tokenizer.json (LlamaTokenizerFast layout) matches Hugging Face tokenizers and llama-tokenizer-js", async () => {
    const json = llamaTokenizerJson();
    const ours = loadTokenizerJson(json);
    const hf = HfTokenizer.fromString(JSON.stringify(json));
    const text = corpus().slice(0, 300_000);
    const hfIds = (await hf.encode(text, null, { addSpecialTokens: false })).getIds();
    expectSameIds(ours.encode(text), hfIds, "HF llama json");
    expectSameIds(ours.encode(text), llama.encode(text, false, true), "llama-tokenizer-js via json");
    for (const s of texts().filter((s) => s.length > 0)) {
      const ids = ours.encode(s, { addSpecialTokens: true });
      expectSameIds(ids, (await hf.encode(s)).getIds(), `HF llama ${JSON.stringify(s)}`);
      expect(ours.decode(ids, { skipSpecialTokens: true })).toBe(await hf.decode(ids, true));
    }
  });
});

describe("tiktoken models written as tokenizer.json", () => {
  it("r50k: the same vocabulary and merges as the independent converter, the same ids in Hugging Face tokenizers", async () => {
    const written = saveTokenizerJson(loadTiktoken(tiktokenFile("r50k_base"), { pattern: "r50k_base", specialTokens: { "<|endoftext|>": 50256 } }));
    const parsed = JSON.parse(written) as { model: { vocab: unknown; merges: unknown }; added_tokens: unknown };
    const oracle = tiktokenToTokenizerJson(tiktokenFile("r50k_base"), { "<|endoftext|>": 50256 }) as { model: { vocab: unknown; merges: unknown } };
    expect(parsed.model.vocab).toEqual(oracle.model.vocab);
    expect(parsed.model.merges).toEqual(oracle.model.merges);
    const hf = HfTokenizer.fromString(written);
    const text = corpus().slice(0, 200_000);
    expectSameIds((await hf.encode(text, null, { addSpecialTokens: false })).getIds(), r50k(text), "HF from written r50k");
  });

  it("cl100k: its split pattern survives, so the written file encodes as tiktoken does", async () => {
    const tik = loadTiktoken(tiktokenFile("cl100k_base"), { pattern: "cl100k_base", specialTokens: { "<|endoftext|>": 100257 } });
    const written = saveTokenizerJson(tik);
    const ours = loadTokenizerJson(written);
    const hf = HfTokenizer.fromString(written);
    for (const s of [...texts(), corpus().slice(0, 50_000)]) {
      const ids = tik.encode(s);
      expectSameIds(ours.encode(s), ids, `ours from written cl100k ${JSON.stringify(s.slice(0, 40))}`);
      expectSameIds((await hf.encode(s, null, { addSpecialTokens: false })).getIds(), ids, `HF from written cl100k ${JSON.stringify(s.slice(0, 40))}`);
    }
  });
});

describe("byte-level tokenizer.json (GPT-2 vocabulary)", () => {
  it("matches Hugging Face tokenizers and gpt-tokenizer r50k on the corpus", async () => {
    const json = tiktokenToTokenizerJson(tiktokenFile("r50k_base"), { "<|endoftext|>": 50256 });
    const ours = loadTokenizerJson(json);
    const hf = HfTokenizer.fromString(JSON.stringify(json));
    const text = corpus();
    const ids = ours.encode(text);
    expectSameIds(ids, (await hf.encode(text, null, { addSpecialTokens: false })).getIds(), "HF gpt2 corpus");
    expectSameIds(ids, r50k(text), "r50k via json");
    for (const s of texts()) {
      const sIds = ours.encode(s);
      expectSameIds(sIds, (await hf.encode(s, null, { addSpecialTokens: false })).getIds(), `HF gpt2 ${JSON.stringify(s)}`);
      expect(ours.decode(sIds)).toBe(await hf.decode(sIds, false));
    }
  });
});
