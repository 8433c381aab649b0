import { describe, expect, it } from "vitest";
import { Tokenizer as HfTokenizer } from "tokenizers";
import { loadTokenizerJson, saveTokenizerJson, trainBpe } from "../src/index.js";
import { corpus } from "./helpers.js";

describe("BPE training", () => {
  it("reproduces the hand-worked merges of the low/lower/newest/widest example", () => {
    // Word counts: low 5, lower 2, newest 6, widest 3. Worked by hand (ties → smaller left id, then right):
    //  1 e+s (9, ties s+t)   2 es+t (9)      3 l+o (7, ties o+w)  4 lo+w (7)
    //  5 e+w (6: n+e, e+w, w+est tie; "e" < "n" < "w")   6 n+ew (6)   7 new+est (6)
    //  8 d+est (3: d, i, w tie)   9 i+dest (3)   10 w+idest (3)   11 e+r (2)   12 low+er (2)
    // after which no pair occurs twice (the spaces are pieces of their own under this pattern).
    const text = "low low low low low lower lower newest newest newest newest newest newest widest widest widest";
    const tok = trainBpe(text, { vocabSize: 1000, pattern: String.raw`\S+` });
    const learned = tok.model.tokens.slice(256);
    expect(learned).toEqual(["es", "est", "lo", "low", "ew", "new", "newest", "dest", "idest", "widest", "er", "lower"]);
    expect(tok.encode("lowest newer")).toEqual([tok.tokenToId("low"), tok.tokenToId("est"), 32, tok.tokenToId("new"), tok.tokenToId("er")]);
    // The vocabulary size caps training: 256 bytes + 3 merges.
    expect(trainBpe(text, { vocabSize: 259, pattern: String.raw`\S+` }).model.tokens.slice(256)).toEqual(["es", "est", "lo"]);
  });

  it("trains on the corpus, and HF tokenizers reads the tokenizer.json and encodes held-out text to the same ids", async () => {
    const text = corpus();
    const cut = text.indexOf("\n", Math.floor(text.length * 0.9));
    const [train, heldOut] = [text.slice(0, cut), text.slice(cut)];
    const specials = ["<|endoftext|>", "<|pad|>"];
    const tok = trainBpe(train, { vocabSize: 3000, specialTokens: specials });
    expect(tok.vocabSize).toBe(3000);
    expect(tok.tokenToId("<|endoftext|>")).toBe(0);

    const json = saveTokenizerJson(tok);
    const ours = loadTokenizerJson(json);
    expect(ours.model.tokens).toEqual(tok.model.tokens);
    const sample = `${heldOut}<|endoftext|> naïve 👩‍👩‍👧 日本語`;
    const ids = tok.encode(sample);
    expect(ours.encode(sample)).toEqual(ids);
    expect(ids).toContain(0);

    const hf = HfTokenizer.fromString(json);
    expect(hf.getVocabSize(true)).toBe(3000);
    expect((await hf.encode(sample, null, { addSpecialTokens: false })).getIds()).toEqual(ids);
    expect(await hf.decode(ids, false)).toBe(sample);
    // Compression sanity: a 3000-token vocabulary should need well under one token per 3 bytes of English.
    expect(ids.length).toBeLessThan(heldOut.length / 3);
  });

  it("writes a custom split pattern as a Split pre-tokenizer that HF tokenizers honours", async () => {
    const pattern = String.raw`\p{L}+|\p{N}|[^\p{L}\p{N}]+`;
    const tok = trainBpe(corpus().slice(0, 200_000), { vocabSize: 600, pattern });
    const hf = HfTokenizer.fromString(saveTokenizerJson(tok));
    const sample = "In 1851, 12345 whales — and Ahab's 3 ships!";
    expect((await hf.encode(sample, null, { addSpecialTokens: false })).getIds()).toEqual(tok.encode(sample));
  });
});
