/**
 * The tokenizer every loader builds: special tokens → normalizers → pre-tokenizers → initial symbols
 * → BPE merges, and back through token bytes → UTF-8 for decoding. Loaders (tokenizer.json,
 * SentencePiece .model, tiktoken) and the trainer differ only in the `TokenizerModel` they produce.
 */
import { utf8, wellFormed, concatBytes } from "./bytes.js";
import { fail } from "./errors.js";
import type { MergeTable } from "./merge.js";
import type { Normalizer, Position, PreTokenizer } from "./pretokenize.js";
import { escapeRegExp } from "./pretokenize.js";

/** How a pre-tokenized piece becomes the ids BPE starts from. */
export type InitialSymbols =
  /** Byte-level BPE and tiktoken: one id per UTF-8 byte (`byteIds[b]`, -1 where the byte has no token). */
  | { kind: "bytes"; byteIds: Int32Array }
  /** SentencePiece-style BPE: one id per character; characters not in the vocabulary fall back to byte tokens, else to `unk`. */
  | { kind: "chars"; charIds: Map<string, number>; byteFallback?: Int32Array; unk?: number; fuseUnk: boolean };

export interface SpecialToken {
  content: string;
  id: number;
  /** Special tokens are dropped by `decode(ids, { skipSpecialTokens: true })`. */
  special: boolean;
}

export type ModelKind = "byte-level" | "sentencepiece" | "tiktoken";

/** Text in, in pieces of any size; out, the ids of what no later text can change. */
export interface IncrementalEncoder {
  push(text: string): number[];
  /** The ids of the rest, as the end of the text. */
  end(): number[];
}

export interface TokenizerModel {
  kind: ModelKind;
  /** id → the token as its file writes it ("Ġthe", "▁the", or base64 for tiktoken). */
  tokens: string[];
  /** id → the bytes the token decodes to. */
  bytes: Uint8Array[];
  merges: MergeTable;
  initial: InitialSymbols;
  normalizers: Normalizer[];
  preTokenizers: PreTokenizer[];
  specials: SpecialToken[];
  /** Look the whole piece up before merging (tiktoken always; HF BPE with `ignore_merges`). */
  ignoreMerges: boolean;
  /** SentencePiece decoders drop the space that the dummy "▁" prefix became. */
  stripLeadingSpace: boolean;
  /** Ids put around the text by `encode(text, { addSpecialTokens: true })`. */
  template: { prefix: number[]; suffix: number[] };
  /** Whether the pre-tokenizer always ends a piece after "\n" followed by a non-space (see encodeStream). */
  splitsAfterNewline: boolean;
  /**
   * Whether a cut just before a space between ASCII letters or digits leaves every piece as it is
   * in the whole (tokenizer.json Unigram, WordPiece and WordLevel, which encode piece by piece).
   */
  splitsBeforeSpace?: boolean;
  /** For byte-level models built here: the split pattern, so the model can be written as tokenizer.json. */
  pattern?: string;
  /** For models read from tokenizer.json: the parsed file, written back unchanged by `saveTokenizerJson`. */
  source?: unknown;
  /**
   * For tokenizer.json: Hugging Face's own order of added tokens, normalizer and pre-tokenizer, used
   * by `encode` in place of `specials`, `normalizers` and `preTokenizers`. Each segment is an added
   * token's id or the pieces for the model.
   */
  segment?: (text: string, continuation: boolean) => (number | string[])[];
  /** A model other than BPE (Unigram): one piece → ids, in place of `initial` and `merges`. */
  encodeWord?: (piece: string) => number[];
  /**
   * For models whose pieces do not end at lines (SentencePiece): an encoder that `encodeStream`
   * feeds, which encodes at most about `chunkChars` code units beyond its last safe cut at a time.
   */
  streamEncoder?: (chunkChars: number) => IncrementalEncoder;
  /** For tokenizer.json: the file's decoder over token strings, used by `decode` in place of `bytes`. */
  decodeTokens?: (tokens: string[]) => string;
}

export interface EncodeOptions {
  /** Add the model's template ids (e.g. BOS) around the text. Default false. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

const CACHE_LIMIT = 1 << 17; // distinct pieces kept; the cache is cleared when it fills
const CACHE_MAX_PIECE = 64; // longer pieces (whole lines in SentencePiece models) are rarely repeated

export class Tokenizer {
  readonly model: TokenizerModel;
  private readonly cache = new Map<string, number[]>();
  private readonly specialRe: RegExp | undefined;
  private readonly specialIds = new Map<string, number>();
  private readonly specialSet = new Set<number>();
  private wholeIds: Map<string, number> | undefined;

  constructor(model: TokenizerModel) {
    this.model = model;
    if (model.tokens.length !== model.bytes.length) fail("model.bytes", `${model.tokens.length} entries, one per token`, model.bytes.length);
    for (const s of model.specials) {
      this.specialIds.set(s.content, s.id);
      if (s.special) this.specialSet.add(s.id);
    }
    const contents = [...this.specialIds.keys()].filter((c) => c.length > 0).sort((a, b) => b.length - a.length);
    this.specialRe = contents.length ? new RegExp(contents.map(escapeRegExp).join("|"), "g") : undefined;
  }

  get vocabSize(): number {
    return this.model.tokens.length;
  }

  /** Id of a token as its file writes it, or of a special token; undefined if absent. */
  tokenToId(token: string): number | undefined {
    const special = this.specialIds.get(token);
    if (special !== undefined) return special;
    return this.tokenToIdPlain(token);
  }
  private tokenIndex: Map<string, number> | undefined;

  idToToken(id: number): string {
    this.checkId(id, "id");
    return this.model.tokens[id];
  }

  /**
   * Text → ids. Special tokens in the text are kept whole; lone surrogates are encoded as U+FFFD.
   *
   * @example
   * const tok = loadTokenizerJson(readFileSync("tokenizer.json", "utf8"));
   * tok.encode("Hello world"); // e.g. [15496, 995]
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (options.addSpecialTokens) out.push(...this.model.template.prefix);
    this.encodeInto(wellFormed(text), false, out);
    if (options.addSpecialTokens) out.push(...this.model.template.suffix);
    return out;
  }

  /** Encodes text into `out`; `continuation` marks text that continues a streamed input. */
  private encodeInto(text: string, continuation: boolean, out: number[]): void {
    if (this.model.segment) {
      for (const seg of this.model.segment(text, continuation)) {
        if (typeof seg === "number") out.push(seg);
        else this.encodePieces(seg, out);
      }
      return;
    }
    let at = 0;
    const position = (): Position => (at > 0 ? "afterSpecial" : continuation ? "continuation" : "start");
    if (this.specialRe) {
      for (const m of text.matchAll(this.specialRe)) {
        if (m.index > at) this.encodeOrdinary(text.slice(at, m.index), position(), out);
        out.push(this.specialIds.get(m[0])!);
        at = m.index + m[0].length;
      }
    }
    if (at < text.length) this.encodeOrdinary(text.slice(at), position(), out);
  }

  private encodeOrdinary(text: string, at: Position, out: number[]): void {
    for (const n of this.model.normalizers) text = n(text, at);
    let pieces = [text];
    for (const p of this.model.preTokenizers) pieces = p(pieces, at);
    this.encodePieces(pieces, out);
  }

  private encodePieces(pieces: string[], out: number[]): void {
    for (const piece of pieces) {
      const cached = this.cache.get(piece);
      if (cached) {
        for (const id of cached) out.push(id);
        continue;
      }
      const ids = this.encodePiece(piece);
      if (piece.length <= CACHE_MAX_PIECE) {
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(piece, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  private encodePiece(piece: string): number[] {
    const m = this.model;
    if (m.encodeWord) return m.encodeWord(piece);
    if (m.ignoreMerges) {
      const whole = this.wholeId(piece);
      if (whole !== undefined) return [whole];
    }
    return m.merges.apply(this.initialSymbols(piece));
  }

  private initialSymbols(piece: string): number[] {
    const init = this.model.initial;
    const ids: number[] = [];
    if (init.kind === "bytes") {
      for (const b of utf8(piece)) {
        const id = init.byteIds[b];
        if (id < 0) fail("text", `bytes the vocabulary can spell (byte 0x${b.toString(16)} has no token)`, piece);
        ids.push(id);
      }
      return ids;
    }
    for (const ch of piece) {
      const id = init.charIds.get(ch);
      if (id !== undefined) {
        ids.push(id);
      } else if (init.byteFallback) {
        for (const b of utf8(ch)) ids.push(init.byteFallback[b]);
      } else if (init.unk !== undefined) {
        if (!(init.fuseUnk && ids[ids.length - 1] === init.unk)) ids.push(init.unk);
      } else {
        fail("text", "characters in the vocabulary (the model has no byte fallback and no unk token)", ch);
      }
    }
    return ids;
  }

  private wholeId(piece: string): number | undefined {
    if (this.model.initial.kind === "chars") return this.tokenToIdPlain(piece);
    if (!this.wholeIds) {
      const ids = new Map<string, number>();
      const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
      this.model.bytes.forEach((b, id) => {
        if (this.specialSet.has(id)) return;
        try {
          const text = decoder.decode(b);
          if (!ids.has(text)) ids.set(text, id);
        } catch {
          // A token that is not whole UTF-8 text can never equal a piece of text.
        }
      });
      this.wholeIds = ids;
    }
    return this.wholeIds.get(piece);
  }

  private tokenToIdPlain(piece: string): number | undefined {
    this.tokenIndex ??= new Map(this.model.tokens.map((t, i) => [t, i]));
    return this.tokenIndex.get(piece);
  }

  /** Ids → text. Byte sequences that are not valid UTF-8 decode to U+FFFD; an unknown id throws. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    if (this.model.decodeTokens) {
      const tokens: string[] = [];
      for (let i = 0; i < ids.length; i++) {
        this.checkId(ids[i], `ids[${i}]`);
        if (!(options.skipSpecialTokens && this.specialSet.has(ids[i]))) tokens.push(this.model.tokens[ids[i]]);
      }
      return this.model.decodeTokens(tokens);
    }
    const parts: Uint8Array[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      this.checkId(id, `ids[${i}]`);
      if (options.skipSpecialTokens && this.specialSet.has(id)) continue;
      parts.push(this.model.bytes[id]);
    }
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(concatBytes(parts));
    return this.model.stripLeadingSpace && text.startsWith(" ") ? text.slice(1) : text;
  }

  /** The bytes of one token, for callers that assemble text themselves. */
  tokenBytes(id: number): Uint8Array {
    this.checkId(id, "id");
    return this.model.bytes[id];
  }

  isSpecial(id: number): boolean {
    return this.specialSet.has(id);
  }

  /**
   * A decoder for streaming generation: feed ids one at a time, get back only whole characters.
   *
   * @example
   * const stream = tok.decoder();
   * for (const id of ids) process.stdout.write(stream.push(id));
   * process.stdout.write(stream.end());
   */
  decoder(options: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, options);
  }

  /**
   * Encodes a large input piece by piece, yielding the ids of each piece as it is done; memory stays
   * bounded by the chunk size. The concatenated output equals `encode` of the whole input. Byte
   * chunks may end inside a UTF-8 character and string chunks inside a surrogate pair.
   * SentencePiece models cut where no piece of their vocabulary can span the cut (see
   * sentencepiece-stream.ts). Others cut after a "\n" between two non-space characters, where the
   * split patterns of GPT-2, cl100k and o200k end a piece, or, for tokenizer.json models that
   * encode piece by piece, before a space between ASCII letters or digits where every piece ends
   * (`splitsBeforeSpace`); models with neither guarantee are encoded in one piece at the end.
   *
   * @example
   * for await (const ids of tok.encodeStream(createReadStream("corpus.txt"))) write(ids);
   */
  async *encodeStream(source: AsyncIterable<string | Uint8Array> | Iterable<string | Uint8Array>, options: { chunkChars?: number } = {}): AsyncGenerator<number[]> {
    const chunkChars = options.chunkChars ?? 1 << 20;
    if (this.model.streamEncoder) {
      yield* incrementally(this.model.streamEncoder(chunkChars), source);
      return;
    }
    const textDecoder = new TextDecoder();
    let pending = "";
    let first = true;
    const flush = (text: string) => {
      const out: number[] = [];
      this.encodeInto(wellFormed(text), !first, out);
      first = false;
      return out;
    };
    for await (const chunk of source) {
      pending += typeof chunk === "string" ? chunk : textDecoder.decode(chunk, { stream: true });
      const lastCut = this.model.splitsAfterNewline ? lastSafeCut : this.model.splitsBeforeSpace ? lastSpaceCut : undefined;
      if (!lastCut || pending.length < chunkChars) continue;
      const cut = lastCut(pending);
      if (cut <= 0) continue;
      yield flush(pending.slice(0, cut));
      pending = pending.slice(cut);
    }
    pending += textDecoder.decode();
    if (pending.length > 0 || first) yield flush(pending);
  }

  private checkId(id: number, arg: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.model.tokens.length) fail(arg, `a token id in [0, ${this.model.tokens.length})`, id);
  }
}

/** Feeds `encoder` whole, well-formed characters from `source`, yielding ids as they settle (at least once). */
async function* incrementally(encoder: IncrementalEncoder, source: AsyncIterable<string | Uint8Array> | Iterable<string | Uint8Array>): AsyncGenerator<number[]> {
  const textDecoder = new TextDecoder();
  let held = ""; // a high surrogate whose low half may start the next string
  let yielded = false;
  for await (const chunk of source) {
    let text = held + (typeof chunk === "string" ? chunk : textDecoder.decode(chunk, { stream: true }));
    const last = text.charCodeAt(text.length - 1);
    held = last >= 0xd800 && last <= 0xdbff ? text.slice(-1) : "";
    if (held) text = text.slice(0, -1);
    const ids = encoder.push(wellFormed(text));
    if (ids.length > 0) {
      yielded = true;
      yield ids;
    }
  }
  const rest = wellFormed(held + textDecoder.decode());
  const ids = [...encoder.push(rest), ...encoder.end()];
  if (ids.length > 0 || !yielded) yield ids;
}

/**
 * Index just after the last "\n" that has a non-space character on both sides, or -1. A lone "\n"
 * between two non-spaces is a piece of its own (or the tail of a punctuation piece) under every
 * split pattern here, whether or not text follows it; a run of whitespace would not be.
 */
export function lastSafeCut(text: string): number {
  for (let i = text.length - 2; i > 0; i--) {
    if (text.charCodeAt(i) === 10 && !/\s/.test(text[i - 1]) && !/\s/.test(text[i + 1])) return i + 1;
  }
  return -1;
}

const ALNUM = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

/** Index of the last " " with an ASCII letter or digit on both sides, or -1 (see `splitsBeforeSpace`). */
export function lastSpaceCut(text: string): number {
  for (let i = text.length - 2; i > 0; i--) {
    if (text.charCodeAt(i) === 0x20 && ALNUM(text.charCodeAt(i - 1)) && ALNUM(text.charCodeAt(i + 1))) return i;
  }
  return -1;
}

/**
 * Turns ids into text incrementally. Token bytes go through a streaming UTF-8 decoder, so a
 * character split across tokens (an emoji spelled as four byte tokens) appears only once complete,
 * and bytes that can never form a character come out as U+FFFD, as in `decode`.
 */
export class StreamDecoder {
  private readonly utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
  private started = false;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly options: DecodeOptions,
  ) {}

  push(id: number): string {
    const bytes = this.tokenizer.tokenBytes(id);
    if (this.options.skipSpecialTokens && this.tokenizer.isSpecial(id)) return "";
    return this.emit(this.utf8.decode(bytes, { stream: true }));
  }

  /** Flushes bytes still held (an incomplete character becomes U+FFFD). */
  end(): string {
    return this.emit(this.utf8.decode());
  }

  private emit(text: string): string {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (this.tokenizer.model.stripLeadingSpace && text.startsWith(" ")) return text.slice(1);
    }
    return text;
  }
}
