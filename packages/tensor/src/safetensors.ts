/**
 * The safetensors format, platform-neutral: header parsing with full validation, layout and
 * serialisation, and conversion between stored entries and tensors. File IO lives in
 * `safetensors-node.ts`; in a browser, fetch the bytes and call `decodeSafetensors`.
 *
 * Layout: an 8-byte little-endian u64 N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {key: string}}`, then the
 * raw little-endian tensor bytes; offsets count from the first byte after the header.
 */
import type { Backend } from "./backend.js";
import type { DType } from "./dtype.js";
import { fromStorage } from "./api/ops.js";
import { Tensor } from "./tensor.js";

export type SafetensorsDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const ITEM_SIZE: Record<SafetensorsDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** How each stored dtype becomes one of ours: all exact (I64 range-checked). */
const TO_DTYPE: Record<SafetensorsDType, DType> = { F64: "f64", F32: "f32", F16: "f16", BF16: "bf16", I64: "i32", I32: "i32", I16: "i32", I8: "i32", U8: "u8", BOOL: "u8" };
const FROM_DTYPE: Record<DType, SafetensorsDType> = { f64: "F64", f32: "F32", f16: "F16", bf16: "BF16", i32: "I32", u8: "U8" };

/** Headers above this are refused before anything is allocated (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

export function isSafetensorsDType(x: unknown): x is SafetensorsDType {
  return typeof x === "string" && Object.hasOwn(ITEM_SIZE, x);
}

/** A stored tensor as bytes: little-endian, row-major. */
export interface RawTensor {
  dtype: SafetensorsDType;
  shape: number[];
  bytes: Uint8Array;
}

export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Byte range relative to `dataStart`, as in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** In file order of `begin`. */
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** File offset of the data region: 8 + N. */
  dataStart: number;
}

/** Every problem with a safetensors file; the message starts with the file (or source) name. */
export class SafetensorsError extends Error {
  constructor(
    readonly source: string,
    readonly problem: string,
  ) {
    super(`${source}: ${problem}`);
    this.name = "SafetensorsError";
  }
}

function fail(source: string, problem: string): never {
  throw new SafetensorsError(source, problem);
}

function checkLittleEndian(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error("safetensors: big-endian hosts are not supported");
}

/**
 * The header length N from the first 8 bytes of a file of `fileSize` bytes, checked against the size.
 *
 * @example
 * const n = headerLength(first8Bytes, fileSize, "model.safetensors");
 */
export function headerLength(prefix: Uint8Array, fileSize: number, source = "safetensors"): number {
  if (fileSize < 8 || prefix.length < 8) fail(source, `truncated: ${Math.min(fileSize, prefix.length)} bytes, but the header length alone takes 8`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (n > fileSize - 8) fail(source, `header length ${n} is beyond the file size (${fileSize} bytes, so at most ${fileSize - 8})`);
  if (n > MAX_HEADER_BYTES) fail(source, `header length ${n} is above the ${MAX_HEADER_BYTES}-byte limit`);
  if (n < 2) fail(source, `header length ${n} is too small for a JSON object`);
  return n;
}

/**
 * Parses and validates the N header bytes of a file of `fileSize` bytes: JSON, known dtypes,
 * shape × item size = end − begin, offsets inside the data region, no two tensors overlapping.
 *
 * @example
 * const header = parseHeader(bytes.subarray(8, 8 + n), bytes.length, "model.safetensors");
 */
export function parseHeader(json: Uint8Array, fileSize: number, source = "safetensors"): SafetensorsHeader {
  let text: string;
  let parsed: unknown;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
  } catch {
    fail(source, "header is not valid UTF-8");
  }
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    fail(source, `header is not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(parsed)) fail(source, "header JSON is not an object");
  const dataStart = 8 + json.length;
  const dataLength = fileSize - dataStart;
  const metadata: Record<string, string> = dict();
  const entries: SafetensorsEntry[] = [];
  for (const [name, value] of Object.entries(parsed)) {
    if (name === "__metadata__") {
      if (!isPlainObject(value)) fail(source, "__metadata__ is not an object");
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") fail(source, `__metadata__["${k}"] is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    entries.push(parseEntry(name, value, dataLength, source));
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  // Empty tensors occupy no bytes, so they may sit anywhere; compare each other one with the
  // non-empty tensor that reaches furthest before it.
  let last: SafetensorsEntry | null = null;
  for (const cur of entries) {
    if (cur.end === cur.begin) continue;
    if (last && cur.begin < last.end) {
      fail(source, `tensors "${last.name}" [${last.begin}, ${last.end}) and "${cur.name}" [${cur.begin}, ${cur.end}) overlap`);
    }
    if (!last || cur.end > last.end) last = cur;
  }
  return { entries, metadata, dataStart };
}

function parseEntry(name: string, value: unknown, dataLength: number, source: string): SafetensorsEntry {
  const where = `tensor "${name}"`;
  if (!isPlainObject(value)) fail(source, `${where} is not an object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isSafetensorsDType(dtype)) {
    fail(source, `${where} has unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(ITEM_SIZE).join(", ")})`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(source, `${where} has shape ${JSON.stringify(shape)}, expected an array of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    fail(source, `${where} has data_offsets ${JSON.stringify(offsets)}, expected [begin, end] of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(source, `${where} has data_offsets [${begin}, ${end}] with begin after end`);
  if (end > dataLength) fail(source, `${where} has data_offsets [${begin}, ${end}] beyond the data region of ${dataLength} bytes (truncated file?)`);
  let bytes = ITEM_SIZE[dtype];
  for (const d of shape as number[]) bytes *= d;
  if (bytes !== end - begin) {
    fail(source, `${where}: shape [${shape.join(", ")}] of ${dtype} needs ${bytes} bytes, but data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  return { name, dtype, shape: [...(shape as number[])], begin, end };
}

/** A record without a prototype, so that any tensor name (even "__proto__") is an ordinary key. */
export function dict<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/**
 * A whole file in memory: the header and each tensor as a view into `bytes` (no copies).
 *
 * @example
 * const { header, tensors } = decodeSafetensors(new Uint8Array(await (await fetch(url)).arrayBuffer()));
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  options: { names?: readonly string[]; source?: string } = {},
): { header: SafetensorsHeader; tensors: Record<string, RawTensor> } {
  const source = options.source ?? "safetensors";
  const n = headerLength(bytes, bytes.length, source);
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.length, source);
  const tensors: Record<string, RawTensor> = dict();
  for (const e of selectEntries(header, options.names, source)) {
    tensors[e.name] = { dtype: e.dtype, shape: e.shape, bytes: bytes.subarray(header.dataStart + e.begin, header.dataStart + e.end) };
  }
  return { header, tensors };
}

/** The entries named in `names` (all when undefined), failing on a name the file lacks. */
export function selectEntries(header: SafetensorsHeader, names: readonly string[] | undefined, source = "safetensors"): SafetensorsEntry[] {
  if (names === undefined) return header.entries;
  const byName = new Map(header.entries.map((e) => [e.name, e]));
  return names.map((name) => byName.get(name) ?? fail(source, `no tensor named "${name}"`));
}

/**
 * A tensor from stored bytes. F64/F32/F16/BF16/I32/U8 keep their bits; I64, I16 and I8 become i32
 * (I64 values outside the i32 range are an error), BOOL becomes u8 0/1.
 *
 * @example
 * const w = toTensor({ dtype: "F32", shape: [2], bytes: new Uint8Array(8) });
 */
export function toTensor(raw: RawTensor, options: { name?: string; source?: string; backend?: Backend } = {}): Tensor {
  checkLittleEndian();
  const source = options.source ?? "safetensors";
  const where = `tensor "${options.name ?? "?"}"`;
  const n = raw.shape.reduce((a, b) => a * b, 1);
  if (raw.bytes.byteLength !== n * ITEM_SIZE[raw.dtype]) {
    fail(source, `${where} has ${raw.bytes.byteLength} bytes for ${raw.dtype} [${raw.shape.join(", ")}]`);
  }
  const dtype = TO_DTYPE[raw.dtype];
  const view = new DataView(raw.bytes.buffer, raw.bytes.byteOffset, raw.bytes.byteLength);
  let data: Uint8Array | Int32Array;
  switch (raw.dtype) {
    case "I64": {
      data = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const lo = view.getInt32(8 * i, true);
        const hi = view.getInt32(8 * i + 4, true);
        // Fits in i32 exactly when the high word is the sign extension of the low one.
        if (hi !== lo >> 31) {
          fail(source, `${where}: I64 value ${view.getBigInt64(8 * i, true)} at element ${i} does not fit in i32`);
        }
        data[i] = lo;
      }
      break;
    }
    case "I16":
      data = Int32Array.from({ length: n }, (_, i) => view.getInt16(2 * i, true));
      break;
    case "I8":
      data = Int32Array.from({ length: n }, (_, i) => view.getInt8(i));
      break;
    case "BOOL":
      data = Uint8Array.from(raw.bytes, (b) => (b !== 0 ? 1 : 0));
      break;
    default:
      data = raw.bytes;
  }
  return fromStorage(data, raw.shape, dtype, options.backend);
}

/** The stored form of a tensor (its raw storage bytes). */
export async function fromTensor(t: Tensor): Promise<RawTensor> {
  checkLittleEndian();
  return { dtype: FROM_DTYPE[t.dtype], shape: [...t.shape], bytes: await t.bytes() };
}

export interface LayoutItem {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
}

/**
 * The file prefix (8-byte length + JSON header, padded with spaces to a multiple of 8) and the
 * order in which tensor bytes follow it. Larger item sizes come first so that every tensor is
 * naturally aligned in the file, as the reference implementation does.
 *
 * @example
 * const { prefix, order } = layout([{ name: "w", dtype: "F32", shape: [2, 2] }]);
 */
export function layout(items: readonly LayoutItem[], metadata?: Record<string, string>): { prefix: Uint8Array; order: LayoutItem[]; dataBytes: number } {
  const header: Record<string, unknown> = dict();
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== "string") throw new TypeError(`safetensors metadata "${k}" must be a string`);
    header.__metadata__ = metadata;
  }
  const seen = new Set<string>();
  for (const it of items) {
    if (it.name === "__metadata__") throw new TypeError(`safetensors: "__metadata__" cannot be a tensor name`);
    if (seen.has(it.name)) throw new TypeError(`safetensors: tensor name "${it.name}" given twice`);
    seen.add(it.name);
  }
  const order = [...items].sort((a, b) => ITEM_SIZE[b.dtype] - ITEM_SIZE[a.dtype]);
  let offset = 0;
  for (const it of order) {
    const bytes = it.shape.reduce((a, b) => a * b, ITEM_SIZE[it.dtype]);
    header[it.name] = { dtype: it.dtype, shape: it.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(prefix.buffer).setUint32(0, padded, true); // below 2^32: the high word stays 0
  prefix.set(json, 8);
  return { prefix, order, dataBytes: offset };
}

/** The stored form of tensors and raw entries, with the byte length checked. */
export async function toRaw(tensors: Record<string, Tensor | RawTensor>): Promise<Record<string, RawTensor>> {
  const out: Record<string, RawTensor> = dict();
  for (const [name, t] of Object.entries(tensors)) {
    const raw = t instanceof Tensor ? await fromTensor(t) : t;
    if (!isSafetensorsDType(raw.dtype)) throw new TypeError(`safetensors: tensor "${name}" has unknown dtype ${String(raw.dtype)}`);
    const want = raw.shape.reduce((a, b) => a * b, ITEM_SIZE[raw.dtype]);
    if (raw.bytes.byteLength !== want) {
      throw new TypeError(`safetensors: tensor "${name}" has ${raw.bytes.byteLength} bytes, but ${raw.dtype} [${raw.shape.join(", ")}] needs ${want}`);
    }
    out[name] = raw;
  }
  return out;
}

/**
 * A complete safetensors file in memory.
 *
 * @example
 * const bytes = await encodeSafetensors({ w: tensor([1, 2, 3]) }, { format: "pt" });
 */
export async function encodeSafetensors(tensors: Record<string, Tensor | RawTensor>, metadata?: Record<string, string>): Promise<Uint8Array> {
  const raw = await toRaw(tensors);
  const { prefix, order, dataBytes } = layout(
    Object.entries(raw).map(([name, r]) => ({ name, dtype: r.dtype, shape: r.shape })),
    metadata,
  );
  const out = new Uint8Array(prefix.length + dataBytes);
  out.set(prefix);
  let at = prefix.length;
  for (const it of order) {
    out.set(raw[it.name].bytes, at);
    at += raw[it.name].bytes.byteLength;
  }
  return out;
}

/** Tensors from a safetensors file in memory; on an error, tensors already made are disposed. */
export function loadSafetensors(
  bytes: Uint8Array,
  options: { names?: readonly string[]; source?: string; backend?: Backend } = {},
): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const { header, tensors: raw } = decodeSafetensors(bytes, options);
  const tensors: Record<string, Tensor> = dict();
  try {
    for (const [name, r] of Object.entries(raw)) tensors[name] = toTensor(r, { name, source: options.source, backend: options.backend });
  } catch (err) {
    for (const t of Object.values(tensors)) t.dispose();
    throw err;
  }
  return { tensors, metadata: header.metadata };
}
