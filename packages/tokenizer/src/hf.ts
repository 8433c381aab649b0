/**
 * Hugging Face `tokenizer.json`: reading BPE models with the normalizers, pre-tokenizers, decoders
 * and post-processors BPE tokenizers use, and writing byte-level BPE models that `tokenizers` and
 * `transformers` load. Anything else is refused with an error that names the setting.
 */
import { BYTE_TO_CHAR, byteLevelBytes, byteLevelString, parseBytePiece, utf8 } from "./bytes.js";
import { fail, prose, TokenizerError } from "./errors.js";
import { MergeTable, mergesSpanNewline } from "./merge.js";
import type { Normalizer, PreTokenizer, PrependScheme } from "./pretokenize.js";
import { GPT2_PATTERN, metaspace, prepend, regexSplit, replace, splitBefore } from "./pretokenize.js";
import type { InitialSymbols, SpecialToken, TokenizerModel } from "./tokenizer.js";
import { Tokenizer } from "./tokenizer.js";

type Json = Record<string, unknown>;

function obj(value: unknown, arg: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(arg, "an object", value);
  return value as Json;
}

function str(value: unknown, arg: string): string {
  if (typeof value !== "string") fail(arg, "a string", value);
  return value;
}

function int(value: unknown, arg: string): number {
  if (!Number.isInteger(value) || (value as number) < 0) fail(arg, "a non-negative integer", value);
  return value as number;
}

const unsupported = (arg: string, what: string, got: unknown): never => fail(arg, `${what} (other settings are not supported)`, got);

/**
 * Reads a tokenizer.json (text or parsed) holding a BPE model.
 *
 * @example
 * const tok = loadTokenizerJson(readFileSync("tokenizer.json", "utf8"));
 * tok.decode(tok.encode("héllo 👋")); // "héllo 👋"
 */
export function loadTokenizerJson(input: string | object): Tokenizer {
  let json: Json;
  if (typeof input === "string") {
    try {
      json = obj(JSON.parse(input), "tokenizer.json");
    } catch (e) {
      if (e instanceof TokenizerError) throw e;
      return fail("tokenizer.json", "valid JSON", prose(`a parse error: ${(e as Error).message}`));
    }
  } else {
    json = obj(input, "tokenizer.json");
  }
  const model = obj(json.model, "tokenizer.json model");
  const type = model.type ?? (model.merges ? "BPE" : undefined);
  if (type !== "BPE") unsupported("model.type", '"BPE"', type);
  if (model.dropout !== undefined && model.dropout !== null && model.dropout !== 0) unsupported("model.dropout", "null or 0", model.dropout);
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    if (model[key] !== undefined && model[key] !== null && model[key] !== "") unsupported(`model.${key}`, "null", model[key]);
  }

  const vocab = obj(model.vocab, "model.vocab");
  const tokens: string[] = [];
  for (const [token, id] of Object.entries(vocab)) tokens[int(id, `model.vocab[${JSON.stringify(token)}]`)] = token;
  const specials = parseAddedTokens(json.added_tokens, tokens);
  for (let i = 0; i < tokens.length; i++) tokens[i] ??= "";
  const idOf = new Map(Object.entries(vocab) as [string, number][]);

  const preTokenizers: PreTokenizer[] = [];
  const pre = parsePreTokenizer(json.pre_tokenizer, "pre_tokenizer", preTokenizers);
  const normalizers = parseNormalizer(json.normalizer, "normalizer");
  const dec = parseDecoder(json.decoder, "decoder");
  const byteLevel = pre.byteLevel || dec.byteLevel;
  const byteFallback = model.byte_fallback === true;

  const specialBytes = new Map(specials.map((s) => [s.id, utf8(s.content)]));
  const bytes = tokens.map((token, id) => {
    const special = specialBytes.get(id);
    if (special) return special;
    if (byteLevel) return byteLevelBytes(token) ?? utf8(token);
    const byte = byteFallback ? parseBytePiece(token) : undefined;
    if (byte !== undefined) return Uint8Array.of(byte);
    return utf8(dec.spaceFrom ? token.replaceAll(dec.spaceFrom, " ") : token);
  });

  const merges = new MergeTable();
  const list = model.merges;
  if (!Array.isArray(list)) fail("model.merges", "an array", list);
  list.forEach((entry: unknown, i) => {
    const pair: readonly unknown[] = typeof entry === "string" ? splitMerge(entry, i) : Array.isArray(entry) && entry.length === 2 ? entry : fail(`model.merges[${i}]`, '"a b" or ["a", "b"]', entry);
    const [a, b] = pair;
    if (typeof a !== "string" || typeof b !== "string") fail(`model.merges[${i}]`, "two tokens of model.vocab whose join is also in model.vocab", entry);
    const left = idOf.get(a);
    const right = idOf.get(b);
    const merged = idOf.get(`${a}${b}`);
    if (left === undefined || right === undefined || merged === undefined) fail(`model.merges[${i}]`, "two tokens of model.vocab whose join is also in model.vocab", `${a} + ${b}`);
    merges.add(left, right, merged);
  });

  let initial: InitialSymbols;
  const unkToken = model.unk_token;
  const unk = typeof unkToken === "string" ? idOf.get(unkToken) : undefined;
  if (byteLevel) {
    initial = { kind: "bytes", byteIds: Int32Array.from(BYTE_TO_CHAR, (c) => idOf.get(c) ?? -1) };
  } else {
    const charIds = new Map<string, number>();
    for (const [token, id] of idOf) if ([...token].length === 1) charIds.set(token, id);
    let fallback: Int32Array | undefined;
    if (byteFallback) {
      fallback = new Int32Array(256);
      for (let b = 0; b < 256; b++) {
        const piece = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
        fallback[b] = idOf.get(piece) ?? fail("model.vocab", `the byte-fallback token ${piece} (byte_fallback is true)`, prose("none"));
      }
    }
    initial = { kind: "chars", charIds, byteFallback: fallback, unk, fuseUnk: model.fuse_unk === true };
  }

  const model_: TokenizerModel = {
    kind: byteLevel ? "byte-level" : "sentencepiece",
    tokens,
    bytes,
    merges,
    initial,
    normalizers,
    preTokenizers,
    specials,
    ignoreMerges: model.ignore_merges === true,
    stripLeadingSpace: dec.stripLeadingSpace,
    template: parsePostProcessor(json.post_processor, "post_processor", idOf, specials),
    splitsAfterNewline: pre.regex || !mergesSpanNewline(merges, bytes),
    source: json,
  };
  return new Tokenizer(model_);
}

function splitMerge(entry: string, i: number): [string, string] {
  const space = entry.indexOf(" ", 1);
  if (space < 0) fail(`model.merges[${i}]`, '"left right"', entry);
  return [entry.slice(0, space), entry.slice(space + 1)];
}

function parseAddedTokens(value: unknown, tokens: string[]): SpecialToken[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) fail("added_tokens", "an array", value);
  return value.map((entry, i) => {
    const t = obj(entry, `added_tokens[${i}]`);
    for (const flag of ["lstrip", "rstrip", "single_word"]) if (t[flag] === true) unsupported(`added_tokens[${i}].${flag}`, "false", true);
    const id = int(t.id, `added_tokens[${i}].id`);
    const content = str(t.content, `added_tokens[${i}].content`);
    tokens[id] = content;
    return { id, content, special: t.special !== false };
  });
}

function parseNormalizer(value: unknown, arg: string): Normalizer[] {
  if (value === undefined || value === null) return [];
  const n = obj(value, arg);
  switch (n.type) {
    case "Sequence": {
      const list = n.normalizers;
      if (!Array.isArray(list)) fail(`${arg}.normalizers`, "an array", list);
      return list.flatMap((m, i) => parseNormalizer(m, `${arg}.normalizers[${i}]`));
    }
    case "Prepend":
      return [prepend(str(n.prepend, `${arg}.prepend`))];
    case "Replace":
      return [replace(stringPattern(n.pattern, `${arg}.pattern`), str(n.content, `${arg}.content`))];
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = n.type;
      return [(text) => text.normalize(form)];
    }
    case "Lowercase":
      return [(text) => text.toLowerCase()];
    default:
      return unsupported(`${arg}.type`, "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD or Lowercase", n.type);
  }
}

function stringPattern(value: unknown, arg: string): string {
  const p = obj(value, arg);
  if (typeof p.String === "string") return p.String;
  return unsupported(arg, '{"String": …} (regex replacements are not supported)', value);
}

interface PreInfo {
  byteLevel: boolean;
  /** A GPT-style split regex is in the chain, so pieces end after "\n" + non-space. */
  regex: boolean;
}

function parsePreTokenizer(value: unknown, arg: string, out: PreTokenizer[]): PreInfo {
  const info: PreInfo = { byteLevel: false, regex: false };
  if (value === undefined || value === null) return info;
  const p = obj(value, arg);
  switch (p.type) {
    case "Sequence": {
      const list = p.pretokenizers;
      if (!Array.isArray(list)) fail(`${arg}.pretokenizers`, "an array", list);
      for (const [i, item] of list.entries()) {
        const sub = parsePreTokenizer(item, `${arg}.pretokenizers[${i}]`, out);
        info.byteLevel ||= sub.byteLevel;
        info.regex ||= sub.regex;
      }
      return info;
    }
    case "ByteLevel":
      // HF adds the prefix space to every piece that does not start with one.
      if (p.add_prefix_space === true) out.push((pieces, at) => pieces.map((s, i) => (s.startsWith(" ") || (i === 0 && at === "continuation") ? s : ` ${s}`)));
      if (p.use_regex !== false) out.push(regexSplit(GPT2_PATTERN));
      return { byteLevel: true, regex: p.use_regex !== false };
    case "Split": {
      if (p.invert === true) unsupported(`${arg}.invert`, "false", true);
      const behavior = p.behavior === "Isolated" ? "isolated" : p.behavior === "Removed" ? "removed" : unsupported(`${arg}.behavior`, '"Isolated" or "Removed"', p.behavior);
      const pattern = obj(p.pattern, `${arg}.pattern`);
      if (typeof pattern.Regex === "string") {
        out.push(regexSplit(pattern.Regex, behavior));
        return { byteLevel: false, regex: true };
      }
      out.push(regexSplit(new RegExp(str(pattern.String, `${arg}.pattern.String`).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gu"), behavior));
      return info;
    }
    case "Metaspace": {
      const replacement = str(p.replacement ?? "▁", `${arg}.replacement`);
      const scheme = (p.prepend_scheme ?? (p.add_prefix_space === false ? "never" : "always")) as PrependScheme;
      if (!["always", "first", "never"].includes(scheme)) unsupported(`${arg}.prepend_scheme`, '"always", "first" or "never"', scheme);
      const ms = metaspace(replacement, scheme);
      out.push((pieces, at) => pieces.map((s, i) => ms(s, i === 0 ? at : "continuation")));
      if (p.split !== false) out.push(splitBefore(replacement));
      return info;
    }
    case "Digits":
      out.push(regexSplit(p.individual_digits === true ? /\p{N}/gu : /\p{N}+/gu));
      return info;
    default:
      return unsupported(`${arg}.type`, "Sequence, ByteLevel, Split, Metaspace or Digits", p.type);
  }
}

interface DecoderInfo {
  byteLevel: boolean;
  /** The character that decodes to a space ("▁"), if the decoder replaces one. */
  spaceFrom?: string;
  stripLeadingSpace: boolean;
}

function parseDecoder(value: unknown, arg: string, info: DecoderInfo = { byteLevel: false, stripLeadingSpace: false }): DecoderInfo {
  if (value === undefined || value === null) return info;
  const d = obj(value, arg);
  switch (d.type) {
    case "Sequence": {
      const list = d.decoders;
      if (!Array.isArray(list)) fail(`${arg}.decoders`, "an array", list);
      list.forEach((item, i) => parseDecoder(item, `${arg}.decoders[${i}]`, info));
      return info;
    }
    case "ByteLevel":
      info.byteLevel = true;
      return info;
    case "Metaspace":
      info.spaceFrom = str(d.replacement ?? "▁", `${arg}.replacement`);
      info.stripLeadingSpace = (d.prepend_scheme ?? (d.add_prefix_space === false ? "never" : "always")) !== "never";
      return info;
    case "Replace": {
      const content = str(d.content, `${arg}.content`);
      if (content !== " ") unsupported(`${arg}.content`, '" " (replacing a marker by a space)', content);
      info.spaceFrom = stringPattern(d.pattern, `${arg}.pattern`);
      return info;
    }
    case "Strip":
      if (d.content !== " " || d.stop !== 0 || (d.start !== 0 && d.start !== 1)) unsupported(arg, 'Strip of at most one leading " "', d);
      info.stripLeadingSpace = d.start === 1;
      return info;
    case "ByteFallback":
    case "Fuse":
      return info; // token bytes already carry byte fallback and concatenation
    default:
      return unsupported(`${arg}.type`, "Sequence, ByteLevel, Metaspace, Replace, Strip, ByteFallback or Fuse", d.type);
  }
}

function parsePostProcessor(value: unknown, arg: string, idOf: Map<string, number>, specials: SpecialToken[]): TokenizerModel["template"] {
  const template = { prefix: [] as number[], suffix: [] as number[] };
  if (value === undefined || value === null) return template;
  const p = obj(value, arg);
  const idFor = (token: string) => specials.find((s) => s.content === token)?.id ?? idOf.get(token) ?? fail(arg, "special tokens present in the vocabulary", token);
  switch (p.type) {
    case "ByteLevel":
      return template; // only changes offsets
    case "Sequence": {
      const list = p.processors;
      if (!Array.isArray(list)) fail(`${arg}.processors`, "an array", list);
      for (const [i, item] of list.entries()) {
        const t = parsePostProcessor(item, `${arg}.processors[${i}]`, idOf, specials);
        template.prefix.push(...t.prefix);
        template.suffix.push(...t.suffix);
      }
      return template;
    }
    case "TemplateProcessing": {
      const single = p.single;
      if (!Array.isArray(single)) fail(`${arg}.single`, "an array", single);
      let seenText = false;
      for (const [i, piece] of single.entries()) {
        const item = obj(piece, `${arg}.single[${i}]`);
        if (item.Sequence) {
          seenText = true;
          continue;
        }
        const special = obj(item.SpecialToken, `${arg}.single[${i}].SpecialToken`);
        const name = str(special.id, `${arg}.single[${i}].SpecialToken.id`);
        const entry = p.special_tokens ? (p.special_tokens as Record<string, { ids?: number[] }>)[name] : undefined;
        const ids = entry?.ids ?? [idFor(name)];
        (seenText ? template.suffix : template.prefix).push(...ids);
      }
      return template;
    }
    case "RobertaProcessing":
    case "BertProcessing": {
      const cls = p.cls as [string, number];
      const sep = p.sep as [string, number];
      template.prefix.push(cls[1]);
      template.suffix.push(sep[1]);
      return template;
    }
    default:
      return unsupported(`${arg}.type`, "ByteLevel, Sequence, TemplateProcessing, RobertaProcessing or BertProcessing", p.type);
  }
}

/**
 * Writes a tokenizer as tokenizer.json text. Models read from tokenizer.json are written back as
 * read; byte-level models built here (by `trainBpe`) get a standard GPT-2-style file.
 *
 * @example
 * writeFileSync("tokenizer.json", saveTokenizerJson(trainBpe(corpus, { vocabSize: 1000 })));
 */
export function saveTokenizerJson(tokenizer: Tokenizer): string {
  const m = tokenizer.model;
  if (m.source !== undefined) return JSON.stringify(m.source, null, 2);
  if (m.pattern === undefined || (m.kind !== "byte-level" && m.kind !== "tiktoken")) {
    fail("tokenizer", "a byte-level BPE model (trained here, read from tokenizer.json or from a tiktoken rank file)", prose(`a ${m.kind} model`));
  }
  const { vocab, merges } = m.kind === "tiktoken" ? tiktokenVocab(m) : byteLevelVocab(m);
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: m.pattern === GPT2_PATTERN };
  const preTokenizer =
    m.pattern === GPT2_PATTERN
      ? byteLevel
      : { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: oniguruma(m.pattern) }, behavior: "Isolated", invert: false }, byteLevel] };
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: m.specials.map((s) => ({ id: s.id, content: s.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: s.special })),
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      // tiktoken looks a whole piece up before merging.
      ignore_merges: m.ignoreMerges,
      vocab,
      merges,
    },
  };
  return JSON.stringify(json, null, 2);
}

interface BpeTables {
  vocab: Record<string, number>;
  merges: [string, string][];
}

/** A byte-level model's tokens and merges, as its tokens are written. */
function byteLevelVocab(m: Tokenizer["model"]): BpeTables {
  const vocab: Record<string, number> = {};
  m.tokens.forEach((t, id) => (vocab[t] = id));
  const merges: [string, string][] = [];
  for (let r = 0; r < m.merges.size; r++) {
    const [a, b] = m.merges.pair(r);
    merges.push([m.tokens[a], m.tokens[b]]);
  }
  return { vocab, merges };
}

/**
 * A tiktoken model's ranks as a byte-level vocabulary and merges. tiktoken keeps only ranks; the
 * merge that makes a token is found by running BPE on its bytes with every lower rank until two
 * parts are left (what Hugging Face's tiktoken converter does).
 */
function tiktokenVocab(m: Tokenizer["model"]): BpeTables {
  const specialIds = new Set(m.specials.map((t) => t.id));
  const key = (bytes: Uint8Array) => String.fromCharCode(...bytes);
  const rankOf = new Map<string, number>();
  m.bytes.forEach((b, id) => {
    if (b.length > 0 && !specialIds.has(id)) rankOf.set(key(b), id);
  });
  const vocab: Record<string, number> = {};
  const merges: [string, string][] = [];
  m.bytes.forEach((b, rank) => {
    if (b.length === 0 || specialIds.has(rank)) return;
    vocab[byteLevelString(b)] = rank;
    if (b.length < 2) return;
    let parts = Array.from(b, (x) => Uint8Array.of(x));
    for (;;) {
      let best = -1;
      let bestRank = rank;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = rankOf.get(key(parts[i]) + key(parts[i + 1]));
        if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
      }
      if (best < 0) break;
      const joined = new Uint8Array(parts[best].length + parts[best + 1].length);
      joined.set(parts[best]);
      joined.set(parts[best + 1], parts[best].length);
      parts = [...parts.slice(0, best), joined, ...parts.slice(best + 2)];
    }
    if (parts.length === 2) merges.push([byteLevelString(parts[0]), byteLevelString(parts[1])]);
  });
  return { vocab, merges };
}

/**
 * A split pattern as Hugging Face tokenizers' regex engine (Oniguruma) reads it the way this package
 * does. tiktoken's patterns use possessive quantifiers (`\p{N}{1,3}+`, `\p{L}++`), which split text
 * as the greedy ones do, but Oniguruma reads `{1,3}+` as "one or more runs of one to three", so the
 * file carries the greedy spelling. Its `$` means end of line, so the end of
 * the text is written `\z`.
 */
function oniguruma(pattern: string): string {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      // An escape, \p{…} whole: its "}" is no quantifier.
      const esc = /^\\[pP]\{[^}]*\}/.exec(pattern.slice(i))?.[0] ?? pattern.slice(i, i + 2);
      out += esc;
      i += esc.length - 1;
    } else if (c === "[") {
      // A character class, copied whole: a "+" inside it is a character.
      let j = i + 1;
      while (j < pattern.length && pattern[j] !== "]") j += pattern[j] === "\\" ? 2 : 1;
      out += pattern.slice(i, j + 1);
      i = j;
    } else if (c === "$") {
      out += "\\z";
    } else {
      out += c;
      if ("?*+}".includes(c) && pattern[i + 1] === "+" && pattern[i - 1] !== "(") i++;
    }
  }
  return out;
}
