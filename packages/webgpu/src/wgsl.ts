/**
 * WGSL building blocks shared by every kernel: the parameter block, storage bindings with typed
 * accessors, and exact conversions between the storage dtypes and f32.
 *
 * Every tensor buffer is bound as `array<u32>`. A kernel reads element i of any dtype through the
 * accessors generated for its binding (`x_f(i)` as f32, `x_i(i)` as i32, `x_raw(i)` as raw bits) and
 * writes whole 32-bit words, so f16/bf16 (2 per word) and u8 (4 per word) outputs never race
 * between invocations. f16 and bf16 are storage types here: kernels compute in f32 and the
 * conversions below are bit-exact ports of dtype.ts (round to nearest even), so they do not depend
 * on `shader-f16` or on how a driver rounds `pack2x16float`.
 */
import { byteSize, type DType } from "@lightning-ts/tensor";

/** Largest tensor rank the index-mapping kernels take (their parameter block has room for it). */
export const MAX_RANK = 8;

/** Parameter words per dispatch (one 256-byte uniform slot). */
export const PARAM_WORDS = 64;

export interface BindingSpec {
  name: string;
  /** Tensor dtype, for the accessors; omitted for raw u32 buffers. */
  dtype?: DType;
  /** read: read-only storage; rw: read_write; atomic: read_write array<atomic<u32>>. */
  access: "read" | "rw" | "atomic";
  /**
   * Bound as `array<vec4<u32>>` (16-byte words, no accessors) for kernels that move whole vectors.
   * Safe on every tensor buffer: pool size classes are multiples of 16 bytes.
   */
  vec4?: boolean;
}

/** Elements of `dtype` per 32-bit word and the bit width of one. */
export function packing(dtype: DType): { epw: number; bits: number; mask: string } {
  const size = byteSize(dtype);
  if (size === 8) throw new Error("f64 is not a WebGPU dtype");
  return { epw: 4 / size, bits: size * 8, mask: size === 4 ? "0xffffffffu" : size === 2 ? "0xffffu" : "0xffu" };
}

export const isFloatType = (d: DType) => d === "f32" || d === "f16" || d === "bf16";

/** Exact dtype conversions and a few math helpers; tiny, so every shader carries them. */
const COMMON = /* wgsl */ `
fn pu(i: u32) -> u32 { return P[i >> 2u][i & 3u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }
fn pi(i: u32) -> i32 { return bitcast<i32>(pu(i)); }

// Special values come from private variables: WGSL rejects infinities and NaN in constant expressions.
var<private> BITS_INF: u32 = 0x7f800000u;
var<private> BITS_NINF: u32 = 0xff800000u;
var<private> BITS_NAN: u32 = 0x7fc00000u;
fn pos_inf() -> f32 { return bitcast<f32>(BITS_INF); }
fn neg_inf() -> f32 { return bitcast<f32>(BITS_NINF); }
fn nan() -> f32 { return bitcast<f32>(BITS_NAN); }
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }

fn f16_to_f32(h: u32) -> f32 {
  let s = (h >> 15u) << 31u;
  let e = (h >> 10u) & 31u;
  let m = h & 1023u;
  if (e == 0u) {
    // Subnormal or zero: m * 2^-24 is exact in f32.
    let v = f32(m) * bitcast<f32>(0x33800000u);
    return bitcast<f32>(bitcast<u32>(v) | s);
  }
  if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

fn f32_to_f16(bits: u32) -> u32 {
  let sign = (bits >> 16u) & 0x8000u;
  let ex = (bits >> 23u) & 0xffu;
  var mant = bits & 0x7fffffu;
  if (ex == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u | (mant >> 13u), mant != 0u); }
  let e = i32(ex) - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant = mant | 0x800000u;
    let shift = u32(14 - e);
    let half = 1u << (shift - 1u);
    var r = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    if (rem > half || (rem == half && (r & 1u) == 1u)) { r = r + 1u; }
    return sign | r;
  }
  var r = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) == 1u)) { r = r + 1u; }
  return sign | r;
}

fn f32_to_bf16(bits: u32) -> u32 {
  if ((bits & 0x7fffffffu) > 0x7f800000u) { return ((bits >> 16u) | 0x40u) & 0xffffu; }
  return ((bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u) & 0xffffu;
}

// Float to integer as JavaScript stores into an Int32Array: truncate, then wrap modulo 2^32; NaN and
// infinities become 0.
fn f32_to_i32(x: f32) -> i32 {
  if (is_nan(x) || (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u) { return 0; }
  let t = trunc(x);
  if (abs(t) < 2147483648.0) { return i32(t); }
  // |t| >= 2^31 is a multiple of 256, so this reduction is exact.
  let r = t - 4294967296.0 * floor(t / 4294967296.0);
  return bitcast<i32>(u32(r));
}
`;

/** The accessors of one binding, by dtype. */
function accessors(b: BindingSpec): string {
  const { name: n, dtype } = b;
  if (!dtype || b.access === "atomic" || b.vec4) return "";
  const { bits } = packing(dtype);
  const raw =
    bits === 32
      ? `fn ${n}_raw(i: u32) -> u32 { return ${n}[i]; }`
      : bits === 16
        ? `fn ${n}_raw(i: u32) -> u32 { return (${n}[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu; }`
        : `fn ${n}_raw(i: u32) -> u32 { return (${n}[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu; }`;
  const asF32: Record<Exclude<DType, "f64">, string> = {
    f32: `bitcast<f32>(${n}[i])`,
    f16: `f16_to_f32(${n}_raw(i))`,
    bf16: `bitcast<f32>(${n}_raw(i) << 16u)`,
    i32: `f32(bitcast<i32>(${n}[i]))`,
    u8: `f32(${n}_raw(i))`,
  };
  const asI32 = dtype === "i32" ? `bitcast<i32>(${n}[i])` : dtype === "u8" ? `i32(${n}_raw(i))` : `f32_to_i32(${n}_f(i))`;
  return [
    raw,
    `fn ${n}_f(i: u32) -> f32 { return ${asF32[dtype as Exclude<DType, "f64">]}; }`,
    `fn ${n}_i(i: u32) -> i32 { return ${asI32}; }`,
  ].join("\n");
}

/** WGSL expression: the storage bits (masked to the element width) of the f32 expression `v` in `dtype`. */
export function encodeF(dtype: DType, v: string): string {
  switch (dtype) {
    case "f32":
      return `bitcast<u32>(${v})`;
    case "f16":
      return `f32_to_f16(bitcast<u32>(${v}))`;
    case "bf16":
      return `f32_to_bf16(bitcast<u32>(${v}))`;
    case "i32":
      return `bitcast<u32>(f32_to_i32(${v}))`;
    case "u8":
      return `(bitcast<u32>(f32_to_i32(${v})) & 0xffu)`;
    default:
      throw new Error(`no WebGPU encoding for ${dtype}`);
  }
}

/** WGSL expression: the storage bits of the i32 expression `v` in `dtype`. */
export function encodeI(dtype: DType, v: string): string {
  if (dtype === "i32") return `bitcast<u32>(${v})`;
  if (dtype === "u8") return `(bitcast<u32>(${v}) & 0xffu)`;
  return encodeF(dtype, `f32(${v})`);
}

export interface ShaderSpec {
  bindings: readonly BindingSpec[];
  workgroupSize: number;
  /** Extra module-scope declarations (functions, workgroup arrays, constants). */
  decls?: string;
  /**
   * The entry body. In scope: `lid` (local index), `wg` (linear workgroup index) and `gid`
   * (wg * workgroupSize + lid).
   */
  body: string;
  /** Leading comment lines: the binding shapes, e.g. "q: (B, H, T, D)". */
  doc?: readonly string[];
}

/** Assembles a compute shader: binding 0 is the parameter block, tensors follow from binding 1. */
export function shader(s: ShaderSpec): string {
  const decl = s.bindings
    .map((b, i) => {
      const ty = b.access === "atomic" ? "array<atomic<u32>>" : b.vec4 ? "array<vec4<u32>>" : "array<u32>";
      const access = b.access === "read" ? "read" : "read_write";
      return `@group(0) @binding(${i + 1}) var<storage, ${access}> ${b.name}: ${ty};`;
    })
    .join("\n");
  return [
    ...(s.doc ?? []).map((l) => `// ${l}`),
    `@group(0) @binding(0) var<uniform> P: array<vec4<u32>, ${PARAM_WORDS / 4}>;`,
    decl,
    COMMON,
    ...s.bindings.map(accessors),
    s.decls ?? "",
    `@compute @workgroup_size(${s.workgroupSize})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`,
    `  let wg = wid.x + wid.y * nwg.x;`,
    `  let gid = wg * ${s.workgroupSize}u + lid;`,
    s.body,
    `}`,
  ].join("\n");
}

/**
 * Body fragment for kernels that produce one output word per invocation: `elem` is a WGSL
 * expression of the element index `i` giving the element's bits. Params: n at `nAt`, words at `nAt + 1`.
 */
export function wordLoop(out: string, dtype: DType, elem: string, nAt = 0): string {
  const { epw, bits } = packing(dtype);
  if (epw === 1) {
    return `  let i = gid; if (i >= pu(${nAt}u)) { return; }\n  ${out}[i] = ${elem};`;
  }
  return `  let w = gid; if (w >= pu(${nAt + 1}u)) { return; }
  let n = pu(${nAt}u);
  var word = 0u;
  for (var e = 0u; e < ${epw}u; e = e + 1u) {
    let i = w * ${epw}u + e;
    if (i < n) { word = word | ((${elem}) << (e * ${bits}u)); }
  }
  ${out}[w] = word;`;
}

/** Number of 32-bit words that hold `n` elements of `dtype`. */
export function wordCount(dtype: DType, n: number): number {
  return Math.ceil(n / packing(dtype).epw);
}

/**
 * WGSL function `name(i) -> u32`: the offset into an input of the output element i, where the
 * input is read through per-dimension strides (0 for broadcast dims) stored as parameters.
 * Params: rank at `rankAt`, output shape at `shapeAt`, strides at `stridesAt` (MAX_RANK words each).
 */
export function stridedIndexFn(name: string, rankAt: number, shapeAt: number, stridesAt: number, baseAt?: number): string {
  return `fn ${name}(i: u32) -> u32 {
  var r = i;
  var off = ${baseAt === undefined ? "0u" : `pu(${baseAt}u)`};
  for (var d = pu(${rankAt}u); d > 0u; d = d - 1u) {
    let dim = pu(${shapeAt}u + d - 1u);
    off = off + (r % dim) * pu(${stridesAt}u + d - 1u);
    r = r / dim;
  }
  return off;
}`;
}

/** Exact f32 constant as WGSL (bit pattern), so literals never round differently. */
export function f32Const(x: number): string {
  const f = new Float32Array([x]);
  return `bitcast<f32>(0x${new Uint32Array(f.buffer)[0].toString(16)}u)`;
}
