/**
 * Numerical comparison: NaN never passes (nor an infinity where the other side differs), whatever
 * the tolerances; then an absolute bound on the worst element, then the relative RMS error
 * ‖a − e‖₂ / ‖e‖₂. NaN matches only NaN.
 */
import { Tensor } from "../index.js";

export interface CloseOptions {
  /** Bound on max |actual − expected| (default 1e-4). */
  atol?: number;
  /** Bound on the relative RMS error (default 1e-5). */
  rtol?: number;
  /** Prefix for the failure message. */
  label?: string;
}

export interface Closeness {
  maxAbs: number;
  relRms: number;
  worstIndex: number;
  /** Elements where one side is NaN or infinite and the two differ. */
  nonFinite: number;
}

export function closeness(actual: ArrayLike<number>, expected: ArrayLike<number>): Closeness {
  if (actual.length !== expected.length) {
    throw new Error(`closeness: length ${actual.length} (actual) differs from ${expected.length} (expected)`);
  }
  let maxAbs = 0;
  let worstIndex = -1;
  let num = 0;
  let den = 0;
  let nonFinite = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (a === e) {
      den += Number.isFinite(e) ? e * e : 0;
      continue;
    }
    if (!Number.isFinite(a) || !Number.isFinite(e)) nonFinite++;
    const d = Number.isNaN(a) || Number.isNaN(e) ? Infinity : Math.abs(a - e);
    if (!(d <= maxAbs)) {
      maxAbs = d;
      worstIndex = i;
    }
    num += d * d;
    den += e * e;
  }
  const relRms = num === 0 ? 0 : Math.sqrt(num / Math.max(den, 1e-300));
  return { maxAbs, relRms, worstIndex, nonFinite };
}

/** Throws a descriptive error unless `actual` is close to `expected`. Returns the measured closeness. */
export function assertClose(actual: ArrayLike<number> | Tensor, expected: ArrayLike<number>, options: CloseOptions = {}): Closeness {
  if (actual instanceof Tensor) actual = actual.dataSync();
  const { atol = 1e-4, rtol = 1e-5, label = "assertClose" } = options;
  const c = closeness(actual, expected);
  const at = c.worstIndex >= 0 ? ` (worst at ${c.worstIndex}: ${actual[c.worstIndex]} vs ${expected[c.worstIndex]})` : "";
  if (c.nonFinite > 0) throw new Error(`${label}: ${c.nonFinite} element(s) NaN or infinite where the other side differs${at}`);
  if (!(c.maxAbs <= atol)) throw new Error(`${label}: max |Δ| = ${c.maxAbs} exceeds atol ${atol}${at}`);
  if (!(c.relRms <= rtol)) throw new Error(`${label}: relative RMS error ${c.relRms} exceeds rtol ${rtol}${at}`);
  return c;
}
