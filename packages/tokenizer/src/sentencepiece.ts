/**
 * SentencePiece `.model` files (a `ModelProto` protobuf) of BPE or Unigram type, such as the
 * TNL-1B/7B Baichuan tokenizer (64,000 pieces, nmt_nfkc, byte fallback). Encoding is SentencePiece's
 * own, step for step: the model's normalizer (sentencepiece-normalizer.ts), then its BPE
 * (sentencepiece-bpe.ts) or Unigram (unigram.ts) over the whole normalized text, then unknown
 * pieces spelled as bytes (byte_fallback) or fused into one unknown id. Control pieces such as
 * "<s>" are not looked for in the text (SentencePiece encodes "<s>" as the characters "<", "s",
 * ">"); user-defined pieces are, before the model, and are never normalized or split.
 *
 * Training-time options (split_digits, split_by_unicode_script, split_by_whitespace,
 * max_sentencepiece_length…) only decide which pieces exist; encoding never reads them.
 */
import { bytePiece, parseBytePiece, utf8 } from "./bytes.js";
import { fail, prose } from "./errors.js";
import { MergeTable } from "./merge.js";
import { SentencePieceBpe } from "./sentencepiece-bpe.js";
import { BytePrefixMatcher, normalizeSentencePiece, PrecompiledCharsmap } from "./sentencepiece-normalizer.js";
import type { SentencePieceNormalizerSpec } from "./sentencepiece-normalizer.js";
import type { EncodeCarry } from "./sentencepiece-stream.js";
import { PieceCover, SentencePieceEncodeStream } from "./sentencepiece-stream.js";
import type { SpecialToken } from "./tokenizer.js";
import { Tokenizer } from "./tokenizer.js";
import { Unigram } from "./unigram.js";

/** Piece types of sentencepiece_model.proto. */
export const PieceType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;
const MODEL_TYPES: Record<number, string> = { 1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR" };

export interface SentencePiece {
  piece: string;
  score: number;
  type: number;
}

export interface SentencePieceModel {
  pieces: SentencePiece[];
  modelType: number;
  byteFallback: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  unkSurface: string;
  normalizerName: string;
  /** The normalizer's rules (empty for identity): see PrecompiledCharsmap. */
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
  treatWhitespaceAsSuffix: boolean;
}

/** A protobuf wire-format reader over just the types ModelProto uses. */
class Reader {
  pos = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly what: string,
  ) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (;;) {
      if (this.pos >= this.buf.length) fail(this.what, "a complete protobuf varint", prose(`end of data at byte ${this.pos} (truncated file?)`));
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
  }

  /** int32 fields are sign-extended to 64 bits on the wire. */
  int32(): number {
    const v = this.varint();
    return v >= 2 ** 31 ? v - 2 ** 64 : v;
  }

  bytes(): Uint8Array {
    const n = this.varint();
    if (this.pos + n > this.buf.length) fail(this.what, `${n} bytes of a length-delimited field at byte ${this.pos}`, prose(`${this.buf.length - this.pos} bytes left (truncated file?)`));
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  float(): number {
    if (this.pos + 4 > this.buf.length) fail(this.what, `a 4-byte float at byte ${this.pos}`, prose("end of data (truncated file?)"));
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else fail(this.what, "protobuf wire types 0, 1, 2 or 5", prose(`wire type ${wire} at byte ${this.pos} (not a SentencePiece model?)`));
    if (this.pos > this.buf.length) fail(this.what, "a complete field", prose("end of data (truncated file?)"));
  }

  /** Calls `field(number, wire)` for each field; the callback reads the value or returns false to skip it. */
  fields(field: (n: number, wire: number) => boolean): void {
    while (!this.done) {
      const tag = this.varint();
      if (!field(tag >>> 3, tag & 7)) this.skip(tag & 7);
    }
  }
}

// ignoreBOM: a piece may be exactly U+FEFF, which a default TextDecoder would drop.
const text = new TextDecoder("utf-8", { ignoreBOM: true });

/** Parses a `.model` file into its pieces and the settings encoding needs; `file` names it in errors. */
export function parseSentencePieceModel(data: Uint8Array, file = ".model file"): SentencePieceModel {
  const m: SentencePieceModel = {
    pieces: [],
    modelType: 1,
    byteFallback: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    unkSurface: " \u2047 ",
    normalizerName: "nmt_nfkc",
    precompiledCharsmap: new Uint8Array(),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
    treatWhitespaceAsSuffix: false,
  };
  const top = new Reader(data, file);
  top.fields((n, wire) => {
    if (wire !== 2 || n < 1 || n > 3) return false;
    const body = top.bytes();
    const name = file === ".model file" ? ".model" : file;
    if (n === 1) m.pieces.push(parsePiece(new Reader(body, `${name} piece ${m.pieces.length}`)));
    else if (n === 2) parseTrainerSpec(new Reader(body, `${name} trainer_spec`), m);
    else parseNormalizerSpec(new Reader(body, `${name} normalizer_spec`), m);
    return true;
  });
  if (m.pieces.length === 0) fail(file, "at least one piece", prose("none (empty or not a SentencePiece model)"));
  return m;
}

function parsePiece(r: Reader): SentencePiece {
  const p: SentencePiece = { piece: "", score: 0, type: PieceType.NORMAL };
  r.fields((n, wire) => {
    if (n === 1 && wire === 2) p.piece = text.decode(r.bytes());
    else if (n === 2 && wire === 5) p.score = r.float();
    else if (n === 3 && wire === 0) p.type = r.int32();
    else return false;
    return true;
  });
  return p;
}

function parseTrainerSpec(r: Reader, m: SentencePieceModel): void {
  r.fields((n, wire) => {
    if (n === 44 && wire === 2) {
      m.unkSurface = text.decode(r.bytes());
      return true;
    }
    if (wire !== 0) return false;
    const v = r.int32();
    if (n === 3) m.modelType = v;
    else if (n === 35) m.byteFallback = v !== 0;
    else if (n === 24) m.treatWhitespaceAsSuffix = v !== 0;
    else if (n === 40) m.unkId = v;
    else if (n === 41) m.bosId = v;
    else if (n === 42) m.eosId = v;
    else if (n === 43) m.padId = v;
    return true;
  });
}

function parseNormalizerSpec(r: Reader, m: SentencePieceModel): void {
  r.fields((n, wire) => {
    if (n === 1 && wire === 2) m.normalizerName = text.decode(r.bytes());
    else if (n === 2 && wire === 2) m.precompiledCharsmap = r.bytes();
    else if (n === 3 && wire === 0) m.addDummyPrefix = r.varint() !== 0;
    else if (n === 4 && wire === 0) m.removeExtraWhitespaces = r.varint() !== 0;
    else if (n === 5 && wire === 0) m.escapeWhitespaces = r.varint() !== 0;
    else return false;
    return true;
  });
}

/**
 * Reads a SentencePiece `.model` file (BPE or Unigram) into a Tokenizer that gives the ids
 * SentencePiece gives. `file` names the file in errors.
 *
 * @example
 * const tok = loadSentencePieceModel(readFileSync("tokenizer.model"));
 * tok.encode("Hello", { addSpecialTokens: true }); // [bos, …]
 */
export function loadSentencePieceModel(data: Uint8Array, file = ".model"): Tokenizer {
  const m = parseSentencePieceModel(data, file === ".model" ? ".model file" : file);
  const where = (field: string) => `${file} ${field}`;
  if (m.modelType !== 1 && m.modelType !== 2) fail(where("trainer_spec.model_type"), "BPE or UNIGRAM", prose(MODEL_TYPES[m.modelType] ?? String(m.modelType)));
  if (m.treatWhitespaceAsSuffix) fail(where("trainer_spec.treat_whitespace_as_suffix"), "false (not supported)", true);
  const identity = m.normalizerName === "identity" || m.normalizerName === "";
  if (!identity && m.precompiledCharsmap.length === 0) {
    fail(where("normalizer_spec.precompiled_charsmap"), `the compiled rules of the "${m.normalizerName}" normalizer`, prose("none (a stripped or hand-written model?)"));
  }

  const tokens = m.pieces.map((p) => p.piece);
  const typeOf = (id: number) => m.pieces[id].type;
  // SentencePiece's two piece maps: normal, user-defined and unused pieces are matched in text.
  const matchable = (id: number) => typeOf(id) === PieceType.NORMAL || typeOf(id) === PieceType.USER_DEFINED || typeOf(id) === PieceType.UNUSED;
  const pieces = new Map<string, number>();
  const reserved = new Map<string, number>();
  m.pieces.forEach((p, id) => {
    if (p.piece.length === 0) fail(where(`piece ${id}`), "a non-empty piece", p.piece);
    const map = matchable(id) ? pieces : reserved;
    if (map.has(p.piece)) fail(where(`piece ${id}`), "a piece not defined before", p.piece);
    map.set(p.piece, id);
  });
  const unkIds = m.pieces.flatMap((p, id) => (p.type === PieceType.UNKNOWN ? [id] : []));
  if (unkIds.length !== 1) fail(where("pieces"), "exactly one piece of type UNKNOWN", prose(`${unkIds.length}`));
  const unkId = unkIds[0];

  const specials: SpecialToken[] = [];
  const userDefined: string[] = [];
  const byteIds = m.byteFallback ? new Int32Array(256).fill(-1) : undefined;
  const byteOf = new Int32Array(tokens.length).fill(-1);
  const bytes = m.pieces.map((p, id) => {
    switch (p.type) {
      case PieceType.BYTE: {
        const b = parseBytePiece(p.piece) ?? fail(where(`piece ${id}`), "a byte piece spelled <0xNN>", p.piece);
        if (!byteIds) fail(where(`piece ${id}`), "no byte pieces (byte_fallback is off)", p.piece);
        byteIds[b] = id;
        byteOf[id] = b;
        return Uint8Array.of(b);
      }
      case PieceType.CONTROL:
        specials.push({ id, content: p.piece, special: true });
        return new Uint8Array(); // SentencePiece decodes control pieces to nothing
      case PieceType.UNKNOWN:
        specials.push({ id, content: p.piece, special: true });
        return utf8(m.unkSurface);
      case PieceType.USER_DEFINED:
        specials.push({ id, content: p.piece, special: false });
        userDefined.push(p.piece);
        break;
    }
    return utf8(m.escapeWhitespaces ? p.piece.replaceAll("▁", " ") : p.piece);
  });
  if (byteIds) {
    const missing = byteIds.indexOf(-1);
    if (missing >= 0) fail(where("pieces"), `all 256 byte pieces (byte_fallback is on)`, prose(`no piece ${bytePiece(missing)}`));
  }

  const spec: SentencePieceNormalizerSpec = {
    charsmap: m.precompiledCharsmap.length > 0 ? new PrecompiledCharsmap(m.precompiledCharsmap, where("normalizer_spec.precompiled_charsmap")) : undefined,
    addDummyPrefix: m.addDummyPrefix,
    removeExtraWhitespaces: m.removeExtraWhitespaces,
    escapeWhitespaces: m.escapeWhitespaces,
    userDefined: new BytePrefixMatcher(userDefined),
  };
  const encode = m.modelType === 1 ? unigramEncoder(m, unkId, byteIds) : bpeEncoder(m, pieces, reserved, userDefined, unkId, byteIds);
  const idOf = new Map([...reserved, ...pieces]);
  let cover: PieceCover | undefined;
  // A BPE merge can make an unused piece, which is split back the way the last pair that formed it
  // anywhere in the text was split (SentencePiece's rev_merge): that ties the whole text together.
  const cuttable = m.modelType === 1 || !m.pieces.some((p) => p.type === PieceType.UNUSED);

  return new Tokenizer({
    kind: "sentencepiece",
    tokens,
    bytes,
    merges: new MergeTable(),
    initial: { kind: "chars", charIds: new Map(), unk: unkId, fuseUnk: true },
    normalizers: [],
    preTokenizers: [],
    specials,
    ignoreMerges: false,
    stripLeadingSpace: m.addDummyPrefix || m.removeExtraWhitespaces,
    template: { prefix: m.bosId >= 0 && m.bosId < tokens.length ? [m.bosId] : [], suffix: [] },
    // encodeStream cuts where the model allows (see sentencepiece-stream.ts), not after lines.
    splitsAfterNewline: false,
    // The whole text is one piece: SentencePiece normalizes and segments it as a whole.
    segment: (text) => {
      const normalized = normalizeSentencePiece(text, spec);
      return normalized.length > 0 ? [[normalized]] : [];
    },
    encodeWord: (text) => encode(text),
    streamEncoder: (chunkChars) => {
      // Every piece that can occur in normalized text (normal, user-defined, unused) may cover a cut.
      if (cuttable) cover ??= new PieceCover(pieces.keys());
      return new SentencePieceEncodeStream(spec, cover, encode, chunkChars);
    },
    decodeTokens: (pieceList) => decodePieces(pieceList.map((p) => idOf.get(p)!), m, byteOf),
  });
}

/** Unigram ids of normalized text, unknown characters as bytes or one fused unknown id. */
function unigramEncoder(m: SentencePieceModel, unkId: number, byteIds: Int32Array | undefined): (text: string, carry?: EncodeCarry) => number[] {
  const type = (id: number) => m.pieces[id].type;
  let max = 1.1754943508222875e-38; // FLT_MIN, where SentencePiece starts its maximum
  for (const p of m.pieces) if (p.type === PieceType.NORMAL) max = Math.max(max, p.score);
  const unigram = new Unigram(m.pieces, {
    unkId,
    byteIds,
    fuseUnk: true,
    float32: true,
    matchable: (id) => type(id) === PieceType.NORMAL || type(id) === PieceType.USER_DEFINED || type(id) === PieceType.UNUSED,
    userDefined: (id) => type(id) === PieceType.USER_DEFINED,
    unused: (id) => type(id) === PieceType.UNUSED,
    maxScore: max,
  });
  return (text, carry) => unigram.encode(text, carry);
}

/** SentencePiece BPE ids of normalized text, unknown pieces as bytes or one fused unknown id. */
function bpeEncoder(
  m: SentencePieceModel,
  pieces: Map<string, number>,
  reserved: Map<string, number>,
  userDefined: string[],
  unkId: number,
  byteIds: Int32Array | undefined,
): (text: string, carry?: EncodeCarry) => number[] {
  const bpe = new SentencePieceBpe({
    pieces,
    scores: m.pieces.map((p) => p.score),
    isUnused: (id) => m.pieces[id].type === PieceType.UNUSED,
    userDefined,
    pieceToId: (piece) => reserved.get(piece) ?? pieces.get(piece) ?? unkId,
  });
  return (text, carry) => {
    const out: number[] = [];
    let previousUnknown = carry?.previousUnknown ?? false;
    for (const [piece, id] of bpe.encode(text)) {
      const unknown = id === unkId;
      if (unknown && byteIds) for (const b of utf8(piece)) out.push(byteIds[b]);
      else if (!(unknown && previousUnknown)) out.push(id);
      previousUnknown = unknown;
    }
    if (carry) carry.previousUnknown = previousUnknown;
    return out;
  };
}

/**
 * SentencePiece's Decode: "▁" → " ", control pieces → nothing, the unknown piece → its surface
 * (" ⁇ "), runs of byte pieces → UTF-8 (each invalid byte one U+FFFD), and the dummy prefix's "▁"
 * dropped from the first piece (every leading "▁" piece when remove_extra_whitespaces is on).
 */
function decodePieces(ids: number[], m: SentencePieceModel, byteOf: Int32Array): string {
  let text = "";
  let pending: number[] = [];
  let atStart = true;
  let startSpaceSeen = false;
  for (const id of ids) {
    if (byteOf[id] >= 0) {
      pending.push(byteOf[id]);
      continue;
    }
    text += decodeBytes(pending);
    pending = [];
    if (startSpaceSeen || text.length > 0) atStart = false;
    const { type } = m.pieces[id];
    let piece = m.pieces[id].piece;
    startSpaceSeen = false;
    if (type === PieceType.CONTROL) continue;
    if (type === PieceType.UNKNOWN) {
      text += m.unkSurface;
      continue;
    }
    if (atStart && (m.addDummyPrefix || m.removeExtraWhitespaces) && piece.startsWith("▁")) {
      piece = piece.slice(1);
      startSpaceSeen = !m.removeExtraWhitespaces;
    }
    text += piece.replaceAll("▁", " ");
  }
  return text + decodeBytes(pending);
}

/** UTF-8 as SentencePiece's DecodeUTF8 reads it: an invalid byte is one U+FFFD and decoding goes on at the next byte. */
function decodeBytes(bytes: number[]): string {
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const len = b < 0x80 ? 1 : (b & 0xe0) === 0xc0 ? 2 : (b & 0xf0) === 0xe0 ? 3 : (b & 0xf8) === 0xf0 ? 4 : 0;
    let cp = len === 1 ? b : len === 2 ? b & 0x1f : len === 3 ? b & 0x0f : b & 0x07;
    let ok = len > 0 && i + len <= bytes.length;
    for (let k = 1; ok && k < len; k++) {
      ok = (bytes[i + k] & 0xc0) === 0x80;
      cp = (cp << 6) | (bytes[i + k] & 0x3f);
    }
    const least = [0, 0, 0x80, 0x800, 0x10000][len];
    if (ok && cp >= least && (cp < 0xd800 || (cp >= 0xe000 && cp <= 0x10ffff))) {
      out += String.fromCodePoint(cp);
      i += len;
    } else {
      out += "\uFFFD";
      i += 1;
    }
  }
  return out;
}
