/**
 * Seeded test inputs. Independent of the RNG in the tensor core, so tests of that RNG do not
 * test it against itself: a small splitmix32/mulberry-style generator on the host.
 */
// The package root (not a module inside it), so the default CPU backend is set as it is for users.
import { type Backend, type DType, type Tensor, tensor } from "../index.js";

export interface SeededRandom {
  /** Uniform in [0, 1). */
  next(): number;
  /** Standard normal. */
  normal(): number;
  /** Integer in [0, n). */
  int(n: number): number;
  /** n float64 values, normal(0, std) by default. */
  array(n: number, std?: number): Float64Array;
  /** A tensor of normal(0, std) values rounded to `dtype`. */
  tensor(shape: readonly number[], options?: { std?: number; dtype?: DType; backend?: Backend }): Tensor;
  /** An i32 tensor of integers in [0, n). */
  ints(shape: readonly number[], n: number, backend?: Backend): Tensor;
}

export function seeded(seed: number): SeededRandom {
  let s = seed >>> 0 || 0x9e3779b9;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => {
    const u = 1 - next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
  };
  const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  const rng: SeededRandom = {
    next,
    normal,
    int: (n) => Math.floor(next() * n),
    array: (n, std = 1) => Float64Array.from({ length: n }, () => normal() * std),
    tensor: (shape, options = {}) =>
      tensor(rng.array(size(shape), options.std ?? 1), shape, { dtype: options.dtype ?? "f32", backend: options.backend }),
    ints: (shape, n, backend) =>
      tensor(Int32Array.from({ length: size(shape) }, () => rng.int(n)), shape, { dtype: "i32", backend }),
  };
  return rng;
}
