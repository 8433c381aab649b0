import { readFile } from "node:fs/promises";
import { fail, prose } from "./errors.js";
import { loadTokenizerJson } from "./hf.js";
import { loadSentencePieceModel } from "./sentencepiece.js";
import { loadTiktoken } from "./tiktoken.js";
import type { TiktokenOptions } from "./tiktoken.js";
import type { Tokenizer } from "./tokenizer.js";

/**
 * Loads a tokenizer file, deciding its kind by its content (not its name): Hugging Face
 * `tokenizer.json` (a JSON object), SentencePiece `.model` (a ModelProto protobuf) or a tiktoken
 * rank file ("<base64> <rank>" lines; pass its pattern and special tokens in `tiktoken`). A file of
 * any other kind is an error naming the file.
 *
 * @example
 * const tok = await loadTokenizerFile("tokenizer.json");
 */
export async function loadTokenizerFile(path: string, tiktoken: TiktokenOptions = {}): Promise<Tokenizer> {
  const data = await readFile(path);
  const kind = tokenizerFileKind(data);
  if (kind === "sentencepiece") return loadSentencePieceModel(data, path);
  if (kind === "tiktoken") return loadTiktoken(data.toString("utf8"), tiktoken);
  if (kind === "json") return loadTokenizerJson(data.toString("utf8"), path);
  const start = [...data.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  return fail(path, "a tokenizer file (tokenizer.json, a SentencePiece .model or a tiktoken rank file)", prose(data.length === 0 ? "an empty file" : `a file of another kind (${data.length} bytes, starting ${start})`));
}

/** What a tokenizer file is, from its first bytes. */
export function tokenizerFileKind(data: Uint8Array): "json" | "sentencepiece" | "tiktoken" | undefined {
  const head = new TextDecoder().decode(data.subarray(0, 256)).replace(/^\uFEFF/, "");
  if (/^\s*\{/.test(head)) return "json";
  if (/^[A-Za-z0-9+/]+=* \d+\r?\n/.test(head)) return "tiktoken";
  // A ModelProto starts with a length-delimited field: pieces (1), trainer_spec (2) or normalizer_spec (3).
  if (data.length > 2 && (data[0] === 0x0a || data[0] === 0x12 || data[0] === 0x1a)) return "sentencepiece";
  return undefined;
}
