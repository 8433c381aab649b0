/**
 * The float64 oracle of x·wᵀ and the element-wise error bound the product tests hold the GPU's
 * products to: a sum in f32 in chains of `depth` additions, then one rounding to the storage dtype.
 * |acc − y| ≤ γ·Σ|x·w| with γ = depth·2⁻²⁴ (Higham's bound for recursive summation; products are
 * exact in fmaf, conversions from bf16/f16 exact); rounding adds u·|y| with u = 2⁻⁸ (bf16), 2⁻¹¹
 * (f16), 2⁻²⁴ (f32). A library whose summation order is not ours to know takes depth K.
 *
 * Letters: x (M, K), w (N, K), y (M, N).
 */
import * as T from "@lightning-ts/tensor";
import type { SeededRandom } from "@lightning-ts/testing";
import { expect } from "vitest";

export type Float = "bf16" | "f16" | "f32";
/** Unit roundoff of one rounding to nearest into each storage dtype. */
const UNIT: Record<Float, number> = { bf16: 2 ** -8, f16: 2 ** -11, f32: 2 ** -24 };
const F32_UNIT = 2 ** -24;

/** y = x·wᵀ in float64, and Σ|x·w| per element (the scale of the summation error). */
export function oracle(x: ArrayLike<number>, w: ArrayLike<number>, M: number, N: number, K: number) {
  const y = new Float64Array(M * N);
  const scale = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      let a = 0;
      for (let k = 0, xo = m * K, wo = n * K; k < K; k++) {
        const p = x[xo + k] * w[wo + k];
        s += p;
        a += Math.abs(p);
      }
      y[m * N + n] = s;
      scale[m * N + n] = a;
    }
  return { y, scale };
}

/** The bound on |got − y| of element i for a sum in chains of `depth` additions, then one rounding. */
export function boundAt(want: { y: Float64Array; scale: Float64Array }, i: number, dtype: Float, depth: number): number {
  const u = UNIT[dtype];
  const gamma = (depth * F32_UNIT) / (1 - depth * F32_UNIT);
  return u * Math.abs(want.y[i]) + (1 + u) * gamma * want.scale[i];
}

/** Fails at the worst element where |got − ref| passes its bound (NaN never passes). */
export function expectWithin(got: ArrayLike<number>, ref: ArrayLike<number>, bound: (i: number) => number, label: string) {
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(got[i] - ref[i]);
    const b = bound(i);
    if (!(err <= b)) {
      const ratio = Number.isNaN(err) ? Infinity : err / b;
      if (worst < 0 || ratio > worstRatio) [worst, worstRatio] = [i, ratio];
    }
  }
  expect(worst < 0 ? "" : `element ${worst}: got ${got[worst]}, want ${ref[worst]} (${worstRatio.toFixed(2)}× the bound)`, label).toBe("");
}

/** Sets environment variable `name` for the calls of `fn` (the native side reads it at each product). */
export function withEnv<R>(name: string, value: string, fn: () => R): R {
  const before = process.env[name];
  process.env[name] = value;
  try {
    return fn();
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
}

const host = T.createCpuBackend();

/** Normal values from `rng`, never zero, rounded to `dtype`: the tensor on `backend` and the values it holds. */
export async function operand(rng: SeededRandom, backend: T.Backend, shape: [number, number], dtype: Float): Promise<[T.Tensor, Float64Array]> {
  const values = rng.array(shape[0] * shape[1]);
  for (let i = 0; i < values.length; i++) if (values[i] === 0) values[i] = 0.5;
  const onHost = T.tensor(values, shape, { dtype, backend: host });
  const held = Float64Array.from(await onHost.data());
  onHost.dispose();
  return [T.tensor(values, shape, { dtype, backend }), held];
}
