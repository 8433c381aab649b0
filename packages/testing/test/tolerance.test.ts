/** The conformance tolerances, judged by assertClose (tested in packages/tensor/test/close.test.ts). */
import { describe, expect, it } from "vitest";
import { assertClose, tolerance } from "../src/index.js";

describe("tolerance", () => {
  it("accepts one f32 rounding but not one bf16 rounding of the same value", () => {
    const x = [1 / 3, -2 / 7, 5 / 11, 100 / 3];
    const f32 = x.map(Math.fround);
    // bf16 keeps 8 significant bits: an error of about 2^-9 relative.
    const bf16 = x.map((v) => v * (1 + 2 ** -9));
    expect(() => assertClose(f32, x, tolerance("f32"))).not.toThrow();
    expect(() => assertClose(bf16, x, tolerance("f32"))).toThrow();
    expect(() => assertClose(bf16, x, tolerance("bf16"))).not.toThrow();
    expect(() => assertClose(f32, x, tolerance("f64"))).toThrow();
  });
});
