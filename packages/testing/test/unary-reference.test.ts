/**
 * The unary reference table of the conformance suite, evaluated again in float64 by series and
 * Newton iterations written here (no Math.exp, log, sqrt, sin, cos or tanh), so a mistyped entry
 * fails; and its inputs are exact in bf16 and f16, so it holds for every float dtype.
 */
import { UNARY_OPS, type UnaryOpName } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { assertClose } from "../src/index.js";
import { UNARY_REFERENCE } from "../src/unary-reference.js";

/** Σ xⁿ/n! for x ≥ 0 (all terms positive, no cancellation); e^{−x} = 1 / e^{x}. */
function exp(x: number): number {
  if (x < 0) return 1 / exp(-x);
  let sum = 1;
  let term = 1;
  for (let n = 1; term > 1e-20 * sum; n++) sum += term *= x / n;
  return sum;
}

/** ln x = 2 atanh z = 2 Σ z^{2k+1}/(2k+1), z = (x − 1)/(x + 1). */
function log(x: number): number {
  const z = (x - 1) / (x + 1);
  let sum = 0;
  let p = z;
  for (let k = 0; Math.abs(p) > 1e-20; k++, p *= z * z) sum += p / (2 * k + 1);
  return 2 * sum;
}

/** Newton's iteration y ← (y + x/y)/2. */
function sqrt(x: number): number {
  let y = Math.max(x, 1);
  for (let i = 0; i < 100; i++) y = (y + x / y) / 2;
  return y;
}

/** Taylor series of sin (odd powers) and cos (even powers) together. */
function sinCos(x: number): [number, number] {
  let s = 0;
  let c = 0;
  let term = 1;
  for (let n = 0; n < 60; n++) {
    if (n % 4 === 0) c += term;
    else if (n % 4 === 1) s += term;
    else if (n % 4 === 2) c -= term;
    else s -= term;
    term *= x / (n + 1);
  }
  return [s, c];
}

const tanh = (x: number) => (exp(2 * x) - 1) / (exp(2 * x) + 1);
const sigmoid = (x: number) => (1 + tanh(x / 2)) / 2;

const INDEPENDENT: Record<UnaryOpName, (x: number) => number> = {
  neg: (x) => 0 - x,
  abs: (x) => (x < 0 ? -x : x),
  exp,
  log,
  sqrt,
  rsqrt: (x) => 1 / sqrt(x),
  square: (x) => x * x,
  reciprocal: (x) => 1 / x,
  relu: (x) => (x < 0 ? 0 : x),
  silu: (x) => x * sigmoid(x),
  sigmoid,
  tanh,
  cos: (x) => sinCos(x)[1],
  sin: (x) => sinCos(x)[0],
  sign: (x) => (x === 0 ? 0 : x < 0 ? -1 : 1),
};

/** Whether x has at most `bits` significant bits (the implicit one included). */
function fitsBits(x: number, bits: number): boolean {
  let m = Math.abs(x);
  if (m === 0) return true;
  while (!Number.isInteger(m)) m *= 2;
  while (m % 2 === 0) m /= 2;
  return m < 2 ** bits;
}

describe("unary reference table", () => {
  it("has 21 points for every unary op", () => {
    expect(Object.keys(UNARY_REFERENCE).sort()).toEqual([...UNARY_OPS].sort());
    for (const op of UNARY_OPS) {
      const [xs, ys] = UNARY_REFERENCE[op];
      expect([op, xs.length, ys.length]).toEqual([op, 21, 21]);
    }
  });

  it("has inputs exact in bf16 (8 significant bits) and f16 (11)", () => {
    for (const op of UNARY_OPS) {
      // 2^-14: the smallest normal f16.
      for (const x of UNARY_REFERENCE[op][0]) expect([op, x, x === 0 || (fitsBits(x, 8) && Math.abs(x) >= 2 ** -14)]).toEqual([op, x, true]);
    }
  });

  for (const op of UNARY_OPS) {
    it(`${op}: agrees with a float64 evaluation by series or Newton's method`, () => {
      const [xs, ys] = UNARY_REFERENCE[op];
      // atol: a few float64 ulps of the largest entry (e^4 ≈ 54.6).
      assertClose(ys, xs.map(INDEPENDENT[op]), { atol: 1e-13, rtol: 1e-14, label: op });
    });
  }

  it("the independent evaluation tells functions apart (it is not a constant check)", () => {
    const [xs, ys] = UNARY_REFERENCE.tanh;
    expect(() => assertClose(ys, xs.map((x) => 2 * sigmoid(x) - 1), { atol: 1e-13, rtol: 1e-14 })).toThrow();
    expect(() => assertClose(ys, xs.map((x) => tanh(x) * (1 + 1e-12)), { atol: 1e-13, rtol: 1e-14 })).toThrow();
    // Known constants: e, ln 2, √2, sin(1), cos(1), e^{−1}/(1 + e^{−1}).
    assertClose([exp(1), log(2), sqrt(2), sinCos(1)[0], sinCos(1)[1]], [2.718281828459045, 0.6931471805599453, 1.4142135623730951, 0.8414709848078965, 0.5403023058681398], { atol: 1e-15, rtol: 1e-15 });
  });
});
