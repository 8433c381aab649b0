/**
 * Corpus input files read as a stream: plain text (.txt, .md and any other name) in pieces that end
 * at a line break, JSONL (.jsonl) one record at a time. Every byte is checked to be UTF-8; the error
 * names the file and the byte offset. Memory stays bounded by the piece size, whatever the file's.
 */
import { isUtf8 } from "node:buffer";
import { createReadStream, existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { DataError } from "./data.js";

export interface InputFile {
  path: string;
  kind: "text" | "jsonl";
  bytes: number;
}

/** Files under `paths` (each a file, or a directory searched recursively for .txt, .md and .jsonl). */
export function listInputs(paths: readonly string[], arg = "--input"): InputFile[] {
  const files: string[] = [];
  for (const path of paths) {
    if (!existsSync(path)) throw new DataError(`${arg}: ${path} does not exist`);
    const st = statSync(path);
    if (st.isFile()) files.push(path);
    else if (st.isDirectory()) {
      const found = readdirSync(path, { recursive: true, encoding: "utf8" })
        .map((f) => join(path, f))
        .filter((f) => /\.(txt|md|jsonl)$/i.test(f) && statSync(f).isFile())
        .sort();
      if (found.length === 0) throw new DataError(`${arg}: no .txt, .md or .jsonl files in ${path}`);
      files.push(...found);
    } else throw new DataError(`${arg}: ${path} is neither a file nor a directory`);
  }
  return files.map((path) => ({ path, kind: /\.jsonl$/i.test(path) ? "jsonl" : "text", bytes: statSync(path).size }));
}

/** Longest piece without a line break that is read before it is cut (at a character boundary). */
const MAX_PIECE = 1 << 22;

/**
 * The file's bytes in pieces that end just after a "\n" (or at a character boundary, for lines
 * longer than `MAX_PIECE` unless `wholeLines`), each checked to be UTF-8, with its byte offset in
 * the file.
 */
export async function* readPieces(path: string, options: { arg?: string; wholeLines?: boolean; chunkBytes?: number } = {}): AsyncGenerator<{ bytes: Buffer; offset: number }> {
  const arg = options.arg ?? "--input";
  let carry: Buffer = Buffer.alloc(0);
  let offset = 0;
  const checked = (bytes: Buffer) => {
    if (!isUtf8(bytes)) throw new DataError(`${arg}: ${path} is not UTF-8 text: invalid byte sequence at byte offset ${offset + firstInvalidUtf8(bytes)}`);
    const piece = { bytes, offset };
    offset += bytes.length;
    return piece;
  };
  for await (const chunk of createReadStream(path, { highWaterMark: options.chunkBytes ?? 1 << 20 })) {
    let data = carry.length > 0 ? Buffer.concat([carry, chunk as Buffer]) : (chunk as Buffer);
    let end = data.lastIndexOf(10) + 1;
    if (end === 0 && data.length >= MAX_PIECE && !options.wholeLines) end = lastCharacterStart(data);
    if (end > 0) {
      yield checked(data.subarray(0, end));
      data = data.subarray(end);
    }
    carry = data;
  }
  if (carry.length > 0) yield checked(carry);
}

/** The start of the last character of `bytes` (cutting there never splits a UTF-8 sequence). */
function lastCharacterStart(bytes: Uint8Array): number {
  let i = bytes.length - 1;
  while (i > bytes.length - 4 && i > 0 && (bytes[i] & 0xc0) === 0x80) i--;
  return i;
}

/**
 * Offset of the first byte that is not valid UTF-8 (bytes.length if all are). A lenient decode
 * turns each invalid sequence into U+FFFD; the first U+FFFD whose bytes are not EF BF BD (a real
 * U+FFFD in the text) marks the spot.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
  let offset = 0;
  let from = 0;
  for (let i = text.indexOf("\ufffd"); i >= 0; i = text.indexOf("\ufffd", i + 1)) {
    offset += Buffer.byteLength(text.slice(from, i));
    from = i + 1;
    if (bytes[offset] === 0xef && bytes[offset + 1] === 0xbf && bytes[offset + 2] === 0xbd) offset += 3;
    else return offset;
  }
  return bytes.length;
}

/** A piece of a document's text and the byte offset in its file where it starts. */
export interface TextPart {
  text: string;
  offset: number;
  bytes: number;
  /** The last part of its document (a whole text file, or one JSONL record). */
  end: boolean;
}

/**
 * The text of an input: a text file is one document, read in pieces (a piece that contains byte
 * `cut` is split at the first line break from there, so that the parts before and after `cut`
 * are whole lines); a JSONL file is one document per record, its text in field `field`.
 */
export async function* documentParts(input: InputFile, options: { field: string; cut?: number; arg?: string; chunkBytes?: number }): AsyncGenerator<TextPart> {
  const arg = options.arg ?? "--input";
  const cut = options.cut ?? Infinity;
  let line = 0;
  for await (const piece of readPieces(input.path, { arg, wholeLines: input.kind === "jsonl", chunkBytes: options.chunkBytes })) {
    let { bytes, offset } = piece;
    if (offset === 0 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
      // A byte-order mark is not text.
      bytes = bytes.subarray(3);
      offset = 3;
    }
    if (input.kind === "text") {
      const at = offset < cut && cut < offset + bytes.length ? bytes.indexOf(10, cut - offset) + 1 : 0;
      if (at > 0 && at < bytes.length) {
        yield { text: bytes.toString("utf8", 0, at), offset, bytes: at, end: false };
        yield { text: bytes.toString("utf8", at), offset: offset + at, bytes: bytes.length - at, end: false };
      } else yield { text: bytes.toString("utf8"), offset, bytes: bytes.length, end: false };
      continue;
    }
    let start = 0;
    while (start < bytes.length) {
      const nl = bytes.indexOf(10, start);
      const stop = nl < 0 ? bytes.length : nl + 1;
      line++;
      const text = bytes.toString("utf8", start, stop).trim();
      if (text.length > 0) yield { text: jsonlText(text, options.field, `${arg}: ${input.path} line ${line}`), offset: offset + start, bytes: stop - start, end: true };
      start = stop;
    }
  }
  if (input.kind === "text") yield { text: "", offset: input.bytes, bytes: 0, end: true };
}

function jsonlText(line: string, field: string, where: string): string {
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch (err) {
    throw new DataError(`${where}: not valid JSON: ${(err as Error).message}`);
  }
  const text = record !== null && typeof record === "object" ? (record as Record<string, unknown>)[field] : undefined;
  if (typeof text !== "string") throw new DataError(`${where}: no string field "${field}" (--jsonl-field)`);
  return text;
}
