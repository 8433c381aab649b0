/**
 * tokenizer.json files with each setting Hugging Face `tokenizers` knows for BPE and Unigram models,
 * against the ids and decodes `tokenizers` itself gave for them on 1.1 MB of mixed text (English,
 * CJK, emoji, combining marks, full-width forms, digits, tabs, runs of spaces, added tokens mid-text).
 * The fixtures and the script that made them: test/fixtures/tokenizer-json,
 * tools/fixtures/make-tokenizer-json-fixtures.mjs.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { loadTokenizerJson } from "../src/index.js";

interface Expected {
  ids: number;
  idsSha256: string;
  blocks: string[];
  decodeSha256: string;
  decodeSkipSpecialFirst4000: string;
  samples: number[][];
  sampleDecodes: string[];
  withSpecials: number[][];
}

interface Manifest {
  text: string;
  prefix: number;
  block: number;
  samples: string[];
  files: Record<string, Expected>;
}

const dir = join(import.meta.dirname, "fixtures/tokenizer-json");
const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Manifest;
const text = gunzipSync(readFileSync(join(dir, manifest.text))).toString("utf8");
const sha256 = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex");
const u32 = (ids: number[]) => new Uint8Array(Uint32Array.from(ids).buffer);

/** Where `ours` first departs from what HF gave: exactly within the stored prefix, else by block hash. */
function firstDifference(name: string, ours: number[], e: Expected): string {
  const prefix = new Uint32Array(new Uint8Array(gunzipSync(readFileSync(join(dir, `${name}.ids.gz`)))).buffer);
  for (let i = 0; i < prefix.length; i++) {
    if (ours[i] !== prefix[i]) return `id ${i}: ours ${ours.slice(i, i + 6).join(",")} vs HF ${Array.from(prefix.subarray(i, i + 6)).join(",")}`;
  }
  for (let b = 0; b < e.blocks.length; b++) {
    if (sha256(u32(ours.slice(b * manifest.block, (b + 1) * manifest.block))).slice(0, 16) !== e.blocks[b]) return `in ids ${b * manifest.block}..${(b + 1) * manifest.block}`;
  }
  return `length ${ours.length} vs ${e.ids}`;
}

describe("tokenizer.json as Hugging Face tokenizers writes and runs it", () => {
  it("the mixed text is over 1 MB and every kind of setting has a file", () => {
    expect(Buffer.byteLength(text)).toBeGreaterThan(1_000_000);
    expect(Object.keys(manifest.files).length).toBeGreaterThanOrEqual(28);
  });

  for (const [name, e] of Object.entries(manifest.files)) {
    it(`${name}: same ids and decodes as HF tokenizers`, () => {
      const tok = loadTokenizerJson(gunzipSync(readFileSync(join(dir, `${name}.json.gz`))).toString("utf8"), `${name}.json`);
      manifest.samples.forEach((s, i) => {
        expect(tok.encode(s), `sample ${JSON.stringify(s)}`).toEqual(e.samples[i]);
        expect(tok.decode(e.samples[i]), `decode of sample ${JSON.stringify(s)}`).toBe(e.sampleDecodes[i]);
      });
      e.withSpecials.forEach((ids, i) => expect(tok.encode(manifest.samples[i], { addSpecialTokens: true }), `sample ${i} with special tokens`).toEqual(ids));
      const ids = tok.encode(text);
      expect(sha256(u32(ids)) === e.idsSha256 ? "same" : firstDifference(name, ids, e)).toBe("same");
      expect(sha256(tok.decode(ids)), "decode of the text").toBe(e.decodeSha256);
      expect(tok.decode(ids.slice(0, 4000), { skipSpecialTokens: true })).toBe(e.decodeSkipSpecialFirst4000);
    });
  }
});
