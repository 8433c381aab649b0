/**
 * Special-token ids and the model's vocabulary size, from the tokenizer. A TNL config carries pad,
 * bos and eos ids: eos stops generation and the pad row of the embedding is zeroed at
 * initialisation, so they must be the tokenizer's own, never fixed numbers (with GPT-2's
 * vocabulary id 2 is "#").
 *
 * @example
 * const { ids, vocabSize } = specialTokens(tokenizer); // GPT-2: pad = bos = eos = 50256 (<|endoftext|>)
 */
import type { Tokenizer } from "@lightning-ts/tokenizer";
import { ConfigError } from "./config.js";

/** Names tokenizers give these tokens, most common first. */
const NAMES = {
  eos: ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "<|im_end|>"],
  bos: ["<|bos|>", "<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"],
  pad: ["<|pad|>", "<pad>", "[PAD]", "<|padding|>"],
};

export interface SpecialTokens {
  ids: { padTokenId: number; bosTokenId: number; eosTokenId: number };
  /** Rows of the model's embedding: at least the tokenizer's vocabulary. */
  vocabSize: number;
  /** One line saying where each id came from, for the log. */
  description: string;
}

/**
 * The tokenizer's pad, bos and eos tokens, looked up by their usual names among its special
 * (added) tokens. What a tokenizer lacks:
 * - bos: the end-of-text token (GPT-2's convention: `<|endoftext|>` is both);
 * - pad: a spare row past the tokenizer's vocabulary when the model has one (it never occurs in
 *   text), else the end-of-text token;
 * - eos: a spare row past the tokenizer's vocabulary, which generation then never draws from
 *   training; the default vocabulary grows by that one row.
 *
 * `modelVocab` is the vocabulary the user asked for (a preset's or `--model-vocab`), null for the
 * tokenizer's own; `vocabName` names where it came from, for errors.
 */
export function specialTokens(tokenizer: Tokenizer, modelVocab: number | null = null, vocabName = `--model-vocab ${modelVocab}`): SpecialTokens {
  const eos = findSpecial(tokenizer, NAMES.eos);
  const bos = findSpecial(tokenizer, NAMES.bos);
  const pad = findSpecial(tokenizer, NAMES.pad);
  const size = tokenizer.vocabSize;
  const vocabSize = modelVocab ?? size + (eos ? 0 : 1);
  if (vocabSize < size) {
    throw new ConfigError(`${vocabName}: the tokenizer has ${size.toLocaleString("en")} tokens, more than the model's vocab_size of ${vocabSize.toLocaleString("en")}; give a larger vocabulary or a smaller tokenizer`);
  }
  const spare = vocabSize > size ? size : undefined;
  if (!eos && spare === undefined) {
    throw new ConfigError(`${vocabName}: the tokenizer has no end-of-text token (${NAMES.eos.join(", ")}) and the model no spare row to stand for one; give a vocab_size of at least ${size + 1}`);
  }
  const eosId = eos?.id ?? spare!;
  const bosId = bos?.id ?? eosId;
  const padId = pad?.id ?? spare ?? eosId;
  const said = (t: { id: number; name: string } | undefined, id: number, fallback: string) => (t ? `${id} ${t.name}` : `${id} (${fallback})`);
  const description = [
    `pad ${said(pad, padId, spare !== undefined ? "a spare row: the tokenizer has no pad token" : "end of text: the tokenizer has no pad token")}`,
    `bos ${said(bos, bosId, "end of text: the tokenizer has no bos token")}`,
    `eos ${said(eos, eosId, "a spare row: the tokenizer has no end-of-text token")}`,
  ].join(", ");
  return { ids: { padTokenId: padId, bosTokenId: bosId, eosTokenId: eosId }, vocabSize, description };
}

/** The id that ends a document in a token stream: the tokenizer's end-of-text token, if it has one. */
export function documentSeparator(tokenizer: Tokenizer): number | null {
  return findSpecial(tokenizer, NAMES.eos)?.id ?? null;
}

/** The first of `names` among the tokenizer's special tokens. */
function findSpecial(tokenizer: Tokenizer, names: string[]): { id: number; name: string } | undefined {
  for (const name of names) {
    const s = tokenizer.model.specials.find((t) => t.content === name);
    if (s) return { id: s.id, name };
  }
  return undefined;
}
