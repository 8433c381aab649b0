/**
 * tiktoken rank files: one "base64-token rank" line per token, the rank being both the token id and
 * its merge priority. TNL3-15B ships one (`transnormer_100k.tiktoken`). The file holds no split
 * pattern and no special tokens, so both come from the caller.
 */
import { utf8 } from "./bytes.js";
import { fail, prose } from "./errors.js";
import { MergeTable } from "./merge.js";
import { CL100K_PATTERN, GPT2_PATTERN, O200K_PATTERN, regexSplit } from "./pretokenize.js";
import { Tokenizer } from "./tokenizer.js";

/** Split patterns of the published tiktoken encodings, by name. */
export const TIKTOKEN_PATTERNS: Readonly<Record<string, string>> = {
  gpt2: GPT2_PATTERN,
  r50k_base: GPT2_PATTERN,
  p50k_base: GPT2_PATTERN,
  cl100k_base: CL100K_PATTERN,
  o200k_base: O200K_PATTERN,
};

export interface TiktokenOptions {
  /** A name from TIKTOKEN_PATTERNS or a regex source (Rust/Python syntax is translated). Default "cl100k_base". */
  pattern?: string;
  /** Special tokens and their ids, e.g. { "<|endoftext|>": 100257 }. */
  specialTokens?: Record<string, number>;
}

/** Parses the rank file into token bytes by rank. */
export function parseTiktokenRanks(text: string): Uint8Array[] {
  const ranks: Uint8Array[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line.length === 0) continue;
    const fields = line.split(" ");
    const rank = Number(fields[1]);
    if (fields.length !== 2 || !Number.isInteger(rank) || rank < 0) fail(`tiktoken file line ${i + 1}`, '"<base64 token> <rank>"', line);
    let binary: string;
    try {
      binary = atob(fields[0]);
    } catch {
      return fail(`tiktoken file line ${i + 1}`, "a base64 token", fields[0]);
    }
    if (ranks[rank]) fail(`tiktoken file line ${i + 1}`, "each rank once", prose(`rank ${rank} again`));
    ranks[rank] = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }
  if (ranks.length === 0) fail("tiktoken file", "at least one rank line", prose("none"));
  return ranks;
}

/**
 * Builds a tokenizer from a tiktoken rank file's text.
 *
 * @example
 * const tok = loadTiktoken(readFileSync("cl100k_base.tiktoken", "utf8"), { pattern: "cl100k_base", specialTokens: { "<|endoftext|>": 100257 } });
 * tok.encode("hello world"); // [15339, 1917]
 */
export function loadTiktoken(text: string, options: TiktokenOptions = {}): Tokenizer {
  const ranked = parseTiktokenRanks(text);
  const pattern = TIKTOKEN_PATTERNS[options.pattern ?? "cl100k_base"] ?? options.pattern!;
  // Byte strings as Latin-1 JS strings (one char per byte) make cheap map keys and cheap slices.
  const keys = ranked.map((b) => (b ? String.fromCharCode(...b) : ""));
  const rankOf = new Map<string, number>();
  keys.forEach((k, rank) => ranked[rank] && rankOf.set(k, rank));

  // tiktoken merges the adjacent pair whose joined bytes have the lowest rank; listing every split of
  // every token in rank order gives exactly that table.
  const merges = new MergeTable();
  keys.forEach((k, rank) => {
    for (let i = 1; i < k.length; i++) {
      const left = rankOf.get(k.slice(0, i));
      const right = rankOf.get(k.slice(i));
      if (left !== undefined && right !== undefined) merges.add(left, right, rank);
    }
  });

  const bytes: Uint8Array[] = Array.from(ranked, (b) => b ?? new Uint8Array());
  const tokens = keys.map((k) => btoa(k));
  const specials = Object.entries(options.specialTokens ?? {}).map(([content, id]) => {
    if (!Number.isInteger(id) || id < 0) fail(`specialTokens[${JSON.stringify(content)}]`, "a non-negative integer id", id);
    if (id < ranked.length && ranked[id]) fail(`specialTokens[${JSON.stringify(content)}]`, "an id no rank uses", id);
    for (let i = bytes.length; i < id; i++) {
      bytes[i] = new Uint8Array();
      tokens[i] = "";
    }
    bytes[id] = utf8(content);
    tokens[id] = content;
    return { content, id, special: true };
  });
  const byteIds = Int32Array.from({ length: 256 }, (_, b) => rankOf.get(String.fromCharCode(b)) ?? -1);
  return new Tokenizer({
    kind: "tiktoken",
    tokens,
    bytes,
    merges,
    initial: { kind: "bytes", byteIds },
    normalizers: [],
    preTokenizers: [regexSplit(pattern)],
    specials,
    ignoreMerges: true,
    stripLeadingSpace: false,
    template: { prefix: [], suffix: [] },
    splitsAfterNewline: true,
    pattern,
  });
}
