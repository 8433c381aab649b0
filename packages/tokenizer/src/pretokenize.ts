/**
 * Normalizers and pre-tokenizers: the text steps before BPE. Each step sees one segment of input
 * (the text between special tokens) and where it stands: at the start of the input, right after a
 * special token, or continuing a streamed input. SentencePiece-style models decide by it where
 * their dummy "▁" prefix goes.
 */
import { fail } from "./errors.js";

export type Position = "start" | "afterSpecial" | "continuation";
export type Normalizer = (text: string, at: Position) => string;
export type PreTokenizer = (pieces: string[], at: Position) => string[];

/** GPT-2's split (also r50k/p50k): contractions, letters, numbers, other symbols, whitespace. */
export const GPT2_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
/** cl100k_base, as published by tiktoken (possessive quantifiers and `(?i:)` are translated below). */
export const CL100K_PATTERN = String.raw`'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`;
/** o200k_base, as published by tiktoken. */
export const O200K_PATTERN = [
  String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
  String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
  String.raw`\p{N}{1,3}`,
  String.raw` ?[^\s\p{L}\p{N}]+[\r\n/]*`,
  String.raw`\s*[\r\n]+`,
  String.raw`\s+(?!\S)`,
  String.raw`\s+`,
].join("|");

/**
 * Compiles a split pattern written for Rust/Python regex engines into a JavaScript RegExp.
 * `(?i:…)` groups become explicit case alternatives ([sS]) because Node 20 lacks inline modifiers,
 * and possessive quantifiers (`++`, `?+`, `*+`) lose their `+`: in the tokenizer patterns above no
 * alternative can succeed by backtracking into them, so the matches are the same.
 */
export function compilePattern(pattern: string): RegExp {
  let out = "";
  let inClass = false;
  let caseless = 0; // paren depth at which the current (?i: group opened, 0 when none
  let depth = 0;
  let afterQuantifier = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const m = /^\\[pP]\{[^}]*\}/.exec(pattern.slice(i));
      const esc = m ? m[0] : pattern.slice(i, i + 2);
      // \z (end of text, as Oniguruma and Rust write it) is what `$` means in a JavaScript regex without the m flag.
      out += esc === "\\z" ? "$" : esc;
      i += esc.length - 1;
      afterQuantifier = false;
      continue;
    }
    if (inClass) {
      if (c === "]") inClass = false;
      out += caseless && /[a-z]/i.test(c) ? c.toLowerCase() + c.toUpperCase() : c;
      continue;
    }
    if (c === "+" && afterQuantifier) {
      afterQuantifier = false;
      continue;
    }
    if (pattern.startsWith("(?i:", i)) {
      if (caseless) fail("pattern", "no nested (?i:) groups", pattern);
      depth++;
      caseless = depth;
      out += "(?:";
      i += 3;
      afterQuantifier = false;
      continue;
    }
    if (c === "(") depth++;
    if (c === ")") {
      if (depth === caseless) caseless = 0;
      depth--;
    }
    if (c === "[") inClass = true;
    afterQuantifier = c === "+" || c === "*" || c === "?" || c === "}";
    // A `?` right after `(` or another quantifier is syntax, not a quantifier that could be possessive.
    if (c === "?" && (pattern[i - 1] === "(" || /[+*?}]/.test(pattern[i - 1] ?? ""))) afterQuantifier = false;
    out += caseless && /[a-z]/i.test(c) ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c;
  }
  try {
    return new RegExp(out, "gu");
  } catch (e) {
    return fail("pattern", "a regular expression JavaScript can run", `${pattern} (${(e as Error).message})`);
  }
}

/** Splits each piece at the pattern's matches, keeping matches and the text between them. */
export function regexSplit(pattern: string | RegExp, behavior: "isolated" | "removed" = "isolated"): PreTokenizer {
  const re = typeof pattern === "string" ? compilePattern(pattern) : pattern;
  return (pieces) => {
    const out: string[] = [];
    for (const piece of pieces) {
      let at = 0;
      for (const m of piece.matchAll(re)) {
        if (m[0].length === 0) continue;
        if (m.index > at) out.push(piece.slice(at, m.index));
        if (behavior === "isolated") out.push(m[0]);
        at = m.index + m[0].length;
      }
      if (at < piece.length) out.push(piece.slice(at));
    }
    return out;
  };
}

export type PrependScheme = "always" | "first" | "never";

/** SentencePiece's whitespace handling: spaces become "▁", and a "▁" is put in front of the text. */
export function metaspace(replacement: string, scheme: PrependScheme): Normalizer {
  return (text, at) => {
    const replaced = text.replaceAll(" ", replacement);
    const prepend = scheme === "always" ? at !== "continuation" : scheme === "first" && at === "start";
    return prepend && replaced.length > 0 && !replaced.startsWith(replacement) ? replacement + replaced : replaced;
  };
}

/** HF Metaspace with `split: true`: words start at each replacement char (kept with the word after it). */
export function splitBefore(char: string): PreTokenizer {
  return (pieces) => pieces.flatMap((p) => p.split(new RegExp(`(?=${escapeRegExp(char)})`, "u")).filter((s) => s.length > 0));
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function replace(pattern: string, content: string): Normalizer {
  return (text) => text.replaceAll(pattern, content);
}

/** Prepends `prefix` to every segment (HF Prepend), or only to the one that starts the input. */
export function prepend(prefix: string, onlyAtStart = false): Normalizer {
  return (text, at) => (text.length > 0 && (onlyAtStart ? at === "start" : at !== "continuation") ? prefix + text : text);
}

/** SentencePiece's `remove_extra_whitespaces`: trims the text and collapses runs of spaces. */
export const collapseSpaces: Normalizer = (text) => text.replace(/ {2,}/g, " ").replace(/^ | $/g, "");
