import { readFile } from "node:fs/promises";
import { loadTokenizerJson } from "./hf.js";
import { loadSentencePieceModel } from "./sentencepiece.js";
import { loadTiktoken } from "./tiktoken.js";
import type { TiktokenOptions } from "./tiktoken.js";
import type { Tokenizer } from "./tokenizer.js";

/**
 * Loads a tokenizer file by its extension: `.json` (Hugging Face), `.model` (SentencePiece) or
 * `.tiktoken` (rank file; pass its pattern and special tokens in `tiktoken`).
 *
 * @example
 * const tok = await loadTokenizerFile("tokenizer.json");
 */
export async function loadTokenizerFile(path: string, tiktoken: TiktokenOptions = {}): Promise<Tokenizer> {
  const data = await readFile(path);
  if (path.endsWith(".model")) return loadSentencePieceModel(data);
  if (path.endsWith(".tiktoken")) return loadTiktoken(data.toString("utf8"), tiktoken);
  return loadTokenizerJson(data.toString("utf8"), path);
}
