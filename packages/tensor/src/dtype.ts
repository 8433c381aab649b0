/**
 * Data types, their byte sizes and exact conversions for the 16-bit float storage types.
 *
 * `f16` and `bf16` are storage types: the CPU backend keeps their raw bits in a `Uint16Array` and
 * computes in f32. Conversions from f32 round to nearest, ties to even, as IEEE 754 requires.
 */

export type DType = "f32" | "f64" | "f16" | "bf16" | "i32" | "u8";
export type FloatDType = "f32" | "f64" | "f16" | "bf16";

/** f64 exists for float64 oracles and finite-difference gradient checks; GPU backends do not offer it. */
export const DTYPES: readonly DType[] = ["f32", "f64", "f16", "bf16", "i32", "u8"];

export function isDType(x: unknown): x is DType {
  return typeof x === "string" && (DTYPES as readonly string[]).includes(x);
}

export function isFloat(dtype: DType): dtype is FloatDType {
  return dtype === "f32" || dtype === "f64" || dtype === "f16" || dtype === "bf16";
}

export function byteSize(dtype: DType): number {
  switch (dtype) {
    case "f64":
      return 8;
    case "f32":
    case "i32":
      return 4;
    case "f16":
    case "bf16":
      return 2;
    case "u8":
      return 1;
  }
}

/** The typed array that holds a dtype's raw storage. */
export type StorageArray = Float32Array | Float64Array | Int32Array | Uint16Array | Uint8Array;
/** What `Tensor.data()` returns: f16/bf16 decoded to f32, f64 as it is. */
export type DataArray = Float32Array | Float64Array | Int32Array | Uint8Array;

export function storageView(dtype: DType, buffer: ArrayBufferLike, byteOffset = 0, length?: number): StorageArray {
  switch (dtype) {
    case "f32":
      return new Float32Array(buffer, byteOffset, length);
    case "f64":
      return new Float64Array(buffer, byteOffset, length);
    case "i32":
      return new Int32Array(buffer, byteOffset, length);
    case "f16":
    case "bf16":
      return new Uint16Array(buffer, byteOffset, length);
    case "u8":
      return new Uint8Array(buffer, byteOffset, length);
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bits of the float32 nearest to `x`. */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

export function fromF32Bits(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0];
}

/** float32 bits → bfloat16 bits, round to nearest even; NaN stays NaN (quiet). */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

export function bf16ToF32(h: number): number {
  return fromF32Bits(h << 16);
}

/** float32 bits → IEEE half bits, round to nearest even, overflow to ±Inf, NaN stays NaN. */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Result is subnormal (or zero): value / 2^-24, rounded.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1) === 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent, up to Inf.
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++;
  return sign | r;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function encodeF16(x: number): number {
  return f32BitsToF16(f32Bits(x));
}

export function encodeBf16(x: number): number {
  return f32BitsToBf16(f32Bits(x));
}

/** The value a dtype actually stores for `x` (rounding as the dtype does). */
export function roundTo(dtype: DType, x: number): number {
  switch (dtype) {
    case "f32":
      return Math.fround(x);
    case "f64":
      return x;
    case "f16":
      return f16ToF32(encodeF16(x));
    case "bf16":
      return bf16ToF32(encodeBf16(x));
    case "i32":
      return x | 0;
    case "u8":
      return x & 0xff;
  }
}

/** Decode storage to numbers: f16/bf16 become f32, other types are returned as they are. */
export function decode(dtype: DType, raw: StorageArray): DataArray {
  if (dtype === "f16" || dtype === "bf16") {
    const src = raw as Uint16Array;
    const out = new Float32Array(src.length);
    const conv = dtype === "f16" ? f16ToF32 : bf16ToF32;
    for (let i = 0; i < src.length; i++) out[i] = conv(src[i]);
    return out;
  }
  return raw as DataArray;
}

/** Encode numbers into the storage array of `dtype` (a new array). */
export function encode(dtype: DType, values: ArrayLike<number>): StorageArray {
  const n = values.length;
  switch (dtype) {
    case "f32":
      return Float32Array.from(values);
    case "f64":
      return Float64Array.from(values);
    case "i32":
      return Int32Array.from(values);
    case "u8":
      return Uint8Array.from(values);
    case "f16":
    case "bf16": {
      const out = new Uint16Array(n);
      const conv = dtype === "f16" ? encodeF16 : encodeBf16;
      for (let i = 0; i < n; i++) out[i] = conv(values[i]);
      return out;
    }
  }
}
