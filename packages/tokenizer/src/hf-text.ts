/**
 * The text side of a Hugging Face tokenizer.json, as `tokenizers` runs it: added tokens are cut out
 * of the raw text (lstrip, rstrip, single_word), each remaining segment is normalized, normalized
 * added tokens are cut out of that, and the pre-tokenizer splits what is left into the pieces the
 * model sees. Offsets are not tracked, so a few choices that HF makes from original offsets are
 * approximated (Metaspace "first" asks only whether the piece starts the input's first segment).
 */
import { byteLevelString, utf8 } from "./bytes.js";
import { fail } from "./errors.js";
import { compilePattern, escapeRegExp, GPT2_PATTERN } from "./pretokenize.js";
import { PrecompiledCharsmap } from "./sentencepiece-normalizer.js";

type Json = Record<string, unknown>;

/** Text of one segment → normalized text; `continuation` marks the middle of a streamed input (nothing is prepended there). */
export type HfNormalizer = (text: string, continuation: boolean) => string;
/**
 * Pieces → smaller pieces. `first` says that `pieces[0]` starts the input, `continuation` that it
 * continues a streamed input (so no prefix is put in front of it).
 */
export type HfPreTokenizer = (pieces: string[], first: boolean, continuation: boolean) => string[];

export const unsupported = (arg: string, what: string, got: unknown): never => fail(arg, `${what} (other settings are not supported)`, got);

function obj(value: unknown, arg: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(arg, "an object", value);
  return value as Json;
}

function list(value: unknown, arg: string): unknown[] {
  if (!Array.isArray(value)) fail(arg, "an array", value);
  return value;
}

function str(value: unknown, arg: string): string {
  if (typeof value !== "string") fail(arg, "a string", value);
  return value;
}

/** `{"String": s}` or `{"Regex": r}`, as a global RegExp (a string matches literally). */
export function parsePattern(value: unknown, arg: string): RegExp {
  const p = obj(value, arg);
  if (typeof p.String === "string") return new RegExp(escapeRegExp(p.String), "gu");
  if (typeof p.Regex === "string") return compilePattern(unicodeClasses(p.Regex));
  return fail(arg, '{"String": …} or {"Regex": …}', value);
}

// Oniguruma's \s, \d and \w are Unicode classes (JavaScript's \s misses U+0085 and has U+FEFF).
const WORD_ONIG = String.raw`\p{L}\p{M}\p{Nd}\p{Pc}`;
const ATOM: Record<string, string> = { s: String.raw`\p{White_Space}`, S: String.raw`\P{White_Space}`, d: String.raw`\p{Nd}`, D: String.raw`\P{Nd}`, w: `[${WORD_ONIG}]`, W: `[^${WORD_ONIG}]` };
const IN_CLASS: Record<string, string> = { s: String.raw`\p{White_Space}`, S: String.raw`\P{White_Space}`, d: String.raw`\p{Nd}`, D: String.raw`\P{Nd}`, w: WORD_ONIG };

/** Rewrites \s, \d, \w (and their negations) of an Oniguruma pattern as the Unicode classes they stand for. */
export function unicodeClasses(pattern: string): string {
  let out = "";
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const next = pattern[i + 1] ?? "";
      out += (inClass ? IN_CLASS[next] : ATOM[next]) ?? c + next;
      i++;
      continue;
    }
    if (c === "[") inClass = true;
    else if (c === "]") inClass = false;
    out += c;
  }
  return out;
}

// Rust's char::is_whitespace and the regex crate's \w (single_word looks for \w on either side).
const WHITESPACE = /\p{White_Space}/u;
const WORD = String.raw`\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}`;
const WORD_CHAR = new RegExp(`[${WORD}]`, "u");

export type SplitBehavior = "Removed" | "Isolated" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";
const BEHAVIORS: readonly SplitBehavior[] = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"];

/**
 * HF's `NormalizedString::split`: the text cut into matches of `re` and the spans between them (with
 * `invert`, the spans are what counts as matches), then grouped by `behavior`. Empty pieces are dropped.
 */
export function splitBy(text: string, re: RegExp, behavior: SplitBehavior, invert = false): string[] {
  if (text.length === 0) return [];
  const spans: [number, number, boolean][] = [];
  let prev = 0;
  for (const m of text.matchAll(re)) {
    if (m[0].length === 0) continue;
    if (m.index > prev) spans.push([prev, m.index, invert]);
    spans.push([m.index, m.index + m[0].length, !invert]);
    prev = m.index + m[0].length;
  }
  if (prev < text.length) spans.push([prev, text.length, invert]);
  let kept: [number, number][] = [];
  let previousMatch = false;
  switch (behavior) {
    case "Removed":
      kept = spans.filter((s) => !s[2]).map(([a, b]) => [a, b]);
      break;
    case "Isolated":
      kept = spans.map(([a, b]) => [a, b]);
      break;
    case "MergedWithPrevious":
      for (const [a, b, match] of spans) {
        if (match && !previousMatch && kept.length > 0) kept[kept.length - 1][1] = b;
        else kept.push([a, b]);
        previousMatch = match;
      }
      break;
    case "MergedWithNext":
      for (let i = spans.length - 1; i >= 0; i--) {
        const [a, b, match] = spans[i];
        if (match && !previousMatch && kept.length > 0) kept[kept.length - 1][0] = a;
        else kept.push([a, b]);
        previousMatch = match;
      }
      kept.reverse();
      break;
    case "Contiguous":
      for (const [a, b, match] of spans) {
        if (match === previousMatch && kept.length > 0) kept[kept.length - 1][1] = b;
        else kept.push([a, b]);
        previousMatch = match;
      }
      break;
  }
  return kept.filter(([a, b]) => b > a).map(([a, b]) => text.slice(a, b));
}

const splitter =
  (re: RegExp, behavior: SplitBehavior, invert = false): HfPreTokenizer =>
  (pieces) =>
    pieces.flatMap((p) => splitBy(p, re, behavior, invert));

export interface NormalizerInfo {
  normalize: HfNormalizer;
  /** False where a step looks across a line break (Strip, Replace), so streamed input cannot be cut at one. */
  streamSafe: boolean;
  /**
   * Text cut just before a space that follows an ASCII letter or digit normalizes, in two parts
   * (the second as a continuation), to the normalization of the whole: every step works per
   * character, per grapheme cluster (the cut is a cluster boundary) or per canonical composition
   * (a space composes with nothing). Strip and Replace of a longer or regex pattern are not.
   */
  spaceSafe: boolean;
}

export function parseNormalizer(value: unknown, arg: string): NormalizerInfo {
  if (value === undefined || value === null) return { normalize: (t) => t, streamSafe: true, spaceSafe: true };
  const n = obj(value, arg);
  const plain = (normalize: HfNormalizer, streamSafe = true, spaceSafe = true): NormalizerInfo => ({ normalize, streamSafe, spaceSafe });
  switch (n.type) {
    case "Sequence": {
      const steps = list(n.normalizers, `${arg}.normalizers`).map((m, i) => parseNormalizer(m, `${arg}.normalizers[${i}]`));
      return plain(
        (text, continuation) => steps.reduce((t, s) => s.normalize(t, continuation), text),
        steps.every((s) => s.streamSafe),
        steps.every((s) => s.spaceSafe),
      );
    }
    case "Prepend": {
      const prefix = str(n.prepend, `${arg}.prepend`);
      return plain((text, continuation) => (text.length > 0 && !continuation ? prefix + text : text));
    }
    case "Replace": {
      const re = parsePattern(n.pattern, `${arg}.pattern`);
      const content = str(n.content, `${arg}.content`);
      // A function replacement keeps "$1" in the content literal, as HF does. A literal without a
      // line break cannot match across a cut made just after one.
      const literal = obj(n.pattern, `${arg}.pattern`).String;
      return plain(
        (text) => text.replace(re, () => content),
        typeof literal === "string" && !/[\r\n]/.test(literal),
        // One character cannot match across a cut.
        typeof literal === "string" && Array.from(literal).length === 1,
      );
    }
    case "Strip": {
      const left = n.strip_left !== false;
      const right = n.strip_right !== false;
      return plain((text) => {
        let a = 0;
        let b = text.length;
        // Every White_Space character is in the BMP, so code units will do.
        if (left) while (a < b && WHITESPACE.test(text[a])) a++;
        if (right) while (b > a && WHITESPACE.test(text[b - 1])) b--;
        return text.slice(a, b);
      }, false, false);
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = n.type;
      return plain((text) => text.normalize(form));
    }
    case "Lowercase":
      // Rust lowercases character by character: no final-sigma rule.
      return plain((text) => (text.includes("Σ") ? Array.from(text, (c) => c.toLowerCase()).join("") : text.toLowerCase()));
    case "StripAccents":
      return plain((text) => text.replace(/\p{M}/gu, ""));
    case "ByteLevel":
      return plain((text) => byteLevelString(utf8(text)));
    case "Precompiled":
      return plain(precompiled(n.precompiled_charsmap, `${arg}.precompiled_charsmap`));
    case "BertNormalizer":
      return plain(bertNormalizer(n));
    default:
      return unsupported(`${arg}.type`, "Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, ByteLevel, Precompiled or BertNormalizer", n.type);
  }
}

const utf8Text = new TextDecoder("utf-8", { ignoreBOM: true });
const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });

/**
 * HF's `Precompiled` normalizer: a SentencePiece charsmap (base64) applied as `tokenizers` applies
 * it, not as SentencePiece does. Each extended grapheme cluster under 6 UTF-8 bytes is looked up
 * whole; otherwise, or where nothing matches, each of its characters is looked up alone. A lookup
 * takes the shortest key that prefixes the text, so a cluster whose first character has a rule is
 * replaced whole by that rule (the marks after it are dropped), as `tokenizers` does.
 */
function precompiled(value: unknown, arg: string): HfNormalizer {
  let binary: string;
  try {
    binary = atob(str(value, arg));
  } catch {
    return fail(arg, "a base64 charsmap", value);
  }
  const blob = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  const map = new PrecompiledCharsmap(blob, arg);
  const lookup = (s: string): string | undefined => {
    const r = map.shortest(utf8(s));
    return r ? utf8Text.decode(r) : undefined;
  };
  // Texts repeat their clusters: each is worked out once.
  const cache = new Map<string, string>();
  const cluster = (g: string): string => {
    let out = utf8(g).length < 6 ? lookup(g) : undefined;
    if (out === undefined) {
      out = "";
      for (const c of g) out += lookup(c) ?? c;
    }
    if (cache.size < 100_000) cache.set(g, out);
    return out;
  };
  return (text) => {
    let out = "";
    for (const { segment } of graphemes.segment(text)) out += cache.get(segment) ?? cluster(segment);
    return out;
  };
}

// BERT's CJK ideograph blocks, which handle_chinese_chars puts spaces around.
const CJK = /[\u{4E00}-\u{9FFF}\u{3400}-\u{4DBF}\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B920}-\u{2CEAF}\u{F900}-\u{FAFF}\u{2F800}-\u{2FA1F}]/gu;
// HF's is_control: the Other categories (Cc, Cf, Cs, Co, Cn) but tab, line feed and carriage return.
const CONTROL = /[^\t\n\r\P{C}]|[\0\uFFFD]/gu;

/**
 * HF's `BertNormalizer`: clean_text (drops NUL, U+FFFD and control characters, writes every
 * whitespace character as a space), handle_chinese_chars, strip_accents (NFD, then no nonspacing
 * marks; unset follows lowercase), lowercase (per character, as Rust does).
 */
function bertNormalizer(n: Json): HfNormalizer {
  const cleanText = n.clean_text !== false;
  const chinese = n.handle_chinese_chars !== false;
  const lowercase = n.lowercase !== false;
  const stripAccents = n.strip_accents === undefined || n.strip_accents === null ? lowercase : n.strip_accents === true;
  return (text) => {
    let t = text;
    if (cleanText) t = t.replace(CONTROL, "").replace(/\p{White_Space}/gu, " ");
    if (chinese) t = t.replace(CJK, " $& ");
    if (stripAccents) t = t.normalize("NFD").replace(/\p{Mn}/gu, "");
    if (lowercase) t = Array.from(t, (c) => c.toLowerCase()).join("");
    return t;
  };
}

export interface PreTokenizerInfo {
  preTokenize: HfPreTokenizer;
  /** A ByteLevel step is in the chain, so pieces come out spelled in GPT-2's byte characters. */
  byteLevel: boolean;
  /** GPT-2's split regex (ByteLevel) is in the chain, so pieces end after "\n" + non-space. */
  regex: boolean;
  /** A step puts a prefix in front of every piece (ByteLevel add_prefix_space, Metaspace "always"). */
  prefixesPieces: boolean;
  /** Pieces depend only on the text around them: a prefixing step after one that splits makes them depend on where a cut falls. */
  streamSafe: boolean;
  /** The first step ends a piece before every space that follows an ASCII letter or digit, whatever comes after it. */
  splitsBeforeSpace: boolean;
}

const GPT2_RE = compilePattern(unicodeClasses(GPT2_PATTERN));
// Rust's char::is_ascii_punctuation or a Unicode punctuation category.
const PUNCTUATION = /[\p{P}!-/:-@[-`{-~]/gu;

export function parsePreTokenizer(value: unknown, arg: string): PreTokenizerInfo {
  const info = (preTokenize: HfPreTokenizer, byteLevel = false, regex = false, prefixesPieces = false, splitsBeforeSpace = false): PreTokenizerInfo => ({
    preTokenize,
    byteLevel,
    regex,
    prefixesPieces,
    streamSafe: true,
    splitsBeforeSpace,
  });
  if (value === undefined || value === null) return info((pieces) => pieces);
  const p = obj(value, arg);
  switch (p.type) {
    case "Sequence": {
      const steps = list(p.pretokenizers, `${arg}.pretokenizers`).map((item, i) => parsePreTokenizer(item, `${arg}.pretokenizers[${i}]`));
      const sequence = info(
        (pieces, first, continuation) => steps.reduce((ps, s) => s.preTokenize(ps, first, continuation), pieces),
        steps.some((s) => s.byteLevel),
        steps.some((s) => s.regex),
        steps.some((s) => s.prefixesPieces),
      );
      sequence.streamSafe = steps.every((s, i) => s.streamSafe && (i === 0 || !s.prefixesPieces));
      // Later steps work piece by piece, so a boundary the first one makes stays.
      sequence.splitsBeforeSpace = steps.length > 0 && steps[0].splitsBeforeSpace;
      return sequence;
    }
    case "ByteLevel": {
      const addPrefixSpace = p.add_prefix_space === true;
      const useRegex = p.use_regex !== false;
      return info(
        (pieces, _first, continuation) =>
          pieces.flatMap((piece, i) => {
            const s = addPrefixSpace && piece.length > 0 && !piece.startsWith(" ") && !(i === 0 && continuation) ? ` ${piece}` : piece;
            return (useRegex ? splitBy(s, GPT2_RE, "Isolated") : [s]).map((part) => byteLevelString(utf8(part)));
          }),
        true,
        useRegex,
        addPrefixSpace,
        // GPT-2's pattern ends a letter, digit or contraction run before a space.
        useRegex,
      );
    }
    case "Split": {
      const behavior = BEHAVIORS.find((b) => b === p.behavior) ?? unsupported(`${arg}.behavior`, BEHAVIORS.join(", "), p.behavior);
      const re = parsePattern(p.pattern, `${arg}.pattern`);
      const invert = p.invert === true;
      return info(splitter(re, behavior, invert));
    }
    case "Metaspace": {
      const replacement = str(p.replacement ?? "▁", `${arg}.replacement`);
      const scheme = p.prepend_scheme ?? (p.add_prefix_space === false ? "never" : "always");
      if (scheme !== "always" && scheme !== "first" && scheme !== "never") unsupported(`${arg}.prepend_scheme`, '"always", "first" or "never"', scheme);
      const split = p.split !== false;
      const re = new RegExp(escapeRegExp(replacement), "gu");
      const metaspace = info((pieces, first, continuation) =>
        pieces.flatMap((piece, i) => {
          let s = piece.replaceAll(" ", replacement);
          const head = i === 0;
          const prepend = scheme === "always" ? !(head && continuation) : scheme === "first" && head && first;
          if (prepend && s.length > 0 && !s.startsWith(replacement)) s = replacement + s;
          return split ? splitBy(s, re, "MergedWithNext") : s.length > 0 ? [s] : [];
        }),
      );
      metaspace.prefixesPieces = scheme === "always";
      metaspace.splitsBeforeSpace = split;
      return metaspace;
    }
    case "Whitespace":
      return info(splitter(new RegExp(`[${WORD}]+|[^${WORD}\\p{White_Space}]+`, "gu"), "Removed", true), false, false, false, true);
    case "WhitespaceSplit":
      return info(splitter(/\p{White_Space}/gu, "Removed"), false, false, false, true);
    case "Punctuation": {
      const behavior = BEHAVIORS.find((b) => b === (p.behavior ?? "Isolated")) ?? unsupported(`${arg}.behavior`, BEHAVIORS.join(", "), p.behavior);
      return info(splitter(PUNCTUATION, behavior));
    }
    case "Digits":
      return info(splitter(/\p{N}/gu, p.individual_digits === true ? "Isolated" : "Contiguous"));
    case "CharDelimiterSplit": {
      const delimiter = str(p.delimiter, `${arg}.delimiter`);
      return info(splitter(new RegExp(escapeRegExp(delimiter), "gu"), "Removed"), false, false, false, delimiter === " ");
    }
    case "BertPreTokenizer": {
      const ws = splitter(/\p{White_Space}/gu, "Removed");
      const punct = splitter(PUNCTUATION, "Isolated");
      return info((pieces, first, continuation) => punct(ws(pieces, first, continuation), first, continuation), false, false, false, true);
    }
    default:
      return unsupported(`${arg}.type`, "Sequence, ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit, Punctuation, Digits, CharDelimiterSplit or BertPreTokenizer", p.type);
  }
}

export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
  normalized: boolean;
}

/** Finds added tokens leftmost-longest, as HF's Aho-Corasick matcher does. */
class AddedMatcher {
  private readonly re: RegExp | undefined;
  private readonly byContent = new Map<string, AddedToken>();

  constructor(tokens: readonly { token: AddedToken; pattern: string }[]) {
    for (const { token, pattern } of tokens) if (pattern.length > 0 && !this.byContent.has(pattern)) this.byContent.set(pattern, token);
    const patterns = [...this.byContent.keys()].sort((a, b) => b.length - a.length);
    this.re = patterns.length > 0 ? new RegExp(patterns.map(escapeRegExp).join("|"), "gu") : undefined;
  }

  /** The text cut into added-token ids and the plain text between them, with each plain span's start. */
  split(text: string): (number | [string, number])[] {
    if (!this.re) return [[text, 0]];
    const out: (number | [string, number])[] = [];
    let at = 0;
    for (const m of text.matchAll(this.re)) {
      const t = this.byContent.get(m[0])!;
      let start = m.index;
      let stop = start + m[0].length;
      if (t.singleWord && ((start > 0 && WORD_CHAR.test(lastChar(text, start))) || (stop < text.length && WORD_CHAR.test(String.fromCodePoint(text.codePointAt(stop)!))))) continue;
      if (t.lstrip) {
        while (start > at && WHITESPACE.test(text[start - 1])) start--;
      }
      if (t.rstrip) {
        while (stop < text.length && WHITESPACE.test(text[stop])) stop++;
      }
      if (start > at) out.push([text.slice(at, start), at]);
      out.push(t.id);
      at = stop;
    }
    if (at < text.length || at === 0) out.push([text.slice(at), at]);
    return out;
  }
}

function lastChar(text: string, end: number): string {
  const low = text.charCodeAt(end - 1);
  return low >= 0xdc00 && low <= 0xdfff && end >= 2 ? text.slice(end - 2, end) : text[end - 1];
}

/** One encoded segment: an added token's id, or the pieces the model is to encode. */
export type Segment = number | string[];

/**
 * HF's encode up to the model: added tokens, then the normalizer, then normalized added tokens,
 * then the pre-tokenizer.
 */
export function hfSegmenter(added: readonly AddedToken[], normalizer: NormalizerInfo, pre: PreTokenizerInfo): (text: string, continuation: boolean) => Segment[] {
  const raw = new AddedMatcher(added.filter((t) => !t.normalized).map((token) => ({ token, pattern: token.content })));
  // HF normalizes the content of a normalized added token before looking for it in normalized text.
  const normalized = new AddedMatcher(added.filter((t) => t.normalized).map((token) => ({ token, pattern: normalizer.normalize(token.content, false) })));
  return (text, continuation) => {
    const out: Segment[] = [];
    for (const seg of raw.split(text)) {
      if (typeof seg === "number") {
        out.push(seg);
        continue;
      }
      const [rawText, rawStart] = seg;
      const cont = continuation && rawStart === 0;
      for (const inner of normalized.split(normalizer.normalize(rawText, cont))) {
        if (typeof inner === "number") {
          out.push(inner);
          continue;
        }
        const [piece, start] = inner;
        out.push(pre.preTokenize([piece], rawStart === 0 && start === 0 && !continuation, cont && start === 0).filter((p) => p.length > 0));
      }
    }
    return out;
  };
}
