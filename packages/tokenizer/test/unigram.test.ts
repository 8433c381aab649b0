import { describe, expect, it } from "vitest";
import { Unigram } from "../src/unigram.js";

const pieces = [
  { piece: "<unk>", score: 0 },
  { piece: "▁a", score: -1 },
  { piece: "b", score: -2 },
  { piece: "▁ab", score: -2.5 },
  { piece: "▁", score: -3 },
  { piece: "a", score: -3 },
];

describe("Unigram", () => {
  it("picks the segmentation with the highest total score", () => {
    const m = new Unigram(pieces, { unkId: 0 });
    expect(m.encode("▁ab")).toEqual([3]); // -2.5 beats ▁a + b = -3
    expect(m.encode("▁a▁b")).toEqual([1, 4, 2]);
  });

  it("fuses unknown characters, or spells them as bytes", () => {
    expect(new Unigram(pieces, { unkId: 0 }).encode("▁axy😀b")).toEqual([1, 0, 2]);
    expect(new Unigram(pieces, { unkId: 0, fuseUnk: false }).encode("xy")).toEqual([0, 0]);
    const byteIds = Array.from({ length: 256 }, (_, b) => 100 + b);
    expect(new Unigram(pieces, { unkId: 0, byteIds }).encode("é")).toEqual([100 + 0xc3, 100 + 0xa9]);
  });
});
