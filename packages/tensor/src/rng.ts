/**
 * A seeded, counter-based random number generator that every backend reproduces bit for bit.
 *
 * The generator is Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011): a keyed bijection of a 128-bit counter, so element i of a tensor can be computed on its
 * own, in any order, on any device. It needs only 32-bit integer multiply, xor and add, which WGSL,
 * CUDA and JavaScript all have.
 *
 * The stream, exactly (a GPU port must follow every step):
 *
 * - key = (seed mod 2^32, floor(seed / 2^32)) for a seed in [0, 2^53).
 * - Element i of a tensor (row-major) uses counter c = offset + i as the words
 *   (c mod 2^32, floor(c / 2^32), 0, 0), and gets one Philox block x0..x3. One block per element
 *   wastes words but makes every element independent of the tensor's size, so drawing n values
 *   and then m values at offset n gives exactly the n + m values of one draw.
 * - uniform: u = (x0 >>> 8) * 2^-24, in [0, 1), exact in f32;
 *   value = f32(f32(u * f32(high - low)) + low).
 * - normal (Box–Muller, cosine branch): u1 = (2 * (x0 >>> 9) + 1) * 2^-24, an odd multiple of
 *   2^-24 in (0, 1), so log(u1) is finite and non-zero; the angle is the 24-bit fraction
 *   b = x1 >>> 8 of a full turn; z = sqrt(-2 ln u1) * cos(2π b / 2^24);
 *   value = f32(f32(std * z) + mean).
 *
 * Every float step is one f32 operation rounded to nearest even (`Math.fround` here). WGSL does not
 * promise correctly rounded log, cos, sqrt or division, so the normal transform builds them from
 * f32 add and multiply only: log by exponent split plus a polynomial, cos by exact integer range
 * reduction of b plus Taylor polynomials, sqrt by x * rsqrt(x) with Newton steps. GPU ports must
 * keep these operations unfused (CUDA: __fmul_rn / __fadd_rn; no FMA contraction). f64 tensors
 * hold the same f32 values exactly; f16 and bf16 tensors store them rounded to nearest even.
 * Rounding (of the f32 sum for some ranges, or to f16/bf16) can turn a uniform value just below
 * `high` into `high` itself.
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

let mulHi = 0;

/** Low 32 bits of a * b for u32 a, b; the exact high 32 bits are left in `mulHi`. */
function mulHiLo(a: number, b: number): number {
  // The 64-bit product does not fit a double, so split into 16-bit halves (as WGSL must too).
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const ll = al * bl;
  const lh = al * bh;
  const hl = ah * bl;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  mulHi = (ah * bh + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) >>> 0;
  return Math.imul(a, b) >>> 0;
}

/** Philox4x32-10 of counter (c0..c3) under key (k0, k1), written to `out`. */
function philoxInto(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number, out: Uint32Array): void {
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const lo0 = mulHiLo(M0, c0);
    const hi0 = mulHi;
    const lo1 = mulHiLo(M1, c2);
    const hi1 = mulHi;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/**
 * One Philox4x32-10 block: four u32 words from a four-word counter and a two-word key.
 *
 * @example
 * philox4x32([0, 0, 0, 0], [0, 0]); // Uint32Array [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
 */
export function philox4x32(counter: ArrayLike<number>, key: ArrayLike<number>, out = new Uint32Array(4)): Uint32Array {
  const c = (i: number) => counter[i] >>> 0;
  philoxInto(c(0), c(1), c(2), c(3), key[0] >>> 0, key[1] >>> 0, out);
  return out;
}

/** The Philox key of a seed: its low and high 32-bit words. */
export function seedKey(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`rng: seed must be a non-negative safe integer, got ${seed}`);
  return [seed >>> 0, Math.floor(seed / 2 ** 32)];
}

/**
 * The block of element counter `c` (an integer in [0, 2^53)) under `key`: what element
 * `c - offset` of a random tensor is drawn from.
 *
 * @example
 * const [x0, x1] = counterBlock(seedKey(7), 0); // words of element 0 for seed 7, offset 0
 */
export function counterBlock(key: readonly [number, number], c: number, out = new Uint32Array(4)): Uint32Array {
  philoxInto(c >>> 0, Math.floor(c / 2 ** 32), 0, 0, key[0], key[1], out);
  return out;
}

const fr = Math.fround;

/** A u32 word as a uniform f32 in [0, 1): its top 24 bits times 2^-24. */
export function uniformFromU32(x: number): number {
  return (x >>> 8) * 2 ** -24;
}

// ln(1 + f) = f + f^2 * q(f) on [sqrt(1/2) - 1, sqrt(2) - 1]: least-squares fit, f32 coefficients,
// about 1 ulp in f32.
const LOG_Q = [
  -0.499999881, 0.333333254, -0.250015765, 0.200020581, -0.166092694, 0.141803533, -0.132400766, 0.129124328,
  -0.0763828382,
].map(fr);
// ln 2 split so that k * LN2_HI is exact for |k| <= 24 (Cody–Waite).
const LN2_HI = fr(0.693145751953125); // 0x3f317200
const LN2_LO = fr(1.42860677e-6);
const SQRT2 = fr(1.41421354);

/** ln(a * 2^-24) for an integer a in [1, 2^24), in f32 add/multiply only. */
function logScaled(a: number): number {
  let e = 31 - Math.clz32(a);
  let m = a * 2 ** -e; // exact: [1, 2)
  if (m >= SQRT2) {
    m *= 0.5;
    e += 1;
  }
  const f = fr(m - 1); // exact (Sterbenz)
  let q = LOG_Q[8];
  for (let j = 7; j >= 0; j--) q = fr(fr(q * f) + LOG_Q[j]);
  const p = fr(f + fr(fr(f * f) * q));
  const k = e - 24;
  return fr(fr(k * LN2_HI) + fr(fr(k * LN2_LO) + p));
}

const bitsF = new Float32Array(1);
const bitsI = new Int32Array(bitsF.buffer);

/** sqrt(x) for x > 0 as x * rsqrt(x), rsqrt from the bit-pattern estimate and three Newton steps. */
function sqrtF32(x: number): number {
  bitsF[0] = x;
  bitsI[0] = 0x5f3759df - (bitsI[0] >> 1);
  let y = bitsF[0];
  const h = fr(0.5 * x);
  for (let i = 0; i < 3; i++) y = fr(y * fr(1.5 - fr(fr(h * y) * y)));
  return fr(x * y);
}

// cos(2πt) and sin(2πt)/t for |t| <= 1/8 as polynomials in s = t²: the Taylor coefficients
// ±(2π)^n / n! rounded to f32 (truncation error below 1e-9).
const COS_C = [1, -19.7392082, 64.9393921, -85.4568176, 60.2446404, -26.4262562].map(fr);
const SIN_C = [6.28318548, -41.3417015, 81.6052475, -76.7058563, 42.0586929].map(fr);

function poly(c: readonly number[], s: number): number {
  let r = c[c.length - 1];
  for (let j = c.length - 2; j >= 0; j--) r = fr(fr(r * s) + c[j]);
  return r;
}

/** cos(2π b / 2^24) for a 24-bit integer b. */
function cosTurn(b: number): number {
  // Round to the nearest quarter turn with integers, so the reduction is exact: b = q/4 + t turns.
  const shifted = b + (1 << 21);
  const quadrant = (shifted >>> 22) & 3;
  const t = ((shifted & 0x3fffff) - (1 << 21)) * 2 ** -24; // [-1/8, 1/8), exact
  const s = fr(t * t);
  switch (quadrant) {
    case 0:
      return poly(COS_C, s);
    case 1:
      return -fr(t * poly(SIN_C, s));
    case 2:
      return -poly(COS_C, s);
    default:
      return fr(t * poly(SIN_C, s));
  }
}

/** A standard normal f32 from two u32 words (Box–Muller, see the file header). */
export function normalFromU32(x0: number, x1: number): number {
  const a = 2 * (x0 >>> 9) + 1;
  const r = sqrtF32(fr(-2 * logScaled(a)));
  return fr(r * cosTurn(x1 >>> 8));
}

export interface UniformParams {
  seed: number;
  offset: number;
  low: number;
  high: number;
}

export interface NormalParams {
  seed: number;
  offset: number;
  mean: number;
  std: number;
}

/**
 * Fills `out` with uniform values in [low, high): element i uses counter `offset + i`.
 *
 * @example
 * const u = fillUniform(new Float32Array(4), { seed: 42, offset: 0, low: 0, high: 1 });
 */
export function fillUniform<A extends Float32Array | Float64Array>(out: A, p: UniformParams): A {
  const key = seedKey(p.seed);
  checkCounter(p.offset, out.length);
  const range = fr(fr(p.high) - fr(p.low));
  const low = fr(p.low);
  const x = new Uint32Array(4);
  for (let i = 0; i < out.length; i++) {
    counterBlock(key, p.offset + i, x);
    out[i] = fr(fr(uniformFromU32(x[0]) * range) + low);
  }
  return out;
}

/**
 * Fills `out` with normal values N(mean, std²): element i uses counter `offset + i`.
 *
 * @example
 * const z = fillNormal(new Float32Array(4), { seed: 42, offset: 0, mean: 0, std: 1 });
 */
export function fillNormal<A extends Float32Array | Float64Array>(out: A, p: NormalParams): A {
  const key = seedKey(p.seed);
  checkCounter(p.offset, out.length);
  const mean = fr(p.mean);
  const std = fr(p.std);
  const x = new Uint32Array(4);
  for (let i = 0; i < out.length; i++) {
    counterBlock(key, p.offset + i, x);
    out[i] = fr(fr(std * normalFromU32(x[0], x[1])) + mean);
  }
  return out;
}

function checkCounter(offset: number, n: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + n)) {
    throw new RangeError(`rng: offset must be a non-negative safe integer with offset + size < 2^53, got ${offset} (+${n})`);
  }
}
