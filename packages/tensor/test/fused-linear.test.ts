/**
 * `fusedLinear` on the CPU, which runs its decomposition: bit for bit the chain of ops the TNL
 * decode step ran before it (rmsNorm, mul, matmul, mul, add), and within the bound of
 * fused-linear-oracle.ts of a float64 reference. Fresh seeded inputs, rows 1, 3 and 5, K and N odd
 * and not multiples of 8, every part on and off, f32, f64, f16 and bf16; clear errors for bad
 * arguments. And `qkvuProjection`: bit for bit fusedLinear (normed) then splitQkvu, every
 * activation, with and without LRPE.
 */
import { describe, expect, it } from "vitest";
import * as T from "../src/index.js";
import { seeded } from "../src/testing/index.js";
import { chain, expectWithin, makeInputs, optionsOf, reference, VARIANTS } from "./fused-linear-oracle.js";

const values = (t: T.Tensor) => Array.from(t.dataSync());

describe("fusedLinear", () => {
  const rng = seeded(7907);
  const SIZES: [number, number][] = [
    [37, 29],
    [131, 13],
    [1031, 45],
  ];
  for (const dtype of ["f32", "f64", "f16", "bf16"] as const) {
    for (const v of VARIANTS) {
      it(`is the model's chain, bit for bit, and the float64 reference (${v.name}, ${dtype})`, async () => {
        for (const R of [1, 3, 5]) {
          for (const [K, N] of SIZES) {
            const frame = T.beginScope();
            try {
              const i = makeInputs(rng, R, K, N, v, dtype);
              const y = T.fusedLinear(i.x, i.w, optionsOf(i, v));
              const label = `R ${R}, K ${K}, N ${N}`;
              expect([y.dtype, y.shape], label).toEqual([dtype, [R, N]]);
              expect(values(y), label).toEqual(values(chain(i, v)));
              expectWithin(values(y), await reference(i, v, "chain"), label);
            } finally {
              T.endScope(frame);
            }
          }
        }
      });
    }
  }

  it("refuses bad arguments, naming them", () => {
    T.scope(() => {
      const x = T.ones([3, 5]);
      const w = T.ones([7, 5]);
      expect(() => T.fusedLinear(x, T.ones([7, 4]))).toThrow(/^fusedLinear: argument 'w' expected shape \[N, 5\] \(x is \[3, 5\]/);
      expect(() => T.fusedLinear(x, T.ones([7, 5], { dtype: "bf16" }))).toThrow(/^fusedLinear: argument 'w' expected dtype f32 \(as the first input\), got bf16$/);
      expect(() => T.fusedLinear(T.ones([1, 3, 5]), w)).toThrow(/^fusedLinear: argument 'x' expected rank 2, got rank 3/);
      expect(() => T.fusedLinear(T.ones([3, 5], { dtype: "i32" }), w)).toThrow(/^fusedLinear: argument 'x' expected a float tensor/);
      expect(() => T.fusedLinear(x, w, { residual: T.ones([3, 5]) })).toThrow(/^fusedLinear: argument 'residual' expected shape \[3, 7\], got \[3, 5\]$/);
      expect(() => T.fusedLinear(x, w, { second: T.ones([5, 7]) })).toThrow(/^fusedLinear: argument 'w2' expected shape \[7, 5\], got \[5, 7\]$/);
      expect(() => T.fusedLinear(x, w, { norm: { gate: T.ones([3, 7]) } })).toThrow(/^fusedLinear: argument 'gate' expected shape \[3, 5\], got \[3, 7\]$/);
      expect(() => T.fusedLinear(x, w, { norm: { gate: T.ones([3, 5], { dtype: "f16" }) } })).toThrow(/^fusedLinear: argument 'gate' expected dtype f32/);
      expect(() => T.fusedLinear(x, w, { norm: { eps: 0 } })).toThrow(/^fusedLinear: argument 'eps' expected a positive finite number, got 0$/);
      expect(() => T.fusedLinear(x, w, { residual: [1, 2] as unknown as T.Tensor })).toThrow(/^fusedLinear: argument 'options.residual' expected a Tensor, got object$/);
      expect(() => T.fusedLinear(x, w, { norm: null as unknown as T.FusedLinearOptions["norm"] })).toThrow(/^fusedLinear: argument 'options.norm' expected an object/);
      expect(() => T.fusedLinear(x, w, null as unknown as T.FusedLinearOptions)).toThrow(/^fusedLinear: argument 'options' expected an object/);
    });
  });

  it("is the chain's value under every option spelling: no options, empty norm, default eps", () => {
    T.scope(() => {
      const rng2 = seeded(31);
      const x = rng2.tensor([2, 19]);
      const w = rng2.tensor([3, 19]);
      expect(values(T.fusedLinear(x, w))).toEqual(values(T.matmul(x, w, { transB: true })));
      expect(values(T.fusedLinear(x, w, { norm: {} }))).toEqual(values(T.matmul(T.rmsNorm(x, 1e-6), w, { transB: true })));
    });
  });
});

describe("qkvuProjection", () => {
  const rng = seeded(7919);
  for (const dtype of ["f32", "f64", "f16", "bf16"] as const) {
    for (const withLrpe of [false, true]) {
      it(`is fusedLinear (normed) then splitQkvu, bit for bit (${dtype}, ${withLrpe ? "LRPE" : "no LRPE"})`, () => {
        for (const [B, K, H, hd] of [[1, 37, 3, 5], [3, 130, 2, 7], [5, 1031, 4, 3]]) {
          for (const activation of T.QKV_ACTIVATIONS) {
            T.scope(() => {
              const x = rng.tensor([B, K], { dtype, std: 2 });
              const w = rng.tensor([4 * H * hd, K], { dtype, std: 1 / Math.sqrt(K) });
              const pdt = dtype === "f64" ? "f64" : "f32";
              const rope = withLrpe
                ? { theta: rng.tensor([H, hd], { dtype: pdt }), positions: T.tensor(Array.from({ length: B }, () => rng.int(5000)), [B], { dtype: pdt }) }
                : {};
              const got = T.qkvuProjection(x, w, { heads: H, activation, eps: 1e-5, ...rope });
              const want = T.splitQkvu(T.fusedLinear(x, w, { norm: { eps: 1e-5 } }), { heads: H, activation, ...rope });
              for (const key of ["q", "k", "v", "u"] as const) {
                const label = `${key}: B ${B}, K ${K}, H ${H}, hd ${hd}, ${activation}`;
                expect([got[key].dtype, got[key].shape], label).toEqual([want[key].dtype, want[key].shape]);
                expect(values(got[key]), label).toEqual(values(want[key]));
              }
            });
          }
        }
      });
    }
  }

  it("refuses bad arguments, naming them", () => {
    T.scope(() => {
      const x = T.ones([2, 5]);
      const w = T.ones([24, 5]);
      expect(() => T.qkvuProjection(x, T.ones([24, 4]), { heads: 2 })).toThrow(/^qkvuProjection: argument 'w' expected shape \[4·H·hd, 5\]/);
      expect(() => T.qkvuProjection(x, T.ones([20, 5]), { heads: 2 })).toThrow(/^qkvuProjection: argument 'w' expected a row count that is a positive multiple of 4·heads = 8, got \[20, 5\]$/);
      expect(() => T.qkvuProjection(x, w, { heads: 0 })).toThrow(/^qkvuProjection: argument 'heads' expected a positive integer, got 0$/);
      expect(() => T.qkvuProjection(x, w, { heads: 2, eps: -1 })).toThrow(/^qkvuProjection: argument 'eps' expected a positive finite number/);
      expect(() => T.qkvuProjection(x, w, { heads: 2, theta: T.ones([2, 3]) })).toThrow(/^qkvuProjection: argument 'options.positions' expected theta and positions together/);
      expect(() => T.qkvuProjection(x, w, { heads: 2, theta: T.ones([2, 4]), positions: T.zeros([2]) })).toThrow(/^qkvuProjection: argument 'theta' expected shape \[2, 3\], got \[2, 4\]$/);
      expect(() => T.qkvuProjection(x, w, { heads: 2, activation: "gelu" as T.QkvActivation })).toThrow(/^qkvuProjection: argument 'options.activation' expected one of/);
    });
  });
});
