/** Elementwise CPU kernels: unary float ops, broadcasting binary and comparison ops, where, fill, cast, copy. */
import type { Kernel, KernelTable } from "../backend.js";
import { BINARY_OPS, type BinaryOpName, COMPARE_OPS, type CompareOpName, UNARY_OPS, type UnaryOpName } from "../ops/attrs.js";
import { forEachBroadcastRow } from "./iterate.js";
import { type CpuStorage, readAny, readFloat, storeAs, view, writeFloat } from "./storage.js";

const UNARY: { [K in UnaryOpName]: (x: number) => number } = {
  neg: (x) => -x,
  abs: Math.abs,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  square: (x) => x * x,
  reciprocal: (x) => 1 / x,
  relu: (x) => (x > 0 ? x : 0),
  silu: (x) => x / (1 + Math.exp(-x)),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  tanh: Math.tanh,
  cos: Math.cos,
  sin: Math.sin,
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : x),
};

/** i32 arithmetic wraps like C; integer division truncates toward zero. */
const BINARY: { [K in BinaryOpName]: { float: (a: number, b: number) => number; int: (a: number, b: number) => number } } = {
  add: { float: (a, b) => a + b, int: (a, b) => (a + b) | 0 },
  sub: { float: (a, b) => a - b, int: (a, b) => (a - b) | 0 },
  mul: { float: (a, b) => a * b, int: (a, b) => Math.imul(a, b) },
  div: { float: (a, b) => a / b, int: (a, b) => (b === 0 ? 0 : (a / b) | 0) },
  pow: { float: Math.pow, int: (a, b) => Math.pow(a, b) | 0 },
  maximum: { float: (a, b) => (a !== a || b !== b ? NaN : Math.max(a, b)), int: Math.max },
  minimum: { float: (a, b) => (a !== a || b !== b ? NaN : Math.min(a, b)), int: Math.min },
};

const COMPARE: { [K in CompareOpName]: (a: number, b: number) => boolean } = {
  equal: (a, b) => a === b,
  notEqual: (a, b) => a !== b,
  less: (a, b) => a < b,
  lessEqual: (a, b) => a <= b,
  greater: (a, b) => a > b,
  greaterEqual: (a, b) => a >= b,
};

function unaryKernel(op: UnaryOpName): Kernel<UnaryOpName, CpuStorage> {
  const f = UNARY[op];
  return ({ inputs: [x], outputs: [y] }) => {
    const src = readFloat(x!);
    const { out, commit } = writeFloat(y!);
    for (let i = 0; i < src.length; i++) out[i] = f(src[i]!);
    commit();
  };
}

function binaryKernel(op: BinaryOpName): Kernel<BinaryOpName, CpuStorage> {
  return ({ inputs: [a, b], outputs: [y] }) => {
    const isInt = a!.dtype === "i32";
    const f = isInt ? BINARY[op].int : BINARY[op].float;
    const va = isInt ? (view(a!) as Int32Array) : readFloat(a!);
    const vb = isInt ? (view(b!) as Int32Array) : readFloat(b!);
    const { out, commit } = isInt ? { out: view(y!) as Int32Array, commit() {} } : writeFloat(y!);
    forEachBroadcastRow(y!.shape, [a!.shape, b!.shape], (o, [ia, ib], n, [sa, sb]) => {
      for (let j = 0; j < n; j++) out[o + j] = f(va[ia! + j * sa!]!, vb[ib! + j * sb!]!);
    });
    commit();
  };
}

function compareKernel(op: CompareOpName): Kernel<CompareOpName, CpuStorage> {
  const f = COMPARE[op];
  return ({ inputs: [a, b], outputs: [y] }) => {
    const va = readAny(a!);
    const vb = readAny(b!);
    const out = view(y!) as Uint8Array;
    forEachBroadcastRow(y!.shape, [a!.shape, b!.shape], (o, [ia, ib], n, [sa, sb]) => {
      for (let j = 0; j < n; j++) out[o + j] = f(va[ia! + j * sa!]!, vb[ib! + j * sb!]!) ? 1 : 0;
    });
  };
}

const where: Kernel<"where", CpuStorage> = ({ inputs: [c, a, b], outputs: [y] }) => {
  const vc = view(c!) as Uint8Array;
  // Raw storage moves unchanged: no conversion is needed to select between same-dtype values.
  const va = view(a!);
  const vb = view(b!);
  const out = view(y!);
  forEachBroadcastRow(y!.shape, [c!.shape, a!.shape, b!.shape], (o, [ic, ia, ib], n, [sc, sa, sb]) => {
    for (let j = 0; j < n; j++) out[o + j] = vc[ic! + j * sc!] ? va[ia! + j * sa!]! : vb[ib! + j * sb!]!;
  });
};

const fill: Kernel<"fill", CpuStorage> = ({ outputs: [y], attrs }) => {
  if (y!.size === 0) return;
  storeAs({ ...y!, size: 1 }, [attrs.value]);
  const v = view(y!);
  v.fill(v[0]!);
};

/** Float → int casts truncate toward zero (as C and PyTorch do); NaN becomes 0. */
const cast: Kernel<"cast", CpuStorage> = ({ inputs: [x], outputs: [y] }) => {
  if (x!.dtype === y!.dtype) {
    view(y!).set(view(x!) as never);
    return;
  }
  const src = readAny(x!);
  if (y!.dtype === "i32" || y!.dtype === "u8") {
    const dst = view(y!);
    for (let i = 0; i < src.length; i++) dst[i] = Math.trunc(src[i]!) || 0;
  } else {
    storeAs(y!, src);
  }
};

const copy: Kernel<"copy", CpuStorage> = ({ inputs: [x], outputs: [y] }) => {
  view(y!).set(view(x!) as never);
};

type ElementwiseOps = UnaryOpName | BinaryOpName | CompareOpName | "where" | "fill" | "cast" | "copy";

export const elementwiseKernels = {
  ...(Object.fromEntries(UNARY_OPS.map((op) => [op, unaryKernel(op)])) as { [K in UnaryOpName]: Kernel<K, CpuStorage> }),
  ...(Object.fromEntries(BINARY_OPS.map((op) => [op, binaryKernel(op)])) as { [K in BinaryOpName]: Kernel<K, CpuStorage> }),
  ...(Object.fromEntries(COMPARE_OPS.map((op) => [op, compareKernel(op)])) as { [K in CompareOpName]: Kernel<K, CpuStorage> }),
  where,
  fill,
  cast,
  copy,
} satisfies Pick<KernelTable<CpuStorage>, ElementwiseOps>;
