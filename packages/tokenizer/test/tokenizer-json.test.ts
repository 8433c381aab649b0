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
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { loadTokenizerFile, loadTokenizerJson, TokenizerError } from "../src/index.js";

interface Expected {
  ids: number;
  idsSha256: string;
  blocks: string[];
  decodeSha256: string;
  decodeSkipSpecialFirst4000: string;
  samples: number[][];
  sampleDecodes: string[];
  withSpecials: number[][];
  /** Texts only this file needs, with HF's ids. */
  extra?: [string, number[]][];
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
    expect(Object.keys(manifest.files).length).toBeGreaterThanOrEqual(30);
  });

  for (const [name, e] of Object.entries(manifest.files)) {
    it(`${name}: same ids and decodes as HF tokenizers`, () => {
      const tok = loadTokenizerJson(gunzipSync(readFileSync(join(dir, `${name}.json.gz`))).toString("utf8"), `${name}.json`);
      manifest.samples.forEach((s, i) => {
        expect(tok.encode(s), `sample ${JSON.stringify(s)}`).toEqual(e.samples[i]);
        expect(tok.decode(e.samples[i]), `decode of sample ${JSON.stringify(s)}`).toBe(e.sampleDecodes[i]);
      });
      for (const [t, ids] of e.extra ?? []) expect(tok.encode(t), `text ${JSON.stringify(t)}`).toEqual(ids);
      e.withSpecials.forEach((ids, i) => expect(tok.encode(manifest.samples[i], { addSpecialTokens: true }), `sample ${i} with special tokens`).toEqual(ids));
      const ids = tok.encode(text);
      expect(sha256(u32(ids)) === e.idsSha256 ? "same" : firstDifference(name, ids, e)).toBe("same");
      expect(sha256(tok.decode(ids)), "decode of the text").toBe(e.decodeSha256);
      expect(tok.decode(ids.slice(0, 4000), { skipSpecialTokens: true })).toBe(e.decodeSkipSpecialFirst4000);
    });
  }

  it("encodeStream gives the ids of the whole text under every file's settings", async () => {
    const part = text.slice(0, 150_000);
    for (const name of Object.keys(manifest.files)) {
      const tok = loadTokenizerJson(gunzipSync(readFileSync(join(dir, `${name}.json.gz`))).toString("utf8"));
      const chunks = Array.from({ length: Math.ceil(part.length / 4999) }, (_, i) => part.slice(i * 4999, (i + 1) * 4999));
      const out: number[] = [];
      for await (const ids of tok.encodeStream(chunks, { chunkChars: 8192 })) out.push(...ids);
      const whole = tok.encode(part);
      expect(out.length === whole.length && out.every((id, i) => id === whole[i]) ? "same" : `differs under ${name}`).toBe("same");
    }
  });
});

describe("tokenizer.json settings that are still refused", () => {
  const base = () => JSON.parse(gunzipSync(readFileSync(join(dir, "bytelevel-gpt2.json.gz"))).toString("utf8")) as Record<string, unknown>;
  const refusal = async (json: object) => {
    const path = join(mkdtempSync(join(tmpdir(), "tokjson-")), "tokenizer.json");
    writeFileSync(path, JSON.stringify(json));
    const error = await loadTokenizerFile(path).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TokenizerError);
    const message = (error as Error).message;
    expect(message.startsWith(`${path} `), message).toBe(true);
    return message.slice(path.length + 1);
  };

  it("names the file and the component", async () => {
    expect(await refusal({ ...base(), model: { type: "WordLevel2", vocab: {} } })).toMatch(/^model\.type: expected "BPE", "Unigram", "WordPiece" or "WordLevel".*got "WordLevel2"/);
    expect(await refusal({ ...base(), normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }, { type: "Precompiled", precompiled_charsmap: "" }] } })).toMatch(
      /^normalizer\.normalizers\[1\]\.precompiled_charsmap: expected a trie size/,
    );
    expect(await refusal({ ...base(), normalizer: { type: "Precompiled", precompiled_charsmap: "%%%" } })).toMatch(/^normalizer\.precompiled_charsmap: expected a base64 charsmap, got "%%%"/);
    expect(await refusal({ ...base(), normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }, { type: "Nmt" }] } })).toMatch(/^normalizer\.normalizers\[1\]\.type: .*got "Nmt"/);
    expect(await refusal({ ...base(), pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "UnicodeScripts" }] } })).toMatch(/^pre_tokenizer\.pretokenizers\[0\]\.type: .*got "UnicodeScripts"/);
    expect(await refusal({ ...base(), pre_tokenizer: { type: "Split", pattern: { Regex: "x" }, behavior: "Glued", invert: false } })).toMatch(/^pre_tokenizer\.behavior: expected Removed, Isolated/);
    expect(await refusal({ ...base(), decoder: { type: "CTC" } })).toMatch(/^decoder\.type: .*got "CTC"/);
    expect(await refusal({ ...base(), post_processor: { type: "Unknown" } })).toMatch(/^post_processor\.type: .*got "Unknown"/);
    const model = base().model as Record<string, unknown>;
    expect(await refusal({ ...base(), model: { ...model, dropout: 0.1 } })).toMatch(/^model\.dropout: expected null or 0/);
  });
});

describe("encodeStream of tokenizer.json models cut before spaces", () => {
  /** mulberry32: a seeded generator of floats in [0, 1). */
  const rng = (seed: number) => () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const bytes = new TextEncoder().encode(text);
  const names = Object.keys(manifest.files).filter((name) => loadTokenizerJson(gunzipSync(readFileSync(join(dir, `${name}.json.gz`))).toString("utf8")).model.splitsBeforeSpace);

  it("Unigram, WordPiece, WordLevel and the Metaspace and whitespace-split BPE files stream this way; a split that may span a space does not", () => {
    for (const name of ["unigram-metaspace", "unigram-byte-fallback", "precompiled-unigram", "wordpiece-bert", "wordpiece-cased-short-words", "wordlevel", "metaspace-always", "whitespace-split"]) {
      expect(names).toContain(name);
    }
    for (const name of ["metaspace-never-nosplit", "split-isolated-string", "normalizers-nfkc-lowercase-strip", "normalizers-nfd-replace-regex"]) expect(names).not.toContain(name);
  });

  for (const [i, name] of names.entries()) {
    it(`${name}: random byte chunks of the whole text give the ids of the whole`, { timeout: 60_000 }, async () => {
      const tok = loadTokenizerJson(gunzipSync(readFileSync(join(dir, `${name}.json.gz`))).toString("utf8"));
      const next = rng(31 + i);
      const chunks: Uint8Array[] = [];
      for (let at = 0; at < bytes.length; ) {
        const r = next();
        const len = r < 0.3 ? 1 : r < 0.6 ? 2 + Math.floor(next() * 15) : 17 + Math.floor(next() * 20_000);
        chunks.push(bytes.subarray(at, at + len));
        at += len;
      }
      const out: number[] = [];
      let yields = 0;
      for await (const ids of tok.encodeStream(chunks, { chunkChars: 1 + Math.floor(next() * 3000) })) {
        for (const id of ids) out.push(id);
        yields++;
      }
      const whole = tok.encode(text);
      expect(out.length === whole.length && out.every((id, k) => id === whole[k]) ? "same" : `differs under ${name}`).toBe("same");
      expect(yields).toBeGreaterThan(50);
    });
  }
});
