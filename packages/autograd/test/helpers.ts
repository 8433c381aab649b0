/** Seeded test inputs with the value ranges that gradient checks need. */
import { type DType, type Tensor, tensor } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/testing";

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Normal(0, 1) values passed through `f`, stored as `dtype` (f32 by default). */
export function rand(seed: number, shape: readonly number[], f: (v: number) => number = (v) => v, dtype: DType = "f32"): Tensor {
  return tensor(Array.from(seeded(seed).array(size(shape)), f), shape, { dtype });
}

/** Values at least 0.3 away from zero, for ops with a kink or a pole at 0. */
export const awayFromZero = (v: number) => Math.sign(v || 1) * (Math.abs(v) + 0.3);
/** Values in [0.5, ∞), for log, sqrt, rsqrt and pow bases. */
export const positive = (v: number) => Math.abs(v) + 0.5;

/** i32 indices in [0, n). */
export function ints(seed: number, shape: readonly number[], n: number): Tensor {
  return seeded(seed).ints(shape, n);
}

/** A u8 mask with both values present. */
export function mask(seed: number, shape: readonly number[]): Tensor {
  const r = seeded(seed);
  const v = Array.from({ length: size(shape) }, (_, i) => (i === 0 ? 1 : i === 1 ? 0 : r.next() < 0.5 ? 1 : 0));
  return tensor(v, shape, { dtype: "u8" });
}
