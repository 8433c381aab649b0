/**
 * Bytes and text. Every token in this package is, in the end, a byte string: decoding concatenates
 * token bytes and reads them as UTF-8, so byte-level BPE, SentencePiece byte fallback and tiktoken
 * share one decoder.
 */

const encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/**
 * GPT-2's printable stand-ins for the 256 byte values: printable Latin-1 bytes map to themselves and
 * the rest to U+0100 onwards, so a byte-level token can be written in tokenizer.json as plain text.
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 0;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(printable(b) ? b : 256 + next++));
  return table;
})();

export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** Bytes of a byte-level token string ("Ġhello" → " hello"), or undefined if a char is not a byte stand-in. */
export function byteLevelBytes(token: string): Uint8Array | undefined {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = CHAR_TO_BYTE.get(token[i]);
    if (b === undefined) return undefined;
    out[i] = b;
  }
  return out;
}

/** The byte-level token string for some bytes (" hello" → "Ġhello"). */
export function byteLevelString(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += BYTE_TO_CHAR[b];
  return s;
}

/** `<0x0A>` → 10, anything else → undefined: SentencePiece's spelling of a byte-fallback piece. */
export function parseBytePiece(piece: string): number | undefined {
  const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  return m ? parseInt(m[1], 16) : undefined;
}

export function bytePiece(byte: number): string {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`;
}

const LONE = "[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]";
const HAS_LONE_SURROGATE = new RegExp(LONE);
const LONE_SURROGATES = new RegExp(LONE, "g");

/**
 * Lone surrogates cannot be written as UTF-8, so they become U+FFFD before encoding: exactly what
 * `TextEncoder` and `String.prototype.toWellFormed` do. Decoding therefore returns U+FFFD where the
 * input had a lone surrogate.
 */
export function wellFormed(text: string): string {
  return HAS_LONE_SURROGATE.test(text) ? text.replace(LONE_SURROGATES, "\uFFFD") : text;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
