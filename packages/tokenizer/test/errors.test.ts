import { describe, expect, it } from "vitest";
import { loadSentencePieceModel, loadTiktoken, loadTokenizerJson, PieceType, TokenizerError, trainBpe } from "../src/index.js";
import { writeSentencePieceModel } from "./helpers.js";

const tinyJson = () => ({
  model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] },
  pre_tokenizer: null,
  decoder: null,
});

const tinyPieces = [
  { piece: "<unk>", score: 0, type: PieceType.UNKNOWN },
  { piece: "<s>", score: 0, type: PieceType.CONTROL },
  { piece: "</s>", score: 0, type: PieceType.CONTROL },
  { piece: "▁", score: -1, type: PieceType.NORMAL },
  { piece: "a", score: -2, type: PieceType.NORMAL },
  { piece: "▁a", score: -3, type: PieceType.NORMAL },
];

function thrown(fn: () => unknown): TokenizerError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TokenizerError);
    return e as TokenizerError;
  }
  throw new Error("expected a TokenizerError, nothing was thrown");
}

describe("malformed tokenizer.json", () => {
  it("names the problem: bad JSON, missing model, unsupported model type, dangling merge, unsupported setting", () => {
    expect(thrown(() => loadTokenizerJson('{"model": ')).message).toMatch(/^tokenizer\.json: expected valid JSON, got a parse error/);
    expect(thrown(() => loadTokenizerJson({})).message).toBe("tokenizer.json model: expected an object, got undefined");
    expect(thrown(() => loadTokenizerJson({ model: { type: "CharLevel", vocab: {} } })).message).toBe(
      'tokenizer.json model.type: expected "BPE", "Unigram", "WordPiece" or "WordLevel" (other settings are not supported), got "CharLevel"',
    );
    // As in HF, a WordPiece or WordLevel model without its unknown token fails on text that needs it.
    const wordPiece = loadTokenizerJson({ model: { type: "WordPiece", vocab: { a: 0, "##b": 1 } } });
    expect(wordPiece.encode("ab")).toEqual([0, 1]);
    expect(thrown(() => wordPiece.encode("ac")).message).toBe('tokenizer.json model.unk_token: expected a token of model.vocab, for text the vocabulary cannot spell, got "[UNK]"');
    const dangling = tinyJson();
    dangling.model.merges = ["a b", "b c"];
    expect(thrown(() => loadTokenizerJson(dangling)).message).toBe("tokenizer.json model.merges[1]: expected two tokens of model.vocab whose join is also in model.vocab, got \"b + c\"");
    expect(thrown(() => loadTokenizerJson({ ...tinyJson(), normalizer: { type: "Nmt" } })).message).toMatch(/^tokenizer\.json normalizer\.type: expected Sequence, Prepend.*got "Nmt"/);
    expect(thrown(() => loadTokenizerJson({ ...tinyJson(), pre_tokenizer: { type: "UnicodeScripts" } })).message).toMatch(/^tokenizer\.json pre_tokenizer\.type: .*got "UnicodeScripts"/);
    const dropout = tinyJson() as { model: Record<string, unknown> };
    dropout.model.dropout = 0.1;
    expect(thrown(() => loadTokenizerJson(dropout)).message).toBe("tokenizer.json model.dropout: expected null or 0 (other settings are not supported), got 0.1");
    expect(thrown(() => loadTokenizerJson({ ...tinyJson(), decoder: { type: "Sequence", decoders: [{ type: "CTC" }] } }, "tok/x.json")).message).toMatch(
      /^tok\/x\.json decoder\.decoders\[0\]\.type: .*got "CTC"/,
    );
  });

  it("loads the tiny model once it is well formed, and rejects unknown ids when decoding", () => {
    const tok = loadTokenizerJson(tinyJson());
    expect(tok.encode("abab")).toEqual([2, 2]);
    expect(thrown(() => tok.decode([2, 7])).message).toBe("ids[1]: expected a token id in [0, 3), got 7");
    expect(thrown(() => tok.decode([-1])).message).toBe("ids[0]: expected a token id in [0, 3), got -1");
    expect(thrown(() => tok.decode([1.5])).message).toBe("ids[0]: expected a token id in [0, 3), got 1.5");
    expect(thrown(() => tok.decoder().push(3)).message).toBe("id: expected a token id in [0, 3), got 3");
    // As in HF tokenizers, a character a BPE model cannot spell (no unk token, no byte fallback) is dropped.
    expect(tok.encode("abc")).toEqual([2]);
  });
});

describe("SentencePiece .model files", () => {
  it("reads a small model", () => {
    const tok = loadSentencePieceModel(writeSentencePieceModel(tinyPieces, { byteFallback: false }));
    expect(tok.encode("a a")).toEqual([5, 5]);
    expect(tok.encode("b")).toEqual([3, 0]); // no byte fallback: unknown characters become <unk>
    expect(tok.decode([5, 5])).toBe("a a");
  });

  it("says where a truncated file ends", () => {
    const data = writeSentencePieceModel(tinyPieces, { byteFallback: false });
    for (const cut of [3, 10, data.length - 1]) {
      expect(thrown(() => loadSentencePieceModel(data.subarray(0, cut))).message).toMatch(/truncated file\?\)$/);
    }
    expect(thrown(() => loadSentencePieceModel(new Uint8Array())).message).toBe(".model file: expected at least one piece, got none (empty or not a SentencePiece model)");
  });

  it("refuses unsupported model types and normalizers by name", () => {
    expect(thrown(() => loadSentencePieceModel(writeSentencePieceModel(tinyPieces, { modelType: 3, byteFallback: false }))).message).toBe(
      ".model trainer_spec.model_type: expected BPE or UNIGRAM, got WORD",
    );
    expect(thrown(() => loadSentencePieceModel(writeSentencePieceModel(tinyPieces, { normalizer: "nmt_nfkc", byteFallback: false }), "tokenizer.model")).message).toBe(
      'tokenizer.model normalizer_spec.precompiled_charsmap: expected the compiled rules of the "nmt_nfkc" normalizer, got none (a stripped or hand-written model?)',
    );
    expect(thrown(() => loadSentencePieceModel(writeSentencePieceModel(tinyPieces))).message).toBe(
      ".model pieces: expected all 256 byte pieces (byte_fallback is on), got no piece <0x00>",
    );
  });
});

describe("tiktoken files and training options", () => {
  it("names the bad line of a rank file", () => {
    expect(thrown(() => loadTiktoken("YQ== 0\nYg== x\n")).message).toBe('tiktoken file line 2: expected "<base64 token> <rank>", got "Yg== x"');
    expect(thrown(() => loadTiktoken("YQ== 0\n%%% 1\n")).message).toBe('tiktoken file line 2: expected a base64 token, got "%%%"');
    expect(thrown(() => loadTiktoken("YQ== 0", { specialTokens: { "<x>": 0 } })).message).toBe('specialTokens["<x>"]: expected an id no rank uses, got 0');
  });

  it("rejects impossible vocabulary sizes and bad patterns", () => {
    expect(thrown(() => trainBpe("abc", { vocabSize: 100 })).message).toBe("vocabSize: expected an integer of at least 256 (256 bytes + 0 special tokens), got 100");
    expect(thrown(() => trainBpe("abc", { vocabSize: 300, pattern: "(" })).message).toMatch(/^pattern: expected a regular expression JavaScript can run/);
  });
});
