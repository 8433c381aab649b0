/**
 * SentencePiece `.model` files (a `ModelProto` protobuf) of BPE type, such as the TNL-1/2 Baichuan
 * tokenizer (64,000 pieces, byte fallback). Only the fields BPE encoding needs are read.
 *
 * SentencePiece BPE merges the adjacent pair whose joined piece has the highest score (ties to the
 * left), so the merge table holds every split of every normal piece into two pieces, ranked by score.
 */
import { bytePiece, parseBytePiece, utf8 } from "./bytes.js";
import { fail, prose } from "./errors.js";
import { MergeTable, mergesSpanNewline } from "./merge.js";
import type { Normalizer } from "./pretokenize.js";
import { collapseSpaces, prepend, replace } from "./pretokenize.js";
import type { SpecialToken } from "./tokenizer.js";
import { Tokenizer } from "./tokenizer.js";

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
  normalizerName: string;
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

/** Parses a `.model` file into its pieces and the settings BPE encoding needs. */
export function parseSentencePieceModel(data: Uint8Array): SentencePieceModel {
  const m: SentencePieceModel = {
    pieces: [],
    modelType: 1,
    byteFallback: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    normalizerName: "nmt_nfkc",
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
    treatWhitespaceAsSuffix: false,
  };
  const top = new Reader(data, ".model file");
  top.fields((n, wire) => {
    if (wire !== 2 || n < 1 || n > 3) return false;
    const body = top.bytes();
    if (n === 1) m.pieces.push(parsePiece(new Reader(body, `.model piece ${m.pieces.length}`)));
    else if (n === 2) parseTrainerSpec(new Reader(body, ".model trainer_spec"), m);
    else parseNormalizerSpec(new Reader(body, ".model normalizer_spec"), m);
    return true;
  });
  if (m.pieces.length === 0) fail(".model file", "at least one piece", prose("none (empty or not a SentencePiece model)"));
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
    else if (n === 3 && wire === 0) m.addDummyPrefix = r.varint() !== 0;
    else if (n === 4 && wire === 0) m.removeExtraWhitespaces = r.varint() !== 0;
    else if (n === 5 && wire === 0) m.escapeWhitespaces = r.varint() !== 0;
    else return false;
    return true;
  });
}

/**
 * Reads a SentencePiece BPE `.model` file. Control, unknown and user-defined pieces are special
 * tokens: found whole in the input text and never split.
 *
 * @example
 * const tok = loadSentencePieceModel(readFileSync("tokenizer.model"));
 * tok.encode("Hello", { addSpecialTokens: true }); // [bos, …]
 */
export function loadSentencePieceModel(data: Uint8Array): Tokenizer {
  const m = parseSentencePieceModel(data);
  if (m.modelType !== 2) fail(".model trainer_spec.model_type", "BPE", prose(MODEL_TYPES[m.modelType] ?? String(m.modelType)));
  if (m.treatWhitespaceAsSuffix) fail(".model trainer_spec.treat_whitespace_as_suffix", "false (not supported)", true);
  if (m.normalizerName !== "identity" && m.normalizerName !== "") {
    fail(".model normalizer_spec.name", '"identity" (precompiled normalization rules are not supported)', m.normalizerName);
  }
  const space = m.escapeWhitespaces ? "▁" : " ";
  const tokens = m.pieces.map((p) => p.piece);
  const idOf = new Map<string, number>();
  tokens.forEach((t, id) => idOf.has(t) || idOf.set(t, id));

  const specials: SpecialToken[] = [];
  const charIds = new Map<string, number>();
  const byteFallback = m.byteFallback ? new Int32Array(256).fill(-1) : undefined;
  const bytes = m.pieces.map((p, id) => {
    if (p.type === PieceType.BYTE) {
      const b = parseBytePiece(p.piece) ?? fail(`.model piece ${id}`, "a byte piece spelled <0xNN>", p.piece);
      if (byteFallback) byteFallback[b] = id;
      return Uint8Array.of(b);
    }
    if (p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN || p.type === PieceType.USER_DEFINED) {
      specials.push({ id, content: p.piece, special: p.type !== PieceType.USER_DEFINED });
      return utf8(p.piece);
    }
    if (p.type === PieceType.NORMAL && [...p.piece].length === 1) charIds.set(p.piece, id);
    return utf8(p.piece.replaceAll(space, " "));
  });
  if (byteFallback) {
    const missing = byteFallback.indexOf(-1);
    if (missing >= 0) fail(".model pieces", `all 256 byte pieces (byte_fallback is on)`, prose(`no piece ${bytePiece(missing)}`));
  }

  // Rank every split of every normal piece by the piece's score, best first; equal scores by id.
  const merges = new MergeTable();
  const normal = m.pieces.map((p, id) => ({ p, id })).filter(({ p }) => p.type === PieceType.NORMAL);
  normal.sort((a, b) => b.p.score - a.p.score || a.id - b.id);
  const isNormal = (id: number | undefined) => id !== undefined && m.pieces[id].type === PieceType.NORMAL;
  for (const { p, id } of normal) {
    const chars = [...p.piece];
    let prefix = "";
    for (let i = 1; i < chars.length; i++) {
      prefix += chars[i - 1];
      const left = idOf.get(prefix);
      const right = idOf.get(p.piece.slice(prefix.length));
      if (isNormal(left) && isNormal(right)) merges.add(left!, right!, id);
    }
  }

  const normalizers: Normalizer[] = [];
  if (m.removeExtraWhitespaces) normalizers.push(collapseSpaces);
  if (m.addDummyPrefix) normalizers.push(prepend(" ", true));
  if (m.escapeWhitespaces) normalizers.push(replace(" ", "▁"));
  const unk = m.unkId >= 0 && m.unkId < tokens.length ? m.unkId : undefined;
  return new Tokenizer({
    kind: "sentencepiece",
    tokens,
    bytes,
    merges,
    initial: { kind: "chars", charIds, byteFallback, unk, fuseUnk: true },
    normalizers,
    preTokenizers: [],
    specials,
    ignoreMerges: false,
    stripLeadingSpace: m.addDummyPrefix,
    template: { prefix: m.bosId >= 0 && m.bosId < tokens.length ? [m.bosId] : [], suffix: [] },
    splitsAfterNewline: !mergesSpanNewline(merges, bytes),
  });
}
