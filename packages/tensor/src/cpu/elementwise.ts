/** Elementwise CPU kernels: unary float ops, broadcasting binary and comparison ops, where, fill, cast, copy. */
import type { Kernel, KernelTable } from "../backend.js";
import { BINARY_OPS, type BinaryOpName, COMPARE_OPS, type CompareOpName, UNARY_OPS, type UnaryOpName } from "../ops/attrs.js";
import { forEachBroadcastRow } from "./iterate.js";
import { sameShape } from "../shape.js";
import { type CpuStorage, type FloatArray, readAny, readFloat, storeAs, view, writeFloat } from "./storage.js";

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

/** A float row loop: out[o + j] = f(a[ia + j·sa], b[ib + j·sb]) for j < n. */
type Row = (out: FloatArray, o: number, a: FloatArray, ia: number, sa: number, b: FloatArray, ib: number, sb: number, n: number) => void;

/**
 * One loop per hot op, so each loop body is monomorphic and inlined by the JIT (a shared loop
 * calling `f` per element is several times slower); the rest go through their scalar function.
 */
const FLOAT_ROWS: Partial<Record<BinaryOpName, Row>> = {
  add: (out, o, a, ia, sa, b, ib, sb, n) => {
    for (let j = 0; j < n; j++) out[o + j] = a[ia + j * sa] + b[ib + j * sb];
  },
  sub: (out, o, a, ia, sa, b, ib, sb, n) => {
    for (let j = 0; j < n; j++) out[o + j] = a[ia + j * sa] - b[ib + j * sb];
  },
  mul: (out, o, a, ia, sa, b, ib, sb, n) => {
    for (let j = 0; j < n; j++) out[o + j] = a[ia + j * sa] * b[ib + j * sb];
  },
  div: (out, o, a, ia, sa, b, ib, sb, n) => {
    for (let j = 0; j < n; j++) out[o + j] = a[ia + j * sa] / b[ib + j * sb];
  },
};

function genericRow(f: (a: number, b: number) => number): Row {
  return (out, o, a, ia, sa, b, ib, sb, n) => {
    for (let j = 0; j < n; j++) out[o + j] = f(a[ia + j * sa], b[ib + j * sb]);
  };
}

/** Same idea for unary ops: a dedicated loop for the ones training runs most. */
const UNARY_LOOPS: Partial<Record<UnaryOpName, (out: FloatArray, x: FloatArray) => void>> = {
  silu: (out, x) => {
    for (let i = 0; i < x.length; i++) out[i] = x[i] / (1 + Math.exp(-x[i]));
  },
  sigmoid: (out, x) => {
    for (let i = 0; i < x.length; i++) out[i] = 1 / (1 + Math.exp(-x[i]));
  },
  neg: (out, x) => {
    for (let i = 0; i < x.length; i++) out[i] = -x[i];
  },
  square: (out, x) => {
    for (let i = 0; i < x.length; i++) out[i] = x[i] * x[i];
  },
  sqrt: (out, x) => {
    for (let i = 0; i < x.length; i++) out[i] = Math.sqrt(x[i]);
  },
  exp: (out, x) => {
    for (let i = 0; i < x.length; i++) out[i] = Math.exp(x[i]);
  },
};

function unaryKernel(op: UnaryOpName): Kernel<UnaryOpName, CpuStorage> {
  const f = UNARY[op];
  const loop =
    UNARY_LOOPS[op] ??
    ((out: FloatArray, x: FloatArray) => {
      for (let i = 0; i < x.length; i++) out[i] = f(x[i]);
    });
  return ({ inputs: [x], outputs: [y] }) => {
    const { out, commit } = writeFloat(y);
    loop(out, readFloat(x));
    commit();
  };
}

function binaryKernel(op: BinaryOpName): Kernel<BinaryOpName, CpuStorage> {
  const floatRow = FLOAT_ROWS[op] ?? genericRow(BINARY[op].float);
  const intRow = genericRow(BINARY[op].int);
  return ({ inputs: [a, b], outputs: [y] }) => {
    const isInt = a.dtype === "i32";
    const row = isInt ? intRow : floatRow;
    const va = (isInt ? view(a) : readFloat(a)) as FloatArray;
    const vb = (isInt ? view(b) : readFloat(b)) as FloatArray;
    const { out, commit }: ReturnType<typeof writeFloat> = isInt ? { out: view(y) as unknown as FloatArray, commit() {} } : writeFloat(y);
    // Flat fast paths: equal shapes, or a single-element operand, are one long row.
    if (a.size === y.size && b.size === y.size && sameShape(a.shape, b.shape)) row(out, 0, va, 0, 1, vb, 0, 1, y.size);
    else if (a.size === y.size && b.size === 1 && sameShape(a.shape, y.shape)) row(out, 0, va, 0, 1, vb, 0, 0, y.size);
    else if (b.size === y.size && a.size === 1 && sameShape(b.shape, y.shape)) row(out, 0, va, 0, 0, vb, 0, 1, y.size);
    else {
      forEachBroadcastRow(y.shape, [a.shape, b.shape], (o, [ia, ib], n, [sa, sb]) => row(out, o, va, ia, sa, vb, ib, sb, n));
    }
    commit();
  };
}

function compareKernel(op: CompareOpName): Kernel<CompareOpName, CpuStorage> {
  const f = COMPARE[op];
  return ({ inputs: [a, b], outputs: [y] }) => {
    const va = readAny(a);
    const vb = readAny(b);
    const out = view(y) as Uint8Array;
    forEachBroadcastRow(y.shape, [a.shape, b.shape], (o, [ia, ib], n, [sa, sb]) => {
      for (let j = 0; j < n; j++) out[o + j] = f(va[ia + j * sa], vb[ib + j * sb]) ? 1 : 0;
    });
  };
}

const where: Kernel<"where", CpuStorage> = ({ inputs: [c, a, b], outputs: [y] }) => {
  const vc = view(c) as Uint8Array;
  // Raw storage moves unchanged: no conversion is needed to select between same-dtype values.
  const va = view(a);
  const vb = view(b);
  const out = view(y);
  forEachBroadcastRow(y.shape, [c.shape, a.shape, b.shape], (o, [ic, ia, ib], n, [sc, sa, sb]) => {
    for (let j = 0; j < n; j++) out[o + j] = vc[ic + j * sc] ? va[ia + j * sa] : vb[ib + j * sb];
  });
};

const fill: Kernel<"fill", CpuStorage> = ({ outputs: [y], attrs }) => {
  if (y.size === 0) return;
  storeAs({ ...y, size: 1 }, [attrs.value]);
  const v = view(y);
  v.fill(v[0]);
};

/** Float → int casts truncate toward zero (as C and PyTorch do); NaN becomes 0. */
const cast: Kernel<"cast", CpuStorage> = ({ inputs: [x], outputs: [y] }) => {
  if (x.dtype === y.dtype) {
    view(y).set(view(x));
    return;
  }
  const src = readAny(x);
  if (y.dtype === "i32" || y.dtype === "u8") {
    const dst = view(y);
    for (let i = 0; i < src.length; i++) dst[i] = Math.trunc(src[i]) || 0;
  } else {
    storeAs(y, src);
  }
};

const copy: Kernel<"copy", CpuStorage> = ({ inputs: [x], outputs: [y] }) => {
  view(y).set(view(x));
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
