/**
 * Elementwise kernels: unary float ops, broadcasting binary and comparison ops, where, fill, cast,
 * copy. One invocation writes one 32-bit output word (1, 2 or 4 elements by dtype).
 *
 * Semantics follow cpu/elementwise.ts: i32 arithmetic wraps, integer division truncates and gives
 * 0 for a zero divisor, maximum/minimum propagate NaN, float→int casts truncate and wrap.
 */
import {
  BINARY_OPS,
  type BinaryOpName,
  COMPARE_OPS,
  type CompareOpName,
  encode,
  type Kernel,
  type KernelTable,
  sameShape,
  UNARY_OPS,
  type UnaryOpName,
} from "@lightning-ts/tensor";
import type { Runtime } from "../runtime.js";
import { encodeF, encodeI, f32Const, packing, stridedIndexFn, wordCount, wordLoop } from "../wgsl.js";
import { bstrides, checkRank, copyWords, groups, padded, type Ref, WG } from "./common.js";

const PIO2 = Math.PI / 2;
// π/2 split in three so that k·PIO2_1 and k·PIO2_2 are exact for the |k| < 2^12 quadrants we reduce.
const PIO2_1 = Math.fround(Math.round(PIO2 * 256) / 256);
const PIO2_2 = Math.fround(Math.round((PIO2 - PIO2_1) * 2 ** 20) / 2 ** 20);
const PIO2_3 = Math.fround(PIO2 - PIO2_1 - PIO2_2);

/**
 * Float helpers with the accuracy the conformance suite asks for: WGSL promises only 2^-11 absolute
 * error for sin/cos, and tanh from exp overflows to NaN, so these are written out.
 */
const MATH = /* wgsl */ `
fn lt_sincos(x: f32, want_cos: bool) -> f32 {
  let k = round(x * ${f32Const(2 / Math.PI)});
  let r = ((x - k * ${f32Const(PIO2_1)}) - k * ${f32Const(PIO2_2)}) - k * ${f32Const(PIO2_3)};
  let s = r * r;
  let sn = r + r * s * (${f32Const(-1.6666654611e-1)} + s * (${f32Const(8.3321608736e-3)} + s * ${f32Const(-1.9515295891e-4)}));
  let cs = 1.0 - 0.5 * s + s * s * (${f32Const(4.166664568298827e-2)} + s * (${f32Const(-1.388731625493765e-3)} + s * ${f32Const(2.443315711809948e-5)}));
  let q = u32(i32(k) & 3) + select(0u, 1u, want_cos);
  let v = select(sn, cs, (q & 1u) == 1u);
  return select(v, -v, (q & 2u) == 2u);
}
fn lt_tanh(x: f32) -> f32 {
  let a = abs(x);
  if (a < 1e-4) { return x; }
  let t = exp(-2.0 * a);
  let r = (1.0 - t) / (1.0 + t);
  return select(r, -r, x < 0.0);
}
fn lt_max(a: f32, b: f32) -> f32 {
  if (is_nan(a) || is_nan(b)) { return nan(); }
  return max(a, b);
}
fn lt_min(a: f32, b: f32) -> f32 {
  if (is_nan(a) || is_nan(b)) { return nan(); }
  return min(a, b);
}
// Math.pow for a negative base with an integer exponent, which WGSL's pow leaves undefined.
fn lt_pow(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (a > 0.0) { return pow(a, b); }
  if (a == 0.0) { return select(0.0, pos_inf(), b < 0.0); }
  if (trunc(b) != b) { return nan(); }
  let r = pow(-a, b);
  return select(r, -r, (abs(b) % 2.0) == 1.0);
}
// Math.pow(a, b) | 0 by wrapping multiplication (exact while the true power is below 2^53).
fn lt_ipow(a: i32, b: i32) -> i32 {
  if (b < 0) { return select(0, select(1, select(1, -1, (b & 1) == 1), a == -1), a == 1 || a == -1); }
  var r = 1;
  var base = a;
  var e = b;
  loop { if (e == 0) { break; } if ((e & 1) == 1) { r = r * base; } base = base * base; e = e >> 1; }
  return r;
}
`;

const UNARY: Record<UnaryOpName, (x: string) => string> = {
  neg: (x) => `-${x}`,
  abs: (x) => `abs(${x})`,
  exp: (x) => `exp(${x})`,
  log: (x) => `log(${x})`,
  sqrt: (x) => `sqrt(${x})`,
  rsqrt: (x) => `inverseSqrt(${x})`,
  square: (x) => `${x} * ${x}`,
  reciprocal: (x) => `1.0 / ${x}`,
  relu: (x) => `select(0.0, ${x}, ${x} > 0.0)`,
  silu: (x) => `${x} / (1.0 + exp(-${x}))`,
  sigmoid: (x) => `1.0 / (1.0 + exp(-${x}))`,
  tanh: (x) => `lt_tanh(${x})`,
  cos: (x) => `lt_sincos(${x}, true)`,
  sin: (x) => `lt_sincos(${x}, false)`,
  sign: (x) => `select(select(${x}, -1.0, ${x} < 0.0), 1.0, ${x} > 0.0)`,
};

const BINARY: Record<BinaryOpName, { f: (a: string, b: string) => string; i: (a: string, b: string) => string }> = {
  add: { f: (a, b) => `${a} + ${b}`, i: (a, b) => `${a} + ${b}` },
  sub: { f: (a, b) => `${a} - ${b}`, i: (a, b) => `${a} - ${b}` },
  mul: { f: (a, b) => `${a} * ${b}`, i: (a, b) => `${a} * ${b}` },
  div: { f: (a, b) => `${a} / ${b}`, i: (a, b) => `select(${a} / ${b}, 0, ${b} == 0)` },
  pow: { f: (a, b) => `lt_pow(${a}, ${b})`, i: (a, b) => `lt_ipow(${a}, ${b})` },
  maximum: { f: (a, b) => `lt_max(${a}, ${b})`, i: (a, b) => `max(${a}, ${b})` },
  minimum: { f: (a, b) => `lt_min(${a}, ${b})`, i: (a, b) => `min(${a}, ${b})` },
};

const COMPARE: Record<CompareOpName, string> = {
  equal: "==",
  notEqual: "!=",
  less: "<",
  lessEqual: "<=",
  greater: ">",
  greaterEqual: ">=",
};

// Params of broadcasting kernels: n, words, rank, out shape (8), then 8 strides per input.
const SHAPE_AT = 3;
const stridesAt = (input: number) => 11 + 8 * input;

type Mode = "same" | "scalar" | "bcast";
const modeOf = (x: Ref, out: Ref): Mode => (sameShape(x.shape, out.shape) ? "same" : x.size === 1 ? "scalar" : "bcast");

/** Index functions `idx_<name>(i)` mapping an output element to each input's element. */
function indexFns(names: readonly string[], modes: readonly Mode[]): string {
  return names
    .map((n, j) =>
      modes[j] === "same"
        ? `fn idx_${n}(i: u32) -> u32 { return i; }`
        : modes[j] === "scalar"
          ? `fn idx_${n}(i: u32) -> u32 { return 0u; }`
          : stridedIndexFn(`idx_${n}`, 2, SHAPE_AT, stridesAt(j)),
    )
    .join("\n");
}

/** Runs a broadcasting elementwise shader over `out`: `elem` gives the output bits of element i. */
function broadcastDispatch(rt: Runtime, op: string, ins: Ref[], names: string[], out: Ref, elem: string, extra = ""): void {
  checkRank(op, out.shape);
  const modes = ins.map((x) => modeOf(x, out));
  const nw = wordCount(out.dtype, out.size);
  const params = [out.size, nw, out.shape.length, ...padded(out.shape)];
  ins.forEach((x) => params.push(...bstrides(x.shape, out.shape)));
  rt.dispatch({
    key: `${op}:${ins.map((x, j) => `${x.dtype}/${modes[j]}`).join(",")}->${out.dtype}`,
    shader: () => ({
      doc: [...names.map((n, j) => `${n}: ${JSON.stringify(ins[j].shape)} ${ins[j].dtype} (broadcast)`), `y: (n) ${out.dtype}`],
      bindings: [...names.map((n, j) => ({ name: n, dtype: ins[j].dtype, access: "read" as const })), { name: "y", access: "rw" as const }],
      workgroupSize: WG,
      decls: MATH + indexFns(names, modes) + extra,
      body: wordLoop("y", out.dtype, elem),
    }),
    bindings: [...ins.map((x) => ({ buffer: x.storage, access: "read" as const })), { buffer: out.storage, access: "rw" }],
    params,
    workgroups: groups(nw),
  });
}

function unaryKernel(rt: Runtime, op: UnaryOpName): Kernel<UnaryOpName, GPUBuffer> {
  return ({ inputs: [x], outputs: [y] }) => {
    broadcastDispatch(rt, op, [x], ["a"], y, encodeF(y.dtype, UNARY[op]("a_f(idx_a(i))")));
  };
}

function binaryKernel(rt: Runtime, op: BinaryOpName): Kernel<BinaryOpName, GPUBuffer> {
  return ({ inputs: [a, b], outputs: [y] }) => {
    const elem =
      y.dtype === "i32"
        ? encodeI("i32", `(${BINARY[op].i("a_i(idx_a(i))", "b_i(idx_b(i))")})`)
        : encodeF(y.dtype, `(${BINARY[op].f("a_f(idx_a(i))", "b_f(idx_b(i))")})`);
    broadcastDispatch(rt, op, [a, b], ["a", "b"], y, elem);
  };
}

function compareKernel(rt: Runtime, op: CompareOpName): Kernel<CompareOpName, GPUBuffer> {
  return ({ inputs: [a, b], outputs: [y] }) => {
    // i32 compares as integers (f32 would round large values); the other dtypes are exact in f32.
    const get = a.dtype === "i32" ? "i" : "f";
    const elem = `select(0u, 1u, a_${get}(idx_a(i)) ${COMPARE[op]} b_${get}(idx_b(i)))`;
    broadcastDispatch(rt, op, [a, b], ["a", "b"], y, elem);
  };
}

export function elementwiseKernels(rt: Runtime) {
  const where: Kernel<"where", GPUBuffer> = ({ inputs: [c, a, b], outputs: [y] }) => {
    // Raw bits move unchanged: selecting needs no conversion.
    broadcastDispatch(rt, "where", [c, a, b], ["c", "a", "b"], y, `select(b_raw(idx_b(i)), a_raw(idx_a(i)), c_raw(idx_c(i)) != 0u)`);
  };

  const fill: Kernel<"fill", GPUBuffer> = ({ outputs: [y], attrs }) => {
    const { epw, bits } = packing(y.dtype);
    // The element's bits as the CPU stores them (Float32Array / Int32Array / Uint8Array rules).
    const raw = new Uint8Array(4);
    raw.set(new Uint8Array(encode(y.dtype, [attrs.value]).buffer));
    const el = new DataView(raw.buffer).getUint32(0, true);
    let word = 0;
    for (let e = 0; e < epw; e++) word |= el << (e * bits);
    const nw = wordCount(y.dtype, y.size);
    rt.dispatch({
      key: "fill",
      shader: () => ({
        doc: ["y: (words) u32"],
        bindings: [{ name: "y", access: "rw" }],
        workgroupSize: WG,
        body: `  if (gid < pu(0u)) { y[gid] = pu(1u); }`,
      }),
      bindings: [{ buffer: y.storage, access: "rw" }],
      params: [nw, word >>> 0],
      workgroups: groups(nw),
    });
  };

  const cast: Kernel<"cast", GPUBuffer> = ({ inputs: [x], outputs: [y] }) => {
    const from = x.dtype;
    const to = y.dtype;
    const elem =
      from === to ? "a_raw(i)" : from === "i32" || (from === "u8" && (to === "i32" || to === "u8")) ? encodeI(to, "a_i(i)") : encodeF(to, "a_f(i)");
    broadcastDispatch(rt, "cast", [x], ["a"], y, elem);
  };

  const copy: Kernel<"copy", GPUBuffer> = ({ inputs: [x], outputs: [y] }) => {
    copyWords(rt, x.storage, 0, y.storage, wordCount(y.dtype, y.size));
  };

  return {
    ...(Object.fromEntries(UNARY_OPS.map((op) => [op, unaryKernel(rt, op)])) as { [K in UnaryOpName]: Kernel<K, GPUBuffer> }),
    ...(Object.fromEntries(BINARY_OPS.map((op) => [op, binaryKernel(rt, op)])) as { [K in BinaryOpName]: Kernel<K, GPUBuffer> }),
    ...(Object.fromEntries(COMPARE_OPS.map((op) => [op, compareKernel(rt, op)])) as { [K in CompareOpName]: Kernel<K, GPUBuffer> }),
    where,
    fill,
    cast,
    copy,
  } satisfies Partial<KernelTable<GPUBuffer>>;
}
