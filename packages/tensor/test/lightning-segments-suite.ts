/**
 * The segment states of Lightning Attention (`segmentTokens`) on one backend, shared by the CPU and
 * WebGPU test files: the float64 oracle of the states entering tokens 0, L, 2L, …, and the backward
 * given those states against the backward without them, bit for bit, for backends that do not read
 * them (the CPU and WebGPU make their own states). The input is positional: without an initial state
 * the segment states are input 6, and a kernel that took input 6 for the initial state would give
 * other gradients. Seeded random inputs of odd sizes, T on both sides of a segment boundary.
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim, L tokens per segment,
 * N = ⌈T/L⌉ segment states.
 */
import * as T from "@lightning-ts/tensor";
import type { Backend, DType, Tensor } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/tensor/testing";
import { expect, it } from "vitest";

export type Impl = T.LightningAttentionAttrs["impl"];

export interface SegmentDims {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
}

/**
 * The states entering tokens 0, L, 2L, … by the token recurrence S ← λ S + k_tᵀ v_t in float64, from
 * the initial state s0 (or zeros): [B, H, ⌈T/L⌉, D, E] flat, entry j taken before token jL.
 */
export function segmentStatesOracle(
  { B, H, T: Tn, D, E }: SegmentDims,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  slopes: ArrayLike<number>,
  s0: ArrayLike<number> | undefined,
  L: number,
): Float64Array {
  const N = Math.ceil(Tn / L);
  const DE = D * E;
  const out = new Float64Array(B * H * N * DE);
  for (let bh = 0; bh < B * H; bh++) {
    const S = new Float64Array(DE);
    if (s0) for (let i = 0; i < DE; i++) S[i] = s0[bh * DE + i];
    const lambda = Math.exp(-slopes[bh % H]);
    for (let t = 0; t < Tn; t++) {
      if (t % L === 0) out.set(S, (bh * N + t / L) * DE);
      const ki = (bh * Tn + t) * D;
      const vi = (bh * Tn + t) * E;
      for (let d = 0; d < D; d++) for (let e = 0; e < E; e++) S[d * E + e] = lambda * S[d * E + e] + k[ki + d] * v[vi + e];
    }
  }
  return out;
}

/** Seeded inputs on `be`: q, k, v in `dtype` (N(0, 0.1²)), TNL slopes of a random layer, the initial state and upstream gradients. */
export function segmentInputs(be: Backend, c: SegmentDims, dtype: DType, seed: number) {
  const rng = seeded(seed);
  const stateDType = dtype === "f64" ? "f64" : "f32";
  const slopeValues = T.tnlSlopes(c.H, rng.int(4), 4).map(Math.fround);
  return {
    q: rng.tensor([c.B, c.H, c.T, c.D], { std: 0.1, dtype, backend: be }),
    k: rng.tensor([c.B, c.H, c.T, c.D], { std: 0.1, dtype, backend: be }),
    v: rng.tensor([c.B, c.H, c.T, c.E], { std: 0.1, dtype, backend: be }),
    slopeValues,
    slopes: T.slopesTensor(slopeValues, be),
    s0: rng.tensor([c.B, c.H, c.D, c.E], { std: 0.1, dtype: stateDType, backend: be }),
    dO: rng.tensor([c.B, c.H, c.T, c.E], { std: 0.1, dtype, backend: be }),
    dS: rng.tensor([c.B, c.H, c.D, c.E], { std: 0.1, dtype: stateDType, backend: be }),
  };
}

/** Runs `fn` with the tensors it makes freed after it. */
export async function scoped(fn: () => Promise<void>): Promise<void> {
  const frame = T.beginScope();
  try {
    await fn();
  } finally {
    T.endScope(frame);
  }
}

/** The index of the first element that differs (−1: none; 0 and −0 differ, NaN equals NaN). */
export function firstDifference(a: Float64Array, b: Float64Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  return a.findIndex((x, i) => !Object.is(x, b[i]));
}

/** (B, H, T, D, E, L): T below, at, just past and well past a segment boundary; odd heads. */
const BACKWARD_CASES: [SegmentDims, number][] = [
  [{ B: 1, H: 2, T: 65, D: 3, E: 5 }, 64],
  [{ B: 2, H: 1, T: 200, D: 5, E: 3 }, 128],
  [{ B: 1, H: 3, T: 1, D: 4, E: 7 }, 64],
  [{ B: 1, H: 2, T: 130, D: 8, E: 12 }, 64],
];

/**
 * The backward with the forward's segment states (oracle values in the state dtype) against the
 * backward without them, through runOp and through `lightningAttentionBackward`'s options, with and
 * without an initial state: bit for bit, for a backend that does not read them.
 */
export function segmentStatesBackwardSuite(backend: () => Backend, impls: readonly Impl[] = ["chunked"]): void {
  for (const [c, L] of BACKWARD_CASES) {
    it(`the backward ignores the segment states it is given: B=${c.B} H=${c.H} T=${c.T} D=${c.D} E=${c.E} L=${L}`, async () => {
      const be = backend();
      const dtypes = (["f64", "f32", "bf16"] as const).filter((d) => be.capabilities.dtypes.includes(d));
      let seed = 40 + c.T;
      for (const dtype of dtypes) {
        for (const withInit of [false, true]) {
          await scoped(async () => {
            const x = segmentInputs(be, c, dtype, seed++);
            const s0 = withInit ? x.s0 : undefined;
            const values = async (t: Tensor) => Float64Array.from(await t.data());
            const want = segmentStatesOracle(c, await values(x.k), await values(x.v), x.slopeValues, s0 ? await values(s0) : undefined, L);
            const states = T.tensor(want, [c.B, c.H, Math.ceil(c.T / L), c.D, c.E], { dtype: dtype === "f64" ? "f64" : "f32", backend: be });
            for (const impl of impls) {
              const base = [x.q, x.k, x.v, x.slopes, x.dO, x.dS, ...(s0 ? [s0] : [])];
              const attrs = { blockSize: 16, impl, hasInitialState: withInit };
              const plain = T.runOp("lightningAttentionBackward", base, attrs);
              const given = T.runOp("lightningAttentionBackward", [...base, states], { ...attrs, segmentTokens: L });
              const api = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { blockSize: 16, impl, initialState: s0, segmentStates: states, segmentTokens: L });
              const fromApi = [api.dq, api.dk, api.dv, ...(api.dInitialState ? [api.dInitialState] : [])];
              expect(given.length).toBe(4);
              expect(api.dInitialState !== undefined).toBe(withInit);
              for (const [i, name] of ["dq", "dk", "dv", "dInitialState"].entries()) {
                const label = `${impl} ${dtype}${withInit ? ", initial state" : ""}: ${name}`;
                const p = await values(plain[i]);
                expect(firstDifference(await values(given[i]), p), `${label} (runOp)`).toBe(-1);
                if (fromApi[i]) expect(firstDifference(await values(fromApi[i]), p), `${label} (lightningAttentionBackward)`).toBe(-1);
              }
            }
          });
        }
      }
    });
  }
}
