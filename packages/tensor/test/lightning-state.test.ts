/**
 * `lightningState`: the state a span adds from zero (and, reversed, the part of an initial state's
 * gradient that comes through the output) against the float64 masked-form oracle of
 * testing/oracle.ts (its final state S_T from a zero S₀, and its dS₀ with dS_T = 0) and its float64
 * definition on spans too long for the quadratic oracle. Fresh seeded
 * inputs, odd sizes, spans shorter and longer than the decomposition's 1,024-token chunk, f64, f32,
 * bf16 and f16; clear errors for bad arguments.
 */
import { describe, expect, it } from "vitest";
import * as T from "../src/index.js";
import { closeness, oracle, seeded } from "../src/testing/index.js";
import { stateDefinition } from "./lightning-state-oracle.js";

const CASES = [
  { B: 1, H: 1, T: 1, D: 3, E: 2 },
  { B: 2, H: 3, T: 37, D: 5, E: 7 },
  { B: 1, H: 2, T: 2048, D: 4, E: 3 }, // two of the decomposition's chunks
];

/** Relative RMS error each dtype may show against float64 (16-bit: the rounding of k·w). */
const TOLERANCE = { f64: 1e-12, f32: 1e-6, bf16: 5e-3, f16: 1e-3 } as const;

describe("lightningState", () => {
  const rng = seeded(4421);
  for (const dtype of ["f64", "f32", "bf16", "f16"] as const) {
    for (const reverse of [false, true]) {
      it(`is the oracle's ${reverse ? "dS₀ through the output" : "final state from zero"} (${dtype})`, () => {
        for (const dims of CASES) {
          const frame = T.beginScope();
          try {
            const { B, H, T: L, D, E } = dims;
            const k = rng.tensor([B, H, L, D], { dtype });
            const v = rng.tensor([B, H, L, E], { dtype });
            // Slopes from strong decay to almost none, so both ends of the span count.
            const slopes = T.tensor(Array.from({ length: H }, (_, h) => [0.3, 0.002, 0.05][h % 3]), [H]);
            const S = T.lightningState(k, v, slopes, { reverse });
            expect([S.dtype, S.shape]).toEqual([dtype === "f64" ? "f64" : "f32", [B, H, D, E]]);
            const ref = stateDefinition(dims, k.dataSync(), v.dataSync(), slopes.dataSync(), reverse);
            if (L < 100) {
              // The definition is the oracle's: with q := k and dO := v (dS_T = 0) its dS₀ is Σ_t λ^{t+1} k_tᵀ v_t.
              const zeros = new Float64Array(B * H * D * E);
              const masked = reverse
                ? oracle.lightningAttention(dims, k.dataSync(), k.dataSync(), new Float64Array(B * H * L * E), slopes.dataSync(), zeros, { dO: v.dataSync(), dS: zeros }).dS0
                : oracle.lightningAttention(dims, k.dataSync(), k.dataSync(), v.dataSync(), slopes.dataSync()).S;
              expect(closeness(ref, masked).relRms).toBeLessThan(1e-12);
            }
            const c = closeness(S.dataSync(), ref);
            expect(c.relRms, `${JSON.stringify(dims)}: ${JSON.stringify(c)}`).toBeLessThan(TOLERANCE[dtype]);
          } finally {
            T.endScope(frame);
          }
        }
      });
    }
  }

  it("is the final state lightningAttention returns from zero (f32, same inputs)", () => {
    const frame = T.beginScope();
    try {
      const [B, H, L, D, E] = [2, 2, 77, 6, 5];
      const q = rng.tensor([B, H, L, D]);
      const k = rng.tensor([B, H, L, D]);
      const v = rng.tensor([B, H, L, E]);
      const slopes = T.tensor([0.1, 0.01], [H]);
      const { state } = T.lightningAttention(q, k, v, slopes, { returnState: true });
      const c = closeness(T.lightningState(k, v, slopes).dataSync(), state.dataSync());
      expect(c.relRms).toBeLessThan(1e-6);
    } finally {
      T.endScope(frame);
    }
  });

  it("says which argument is wrong", () => {
    const frame = T.beginScope();
    try {
      const k = rng.tensor([1, 2, 5, 3]);
      const v = rng.tensor([1, 2, 5, 4]);
      const slopes = T.tensor([0.1, 0.2], [2]);
      expect(() => T.lightningState(k, rng.tensor([1, 2, 6, 4]), slopes)).toThrow(/lightningState: argument 'v' expected shape \[1, 2, 5, E\] \(B, H, T as k\), got \[1, 2, 6, 4\]/);
      expect(() => T.lightningState(k, T.cast(v, "bf16"), slopes)).toThrow(/lightningState: argument 'v' expected dtype f32/);
      expect(() => T.lightningState(k, v, T.tensor([0.1], [1]))).toThrow(/lightningState: argument 'slopes' expected shape \[2\]/);
      expect(() => T.lightningState(T.reshape(k, [2, 5, 3]), v, slopes)).toThrow(/lightningState: argument 'k'/);
      expect(() => T.lightningState(k, v, slopes, null as never)).toThrow(/lightningState: argument 'options'/);
      expect(() => T.lightningState(k, v, slopes, { reverse: 1 as never })).toThrow(/lightningState: argument 'reverse' expected a boolean/);
    } finally {
      T.endScope(frame);
    }
  });
});
