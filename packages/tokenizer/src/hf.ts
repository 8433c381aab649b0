/**
 * Hugging Face `tokenizer.json`: reading BPE, Unigram, WordPiece and WordLevel models with every normalizer,
 * pre-tokenizer, decoder and post-processor `tokenizers` writes for them, and writing byte-level BPE
 * models that `tokenizers` and `transformers` load. Anything else is refused with an error that
 * names the file and the setting.
 */
import { bytePiece, byteLevelString, utf8 } from "./bytes.js";
import { fail, prose, TokenizerError } from "./errors.js";
import { hfBpe } from "./hf-bpe.js";
import { parseDecoder, tokenBytes } from "./hf-decode.js";
import type { AddedToken, NormalizerInfo, PreTokenizerInfo, Segment } from "./hf-text.js";
import { hfSegmenter, parseNormalizer, parsePreTokenizer, unsupported } from "./hf-text.js";
import { MergeTable, mergesSpanNewline } from "./merge.js";
import { GPT2_PATTERN } from "./pretokenize.js";
import type { InitialSymbols, SpecialToken, TokenizerModel } from "./tokenizer.js";
import { Tokenizer } from "./tokenizer.js";
import { Unigram } from "./unigram.js";

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

/**
 * Reads a tokenizer.json (text or parsed) holding a BPE, Unigram, WordPiece or WordLevel model, with any of the
 * normalizers, pre-tokenizers, decoders and post-processors `tokenizers` writes for them (see
 * hf-text.ts and hf-decode.ts). Anything else is refused with an error naming `file` and the setting.
 *
 * @example
 * const tok = loadTokenizerJson(readFileSync("tokenizer.json", "utf8"));
 * tok.decode(tok.encode("héllo 👋")); // "héllo 👋"
 */
export function loadTokenizerJson(input: string | object, file = "tokenizer.json"): Tokenizer {
  let json: Json;
  if (typeof input === "string") {
    try {
      json = obj(JSON.parse(input), file);
    } catch (e) {
      if (e instanceof TokenizerError) throw e;
      return fail(file, "valid JSON", prose(`a parse error: ${(e as Error).message}`));
    }
  } else {
    json = obj(input, file);
  }
  const at = (path: string) => `${file} ${path}`;
  const model = obj(json.model, at("model"));
  const type = model.type ?? (model.merges ? "BPE" : undefined);
  if (type !== "BPE" && type !== "Unigram" && type !== "WordPiece" && type !== "WordLevel") unsupported(at("model.type"), '"BPE", "Unigram", "WordPiece" or "WordLevel"', type);

  const tokens: string[] = [];
  const unigram = type === "Unigram" ? unigramModel(model, at, tokens) : undefined;
  const vocab = unigram ? undefined : obj(model.vocab, at("model.vocab"));
  if (vocab) for (const [token, id] of Object.entries(vocab)) tokens[int(id, at(`model.vocab[${JSON.stringify(token)}]`))] = token;
  const idOf = new Map<string, number>();
  tokens.forEach((t, id) => {
    if (!idOf.has(t)) idOf.set(t, id);
  });
  const added = parseAddedTokens(json.added_tokens, tokens, at);
  const pre = parsePreTokenizer(json.pre_tokenizer, at("pre_tokenizer"));
  const normalizer = parseNormalizer(json.normalizer, at("normalizer"));
  // HF keeps a normalized, non-special added token as its normalized content: that is what decodes.
  for (const t of added) if (t.normalized && !t.special) tokens[t.id] = normalizer.normalize(t.content, false);
  for (let i = 0; i < tokens.length; i++) tokens[i] ??= "";
  const specials: SpecialToken[] = added.map(({ id, special }) => ({ id, content: tokens[id], special }));

  const dec = parseDecoder(json.decoder, at("decoder"));
  const byteFallback = model.byte_fallback === true;
  const specialBytes = new Map(added.map((s) => [s.id, utf8(tokens[s.id])]));
  const bytes = tokens.map((token, id) => specialBytes.get(id) ?? tokenBytes(token, dec, byteFallback));

  const base = {
    tokens,
    bytes,
    normalizers: [],
    preTokenizers: [],
    specials,
    stripLeadingSpace: dec.stripLeadingSpace,
    template: parsePostProcessor(json.post_processor, at("post_processor"), idOf, specials),
    source: json,
    segment: hfSegmenter(added, normalizer, pre),
    // Unused: `encodeWord` (HF's BPE or Unigram) starts from the text itself.
    initial: { kind: "chars", charIds: new Map(), fuseUnk: false } satisfies InitialSymbols,
    decodeTokens: dec.decode,
  };
  const kind = pre.byteLevel || dec.byteLevel ? "byte-level" : "sentencepiece";
  if (unigram || type === "WordPiece" || type === "WordLevel") {
    const encodeWord = unigram ?? (type === "WordPiece" ? wordPiece(model, idOf, at) : wordLevel(model, idOf, at));
    const splitsBeforeSpace = cutsBeforeSpace(normalizer, pre, added, base.segment);
    return new Tokenizer({ ...base, kind, merges: new MergeTable(), ignoreMerges: false, splitsAfterNewline: false, splitsBeforeSpace, encodeWord });
  }
  if (model.dropout !== undefined && model.dropout !== null && model.dropout !== 0) unsupported(at("model.dropout"), "null or 0", model.dropout);
  const affix = (key: string) => (model[key] === undefined || model[key] === null ? "" : str(model[key], at(`model.${key}`)));
  const prefix = affix("continuing_subword_prefix");
  const suffix = affix("end_of_word_suffix");
  const merges = bpeMerges(model.merges, idOf, prefix, at);
  const unkToken = model.unk_token;
  const unk = typeof unkToken === "string" ? idOf.get(unkToken) : undefined;
  // Pieces end after "\n" + non-space where an isolating regex splits them, or nothing merges across
  // one; an added token with lstrip would take the "\n" before it, so a cut there is unsafe.
  const splitsAfterNewline = normalizer.streamSafe && pre.streamSafe && !added.some((t) => t.lstrip) && (pre.regex || !mergesSpanNewline(merges, bytes));
  const encodeWord = hfBpe({ idOf, merges, unk, fuseUnk: model.fuse_unk === true, byteFallback, prefix, suffix, ignoreMerges: model.ignore_merges === true });
  const splitsBeforeSpace = cutsBeforeSpace(normalizer, pre, added, base.segment);
  return new Tokenizer({ ...base, kind, merges, ignoreMerges: false, splitsAfterNewline, splitsBeforeSpace, encodeWord });
}

/**
 * Whether streamed text may be cut just before a space between ASCII letters or digits (every model
 * here encodes piece by piece, so a cut where every piece ends is exact): the
 * normalizer keeps such a cut (NormalizerInfo.spaceSafe), the pre-tokenizer's first step ends a
 * piece there and no later step prefixes pieces, and no added token can span or eat the space (none
 * holds whitespace, raw or normalized, and none strips whitespace to its right). Then each part
 * gives the pieces of the whole on its side. A few texts, checked through the real pipeline, guard
 * against a normalizer that drops or rewrites the space.
 */
function cutsBeforeSpace(normalizer: NormalizerInfo, pre: PreTokenizerInfo, added: readonly AddedToken[], segment: (text: string, continuation: boolean) => Segment[]): boolean {
  if (!normalizer.spaceSafe || !pre.splitsBeforeSpace || !pre.streamSafe) return false;
  if (added.some((t) => t.rstrip || /\s/u.test(t.content) || /\s/u.test(normalizer.normalize(t.content, false)))) return false;
  const pieces = (segments: Segment[]) => JSON.stringify(segments.flatMap((s): (number | string)[] => (typeof s === "number" ? [s] : s)));
  return [["ab", " cd"], ["x1", " 2y"], ["Ab", "  Cd"], ["Q", " r s"]].every(([a, b]) => pieces(segment(a + b, false)) === pieces([...segment(a, false), ...segment(b, true)]));
}

/** A Unigram model's `vocab` ([piece, score] pairs, id = index), filling `tokens`; returns its encoder. */
function unigramModel(model: Json, at: (path: string) => string, tokens: string[]): (piece: string) => number[] {
  const list = model.vocab;
  if (!Array.isArray(list)) fail(at("model.vocab"), "an array of [piece, score]", list);
  const pieces = list.map((entry: unknown, i) => {
    if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "number") return fail(at(`model.vocab[${i}]`), "[piece, score]", entry);
    tokens.push(entry[0]);
    return { piece: entry[0], score: entry[1] };
  });
  const unkId = model.unk_id === undefined || model.unk_id === null ? undefined : int(model.unk_id, at("model.unk_id"));
  // HF looks a fused run up by a map filled in id order, so the last of equal pieces wins.
  const idOf = new Map(pieces.map((p, id) => [p.piece, id]));
  let byteIds: Int32Array | undefined;
  if (model.byte_fallback === true) {
    byteIds = Int32Array.from({ length: 256 }, (_, b) => idOf.get(bytePiece(b)) ?? -1);
    // HF gives the unknown id where some byte has no piece.
    if (byteIds.includes(-1)) byteIds = undefined;
  }
  let minScore = Infinity;
  for (const p of pieces) minScore = Math.min(minScore, p.score);
  const unigram = new Unigram(pieces, { unkId, minScore: minScore === Infinity ? 0 : minScore });
  // HF fuses every run of unknown characters and of the unknown piece itself, then looks the run up
  // whole: a known piece, else its bytes (byte fallback), else the unknown id.
  return (piece) => {
    const out: number[] = [];
    let run: [number, number] | undefined;
    const flush = () => {
      if (!run) return;
      const text = piece.slice(run[0], run[1]);
      run = undefined;
      const id = idOf.get(text);
      if (id !== undefined) out.push(id);
      else if (byteIds) for (const b of utf8(text)) out.push(byteIds[b]);
      else out.push(unkId ?? fail(at("model.unk_id"), "an unknown id for text the vocabulary cannot spell", text));
    };
    for (const [start, end, id] of unigram.segment(piece)) {
      if (id < 0 || id === unkId) {
        run = run ? [run[0], end] : [start, end];
        continue;
      }
      flush();
      out.push(id);
    }
    flush();
    return out;
  };
}

/** The id of a model's `unk_token`; where the vocabulary lacks it, encoding text that needs it is an error, as in HF. */
function unknown(model: Json, idOf: Map<string, number>, at: (path: string) => string, fallback: string): () => number {
  const token = model.unk_token === undefined || model.unk_token === null ? fallback : str(model.unk_token, at("model.unk_token"));
  const id = idOf.get(token);
  return () => id ?? fail(at("model.unk_token"), "a token of model.vocab, for text the vocabulary cannot spell", token);
}

/**
 * HF's WordPiece: greedy longest match from the start of the piece, continuing pieces spelled with
 * `continuing_subword_prefix`; a piece with a part no token spells, or longer than
 * `max_input_chars_per_word` characters, is the unknown token whole.
 */
function wordPiece(model: Json, idOf: Map<string, number>, at: (path: string) => string): (piece: string) => number[] {
  const prefix = model.continuing_subword_prefix === undefined || model.continuing_subword_prefix === null ? "##" : str(model.continuing_subword_prefix, at("model.continuing_subword_prefix"));
  const maxChars = model.max_input_chars_per_word === undefined || model.max_input_chars_per_word === null ? 100 : int(model.max_input_chars_per_word, at("model.max_input_chars_per_word"));
  const unk = unknown(model, idOf, at, "[UNK]");
  return (piece) => {
    const chars = Array.from(piece);
    if (chars.length > maxChars) return [unk()];
    const out: number[] = [];
    for (let start = 0; start < chars.length; ) {
      let end = chars.length;
      let id: number | undefined;
      for (; end > start; end--) {
        const sub = chars.slice(start, end).join("");
        id = idOf.get(start > 0 ? prefix + sub : sub);
        if (id !== undefined) break;
      }
      if (id === undefined) return [unk()];
      out.push(id);
      start = end;
    }
    return out;
  };
}

/** HF's WordLevel: the piece's own token, else the unknown token. */
function wordLevel(model: Json, idOf: Map<string, number>, at: (path: string) => string): (piece: string) => number[] {
  const unk = unknown(model, idOf, at, "<unk>");
  return (piece) => [idOf.get(piece) ?? unk()];
}

/** The merges list; with a continuing-subword prefix, HF joins "a" + "##b" as "ab" (it cuts the prefix's length off b). */
function bpeMerges(list: unknown, idOf: Map<string, number>, prefix: string, at: (path: string) => string): MergeTable {
  const merges = new MergeTable();
  if (!Array.isArray(list)) fail(at("model.merges"), "an array", list);
  list.forEach((entry: unknown, i) => {
    const arg = at(`model.merges[${i}]`);
    const pair: readonly unknown[] = typeof entry === "string" ? splitMerge(entry, arg) : Array.isArray(entry) && entry.length === 2 ? entry : fail(arg, '"a b" or ["a", "b"]', entry);
    const [a, b] = pair;
    if (typeof a !== "string" || typeof b !== "string") fail(arg, "two tokens of model.vocab whose join is also in model.vocab", entry);
    const left = idOf.get(a);
    const right = idOf.get(b);
    const merged = idOf.get(`${a}${b.slice(prefix.length)}`);
    if (left === undefined || right === undefined || merged === undefined) fail(arg, "two tokens of model.vocab whose join is also in model.vocab", `${a} + ${b}`);
    merges.add(left, right, merged);
  });
  return merges;
}

function splitMerge(entry: string, arg: string): [string, string] {
  const space = entry.indexOf(" ", 1);
  if (space < 0) fail(arg, '"left right"', entry);
  return [entry.slice(0, space), entry.slice(space + 1)];
}

/** HF's added tokens; a token's `normalized` defaults to the opposite of `special`, as in `tokenizers`. */
function parseAddedTokens(value: unknown, tokens: string[], at: (path: string) => string): AddedToken[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) fail(at("added_tokens"), "an array", value);
  return value.map((entry, i) => {
    const t = obj(entry, at(`added_tokens[${i}]`));
    const id = int(t.id, at(`added_tokens[${i}].id`));
    const content = str(t.content, at(`added_tokens[${i}].content`));
    tokens[id] = content;
    const special = t.special !== false;
    const flag = (key: string, fallback: boolean) => (t[key] === undefined ? fallback : t[key] === true);
    return { id, content, special, lstrip: flag("lstrip", false), rstrip: flag("rstrip", false), singleWord: flag("single_word", false), normalized: flag("normalized", !special) };
  });
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
