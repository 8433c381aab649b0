/** assertClose must reject what is not close: every branch of the judgement can fail. */
import { describe, expect, it } from "vitest";
import { createCpuBackend, tensor } from "../src/index.js";
import { assertClose, closeness } from "../src/testing/index.js";

describe("assertClose", () => {
  it("passes equal values and reports zero error", () => {
    expect(assertClose([1, -2, 3.5, 0], [1, -2, 3.5, 0], { atol: 0, rtol: 0 })).toEqual({ maxAbs: 0, relRms: 0, worstIndex: -1, nonFinite: 0 });
    // -0 and 0 are the same value.
    expect(() => assertClose([-0], [0], { atol: 0, rtol: 0 })).not.toThrow();
  });

  it("rejects one element off by more than atol, naming the element", () => {
    const want = [1, 2, 3, 4, 5];
    expect(() => assertClose([1, 2, 3.01, 4, 5], want, { atol: 1e-3, rtol: 1 })).toThrow(/max \|Δ\| = 0\.0099\d* exceeds atol 0\.001 \(worst at 2: 3\.01 vs 3\)/);
    // Just inside the bound passes; the measured error is returned.
    const c = assertClose([1, 2, 3.0009, 4, 5], want, { atol: 1e-3, rtol: 1 });
    expect(c.worstIndex).toBe(2);
    expect(c.maxAbs).toBeCloseTo(9e-4, 12);
  });

  it("rejects a relative RMS error above rtol even when every element is inside atol", () => {
    // Every element off by 1e-3 on values of size 1: relRms = 1e-3.
    const want = [1, -1, 1, -1];
    const got = want.map((v) => v + 1e-3);
    expect(() => assertClose(got, want, { atol: 1, rtol: 5e-4 })).toThrow(/relative RMS error 0\.00(09|10)\d* exceeds rtol 0\.0005/);
    expect(assertClose(got, want, { atol: 1, rtol: 2e-3 }).relRms).toBeCloseTo(1e-3, 12);
  });

  it("uses the documented defaults, atol 1e-4 and rtol 1e-5", () => {
    expect(() => assertClose([1000.0002], [1000])).toThrow(/exceeds atol 0\.0001/);
    expect(() => assertClose([1.00005], [1])).toThrow(/exceeds rtol 0\.00001/);
    expect(() => assertClose([1.000005], [1])).not.toThrow();
  });

  it("never passes NaN, whatever the tolerances", () => {
    const loose = { atol: Infinity, rtol: Infinity };
    expect(() => assertClose([1, NaN, 3], [1, 2, 3], loose)).toThrow(/1 element\(s\) NaN or infinite.*worst at 1: NaN vs 2/);
    expect(() => assertClose([1, 2, 3], [1, NaN, 3], loose)).toThrow(/NaN or infinite/);
    expect(() => assertClose([NaN], [0], { atol: 1e300, rtol: 1e300 })).toThrow(/NaN/);
    // An infinity against a finite value or the other infinity fails too; equal infinities match.
    expect(() => assertClose([Infinity], [1e30], loose)).toThrow(/NaN or infinite/);
    expect(() => assertClose([-Infinity], [Infinity], loose)).toThrow(/NaN or infinite/);
    expect(() => assertClose([Infinity, 1], [Infinity, 1], { atol: 0, rtol: 0 })).not.toThrow();
    // NaN where NaN is expected is a match (e.g. log of a negative number).
    expect(() => assertClose([NaN, 1], [NaN, 1], { atol: 0, rtol: 0 })).not.toThrow();
  });

  it("rejects a length mismatch in either direction", () => {
    expect(() => assertClose([1, 2, 3], [1, 2])).toThrow(/length 3 \(actual\) differs from 2 \(expected\)/);
    expect(() => assertClose([1, 2], [1, 2, 3])).toThrow(/length 2 \(actual\) differs from 3 \(expected\)/);
    expect(() => assertClose([], [0])).toThrow(/length/);
  });

  it("reads a tensor, and rejects one of the wrong size or values", () => {
    const backend = createCpuBackend({ threads: 1 });
    const t = tensor([0.5, 1.5, -2], [3], { backend });
    expect(() => assertClose(t, [0.5, 1.5, -2], { atol: 0, rtol: 0 })).not.toThrow();
    expect(() => assertClose(t, [0.5, 1.5], { atol: 0, rtol: 0 })).toThrow(/length 3/);
    expect(() => assertClose(t, [0.5, 1.5, -2.5], { atol: 0.1, label: "t" })).toThrow(/^t: max \|Δ\| = 0\.5/);
    t.dispose();
    backend.dispose();
  });

  it("admits only zeros where zeros are expected (the relative error is unbounded there)", () => {
    expect(() => assertClose([0, 0], [0, 0], { atol: 0, rtol: 0 })).not.toThrow();
    expect(() => assertClose([1e-9, 0], [0, 0], { atol: 1e-6, rtol: 1e-3 })).toThrow(/relative RMS error/);
  });
});

describe("closeness", () => {
  it("measures the worst element and the relative RMS error", () => {
    const c = closeness([1, 2, 2], [1, 2, 4]);
    expect(c.maxAbs).toBe(2);
    expect(c.worstIndex).toBe(2);
    expect(c.relRms).toBeCloseTo(2 / Math.sqrt(21), 15);
  });
});
