/**
 * The fused decode-step ops (addRmsNorm, rmsNormGate, splitQkvu) on the CPU, which runs their
 * decompositions: bit for bit the chains of ops the TNL decode step ran before them, and within
 * each dtype's rounding of a float64 host oracle. Fresh seeded inputs, odd sizes, every float dtype,
 * with and without LRPE, every activation; and clear errors for bad arguments.
 */
import { describe, expect, it } from "vitest";
import * as T from "../src/index.js";
import { assertClose, seeded } from "../src/testing/index.js";
import { EPS, modelChain, rmsRows, splitOracle } from "./decode-chains.js";

const FLOATS = ["f32", "f64", "f16", "bf16"] as const satisfies readonly T.DType[];
type Float = (typeof FLOATS)[number];

/** The spacing of `dtype`'s values at 1 (twice the unit roundoff). */
const ULP: Record<Float, number> = { f64: 2 ** -52, f32: 2 ** -23, f16: 2 ** -10, bf16: 2 ** -7 };

/** Within k ulps (of `dtype` at the largest |expected|) everywhere, and k ulps in relative RMS. */
function closeTo(got: T.Tensor, want: readonly number[], dtype: Float, k: number, label: string): void {
  const big = want.reduce((a, v) => Math.max(a, Math.abs(v)), 1);
  assertClose(values(got), want, { atol: k * ULP[dtype] * big, rtol: k * ULP[dtype], label });
}

const values = (t: T.Tensor) => Array.from(t.dataSync());
/** Bits of two tensors: equal shapes, dtypes and values (NaN equal to NaN). */
function sameBits(got: T.Tensor, want: T.Tensor, label: string): void {
  expect([got.dtype, got.shape], label).toEqual([want.dtype, want.shape]);
  expect(values(got), label).toEqual(values(want));
}

describe("addRmsNorm", () => {
  const rng = seeded(4101);
  for (const dtype of FLOATS) {
    it(`is add then rmsNorm, bit for bit, and the float64 oracle (${dtype})`, () => {
      for (const [rows, M] of [[1, 1], [3, 37], [5, 1000], [2, 1031], [1, 4104]]) {
        T.scope(() => {
          const x = rng.tensor([rows, 1, M], { dtype, std: 3 });
          const y = rng.tensor([rows, 1, M], { dtype });
          const { sum, normed } = T.addRmsNorm(x, y);
          const label = `[${rows}, 1, ${M}] ${dtype}`;
          const s = T.add(x, y);
          sameBits(sum, s, `sum ${label}`);
          sameBits(normed, T.rmsNorm(s, EPS), `normed ${label}`);
          const ys = values(y);
          const exact = values(x).map((v, i) => v + ys[i]);
          closeTo(sum, exact, dtype, 1, `sum vs float64 ${label}`);
          closeTo(normed, rmsRows(exact, M), dtype, 4, `normed vs float64 ${label}`);
        });
      }
    });
  }

  it("refuses mismatched operands and a bad eps, naming the argument", () => {
    const x = T.zeros([2, 3]);
    expect(() => T.addRmsNorm(x, T.zeros([3, 2]))).toThrow(/^addRmsNorm: argument 'y' expected shape \[2, 3\], got \[3, 2\]$/);
    expect(() => T.addRmsNorm(x, T.zeros([2, 3], { dtype: "bf16" }))).toThrow(/^addRmsNorm: argument 'y' expected dtype f32/);
    expect(() => T.addRmsNorm(x, x, 0)).toThrow(/^addRmsNorm: argument 'eps' expected a positive finite number, got 0$/);
    expect(() => T.addRmsNorm(T.zeros([2], { dtype: "i32" }), T.zeros([2], { dtype: "i32" }))).toThrow(/^addRmsNorm: argument 'x' expected a float tensor/);
    x.dispose();
  });
});

describe("rmsNormGate", () => {
  const rng = seeded(4102);
  for (const dtype of FLOATS) {
    it(`is mul(rmsNorm(o), u), bit for bit, and the float64 oracle (${dtype})`, () => {
      for (const [rows, M] of [[1, 3], [4, 35], [3, 1024], [2, 1031]]) {
        T.scope(() => {
          const o = rng.tensor([rows, M], { dtype, std: 0.5 });
          const u = rng.tensor([rows, M], { dtype, std: 2 });
          const got = T.rmsNormGate(o, u);
          const label = `[${rows}, ${M}] ${dtype}`;
          sameBits(got, T.mul(T.rmsNorm(o, EPS), u), label);
          const us = values(u);
          const want = rmsRows(values(o), M).map((v, i) => v * us[i]);
          closeTo(got, want, dtype, 4, `vs float64 ${label}`);
        });
      }
    });
  }

  it("refuses mismatched operands, naming the argument", () => {
    const o = T.zeros([2, 3]);
    expect(() => T.rmsNormGate(o, T.zeros([2, 4]))).toThrow(/^rmsNormGate: argument 'u' expected shape \[2, 3\], got \[2, 4\]$/);
    expect(() => T.rmsNormGate(T.zeros([]), T.zeros([]))).toThrow(/^rmsNormGate: argument 'o' expected rank >= 1/);
    o.dispose();
  });
});

describe("splitQkvu", () => {
  const rng = seeded(4103);
  const shapes = [[1, 1, 1], [3, 3, 5], [2, 5, 7], [1, 2, 33], [4, 8, 128]] as const; // [B, H, hd]
  for (const dtype of FLOATS) {
    for (const withLrpe of [false, true]) {
      it(`is the model's narrow/φ/LRPE chain, bit for bit, and the float64 oracle (${dtype}, ${withLrpe ? "LRPE" : "no LRPE"})`, () => {
        for (const [B, H, hd] of shapes) {
          for (const act of ["silu", "relu", "1+elu", "none"] as const) {
            T.scope(() => {
              const qkvu = rng.tensor([B, 4 * H * hd], { dtype, std: 2 });
              // θ as TNL makes it (10000^(−i/hd)-like, in (0, 1]) in the parameters' dtype; positions up to 70,000.
              const thetaDType = dtype === "f64" ? "f64" : dtype === "f32" ? "f32" : rng.int(2) ? "f32" : dtype;
              const theta = withLrpe ? T.tensor(Array.from({ length: H * hd }, () => 10000 ** -rng.next()), [H, hd], { dtype: thetaDType }) : undefined;
              const pos = Array.from({ length: B }, () => rng.int(70000));
              const positions = withLrpe ? T.tensor(pos, [B], { dtype: thetaDType === "f64" ? "f64" : "f32" }) : undefined;
              const got = T.splitQkvu(qkvu, { heads: H, activation: act, theta, positions });
              const label = `B ${B}, H ${H}, hd ${hd}, ${act}, ${dtype}${withLrpe ? `, θ ${thetaDType}` : ""}`;
              const want = modelChain(qkvu, H, act, theta, positions);
              [got.q, got.k, got.v, got.u].forEach((t, i) => sameBits(t, want[i], `${"qkvu"[i]} ${label}`));
              const oracle = splitOracle(values(qkvu), B, H, act, theta && { values: values(theta), f64: thetaDType === "f64" }, pos);
              [got.q, got.k, got.v, got.u].forEach((t, i) => closeTo(t, oracle[i], dtype, 4, `${"qkvu"[i]} vs float64 ${label}`));
            });
          }
        }
      });
    }
  }

  it('takes "swish" as "silu", and silu by default', () => {
    T.scope(() => {
      const qkvu = rng.tensor([2, 4 * 3 * 5]);
      const a = T.splitQkvu(qkvu, { heads: 3, activation: "swish" });
      const b = T.splitQkvu(qkvu, { heads: 3 });
      const c = T.splitQkvu(qkvu, { heads: 3, activation: "silu" });
      sameBits(a.q, c.q, "swish");
      sameBits(b.k, c.k, "default");
    });
  });

  it("refuses bad arguments, naming them", () => {
    T.scope(() => {
      const x = T.zeros([2, 24]);
      const theta = T.zeros([3, 2]);
      const pos = T.zeros([2]);
      expect(() => T.splitQkvu(x, { heads: 4 })).toThrow(/^splitQkvu: argument 'qkvu' expected a width that is a positive multiple of 4·heads = 16, got \[2, 24\]$/);
      expect(() => T.splitQkvu(T.zeros([24]), { heads: 3 })).toThrow(/^splitQkvu: argument 'qkvu' expected rank 2/);
      expect(() => T.splitQkvu(x, { heads: 0 })).toThrow(/^splitQkvu: argument 'heads' expected a positive integer, got 0$/);
      expect(() => T.splitQkvu(x, { heads: 3, activation: "gelu" as never })).toThrow(/^splitQkvu: argument 'options.activation' expected one of 'silu', 'relu', '1\+elu', 'none', 'swish', got gelu$/);
      expect(() => T.splitQkvu(x, { heads: 3, theta })).toThrow(/^splitQkvu: argument 'options.positions' expected theta and positions together/);
      expect(() => T.splitQkvu(x, { heads: 3, positions: pos })).toThrow(/^splitQkvu: argument 'options.theta' expected theta and positions together/);
      expect(() => T.splitQkvu(x, { heads: 3, theta: T.zeros([2, 3]), positions: pos })).toThrow(/^splitQkvu: argument 'theta' expected shape \[3, 2\], got \[2, 3\]$/);
      expect(() => T.splitQkvu(x, { heads: 3, theta, positions: T.zeros([3]) })).toThrow(/^splitQkvu: argument 'positions' expected shape \[2\], got \[3\]$/);
      expect(() => T.splitQkvu(x, { heads: 3, theta, positions: T.zeros([2], { dtype: "i32" }) })).toThrow(/^splitQkvu: argument 'positions' expected dtype f32/);
      expect(() => T.runOp("splitQkvu", [x], { heads: 3, activation: "silu", lrpe: true })).toThrow(/^splitQkvu: argument 'theta' expected theta and positions \(lrpe is true\), got 0 more inputs$/);
    });
  });
});
