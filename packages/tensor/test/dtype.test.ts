import { describe, expect, it } from "vitest";
import { seeded } from "../src/testing/index.js";
import { bf16ToF32, encodeBf16, encodeF16, f16ToF32, f32Bits, fromF32Bits } from "../src/dtype.js";

/** The correctly rounded value among the two neighbours `lo <= x <= hi`, ties to the even code. */
function nearest(x: number, lo: [number, number], hi: [number, number]): number {
  const dl = x - lo[1];
  const dh = hi[1] - x;
  if (dl < dh) return lo[0];
  if (dh < dl) return hi[0];
  return (lo[0] & 1) === 0 ? lo[0] : hi[0];
}

describe("f16", () => {
  it("decodes and re-encodes every one of the 65,536 codes exactly", () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16ToF32(h);
      if (Number.isNaN(v)) expect(Number.isNaN(f16ToF32(encodeF16(v)))).toBe(true);
      else expect(encodeF16(v)).toBe(h);
    }
  });

  it("rounds random f32 values to the nearest f16, ties to even", () => {
    const rng = seeded(7);
    // Positive finite f16 codes in order of value: code c and c + 1 are neighbours.
    for (let i = 0; i < 20000; i++) {
      const c = rng.int(0x7bff);
      const lo = f16ToF32(c);
      const hi = f16ToF32(c + 1);
      // A float32 strictly between the neighbours, sometimes exactly at the midpoint.
      const x = i % 10 === 0 ? Math.fround((lo + hi) / 2) : Math.fround(lo + (hi - lo) * rng.next());
      const want = nearest(x, [c, lo], [c + 1, hi]);
      expect(encodeF16(x)).toBe(want);
      expect(encodeF16(-x)).toBe(want | 0x8000);
    }
  });

  it("overflows to infinity and underflows to signed zero", () => {
    expect(encodeF16(65520)).toBe(0x7c00); // halfway past the largest finite value rounds up to Inf
    expect(encodeF16(65519)).toBe(0x7bff);
    expect(encodeF16(2 ** -26)).toBe(0); // below half the smallest subnormal
    expect(encodeF16(-(2 ** -25) * 1.5)).toBe(0x8001);
    expect(encodeF16(Infinity)).toBe(0x7c00);
  });
});

describe("bf16", () => {
  it("rounds random f32 values to the nearest bf16, ties to even", () => {
    const rng = seeded(11);
    for (let i = 0; i < 20000; i++) {
      const c = rng.int(0x7f7f); // positive finite bf16 codes
      const lo = bf16ToF32(c);
      const hi = bf16ToF32(c + 1);
      const x = i % 10 === 0 ? fromF32Bits((c << 16) | 0x8000) : fromF32Bits((c << 16) | rng.int(0x10000));
      expect(x >= lo && x <= hi).toBe(true);
      expect(encodeBf16(x)).toBe(nearest(x, [c, lo], [c + 1, hi]));
    }
  });

  it("keeps NaN a NaN and rounds the largest values to infinity", () => {
    expect(Number.isNaN(bf16ToF32(encodeBf16(NaN)))).toBe(true);
    expect(bf16ToF32(encodeBf16(fromF32Bits(0x7f7fffff)))).toBe(Infinity);
    expect(encodeBf16(fromF32Bits(f32Bits(1) | 0x8000))).toBe(0x3f80); // tie, even stays
    expect(encodeBf16(fromF32Bits(0x3f818000))).toBe(0x3f82); // tie, odd rounds up
  });
});
