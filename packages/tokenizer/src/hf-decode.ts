/**
 * Hugging Face decoders: a chain of steps over token strings, joined at the end, exactly as
 * `tokenizers` runs them (ByteLevel joins bytes, Metaspace drops the prefix of the first token, Strip
 * cuts characters from every token, Fuse joins). `decode` uses the chain; the per-token bytes that
 * streaming decoding needs are derived from the same settings (`tokenBytes`).
 */
import { byteLevelBytes, concatBytes, parseBytePiece, utf8 } from "./bytes.js";
import { fail } from "./errors.js";
import { parsePattern, unsupported } from "./hf-text.js";

type Json = Record<string, unknown>;
type Step = (tokens: string[]) => string[];

export interface DecoderInfo {
  /** Token strings → text; HF joins tokens with spaces when a file has no decoder. */
  decode: (tokens: string[]) => string;
  byteLevel: boolean;
  /** The character that decodes to a space ("▁"), if the decoder replaces one. */
  spaceFrom?: string;
  /** The decoder drops the space the first token starts with. */
  stripLeadingSpace: boolean;
}

const lossy = new TextDecoder("utf-8", { ignoreBOM: true });

export function parseDecoder(value: unknown, arg: string): DecoderInfo {
  const info: DecoderInfo = { decode: (tokens) => tokens.join(" "), byteLevel: false, stripLeadingSpace: false };
  if (value === undefined || value === null) return info;
  const step = parseStep(value, arg, info);
  info.decode = (tokens) => step(tokens).join("");
  return info;
}

function parseStep(value: unknown, arg: string, info: DecoderInfo): Step {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(arg, "an object", value);
  const d = value as Json;
  switch (d.type) {
    case "Sequence": {
      if (!Array.isArray(d.decoders)) fail(`${arg}.decoders`, "an array", d.decoders);
      const steps = d.decoders.map((item, i) => parseStep(item, `${arg}.decoders[${i}]`, info));
      return (tokens) => steps.reduce((t, s) => s(t), tokens);
    }
    case "ByteLevel":
      info.byteLevel = true;
      // A token whose characters are not all byte stand-ins (an added token) is taken as UTF-8 text.
      return (tokens) => [lossy.decode(concatBytes(tokens.map((t) => byteLevelBytes(t) ?? utf8(t))))];
    case "Metaspace": {
      const replacement = stringField(d.replacement ?? "▁", `${arg}.replacement`);
      const scheme = d.prepend_scheme ?? (d.add_prefix_space === false ? "never" : "always");
      info.spaceFrom = replacement;
      info.stripLeadingSpace = scheme !== "never";
      // HF drops every replacement character of the first token, not only the leading one.
      return (tokens) => tokens.map((t, i) => t.replaceAll(replacement, i === 0 && scheme !== "never" ? "" : " "));
    }
    case "Replace": {
      const re = parsePattern(d.pattern, `${arg}.pattern`);
      const content = stringField(d.content, `${arg}.content`);
      const p = d.pattern as Json;
      if (content === " " && typeof p.String === "string") info.spaceFrom = p.String;
      return (tokens) => tokens.map((t) => t.replace(re, () => content));
    }
    case "ByteFallback":
      return byteFallback;
    case "Fuse":
      return (tokens) => [tokens.join("")];
    case "Strip": {
      const content = stringField(d.content, `${arg}.content`);
      const start = count(d.start, `${arg}.start`);
      const stop = count(d.stop, `${arg}.stop`);
      if (content === " " && start > 0) info.stripLeadingSpace = true;
      return (tokens) => tokens.map((t) => strip(t, content, start, stop));
    }
    case "BPEDecoder": {
      // The end-of-word suffix becomes a space, except on the last token.
      const suffix = stringField(d.suffix ?? "</w>", `${arg}.suffix`);
      return (tokens) => tokens.map((t, i) => t.replaceAll(suffix, i === tokens.length - 1 ? "" : " "));
    }
    case "WordPiece": {
      const prefix = stringField(d.prefix ?? "##", `${arg}.prefix`);
      const cleanup = d.cleanup !== false;
      return (tokens) =>
        tokens.map((t, i) => {
          const joined = i === 0 ? t : t.startsWith(prefix) ? t.replace(prefix, "") : ` ${t}`;
          return cleanup ? cleanUp(joined) : joined;
        });
    }
    default:
      return unsupported(`${arg}.type`, "Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder or WordPiece", d.type);
  }
}

/** WordPiece's clean-up of spaces before punctuation and English contractions, in HF's order. */
function cleanUp(text: string): string {
  const rules: [string, string][] = [
    [" .", "."],
    [" ?", "?"],
    [" !", "!"],
    [" ,", ","],
    [" ' ", "'"],
    [" n't", "n't"],
    [" 'm", "'m"],
    [" do not", " don't"],
    [" 's", "'s"],
    [" 've", "'ve"],
    [" 're", "'re"],
  ];
  return rules.reduce((t, [from, to]) => t.replaceAll(from, to), text);
}

function stringField(value: unknown, arg: string): string {
  if (typeof value !== "string") fail(arg, "a string", value);
  return value;
}

function count(value: unknown, arg: string): number {
  if (!Number.isInteger(value) || (value as number) < 0) fail(arg, "a non-negative integer", value);
  return value as number;
}

/** Runs of "<0xNN>" tokens become their text, or one U+FFFD per byte when they are not valid UTF-8. */
function byteFallback(tokens: string[]): string[] {
  const out: string[] = [];
  let bytes: number[] = [];
  const flush = () => {
    if (bytes.length === 0) return;
    try {
      out.push(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(Uint8Array.from(bytes)));
    } catch {
      out.push(...bytes.map(() => "\uFFFD"));
    }
    bytes = [];
  };
  for (const t of tokens) {
    const byte = t.length === 6 ? parseBytePiece(t) : undefined;
    if (byte !== undefined) {
      bytes.push(byte);
      continue;
    }
    flush();
    out.push(t);
  }
  flush();
  return out;
}

/** Cuts up to `start` leading and `stop` trailing copies of `content` (one character) from a token. */
function strip(token: string, content: string, start: number, stop: number): string {
  const chars = Array.from(token);
  let a = 0;
  while (a < start && a < chars.length && chars[a] === content) a++;
  let b = chars.length;
  while (chars.length - b < stop && b > a && chars[b - 1] === content) b--;
  return a === 0 && b === chars.length ? token : chars.slice(a, b).join("");
}

/** The bytes one token stands for, for streaming decoding (where a chain over all tokens cannot run). */
export function tokenBytes(token: string, info: DecoderInfo, byteFallbackOn: boolean): Uint8Array {
  if (info.byteLevel) return byteLevelBytes(token) ?? utf8(token);
  const byte = byteFallbackOn ? parseBytePiece(token) : undefined;
  if (byte !== undefined) return Uint8Array.of(byte);
  return utf8(info.spaceFrom ? token.replaceAll(info.spaceFrom, " ") : token);
}
