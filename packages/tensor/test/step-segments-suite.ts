/**
 * lightningStep with prompt segments on one backend (shared by the CPU and CUDA test files): a step
 * in which each state row reads several tokens (its earlier tokens as extra rows after the B rows of
 * last tokens) against the same tokens stepped one at a time on each row alone — bit for bit, since
 * a segment runs each token's arithmetic of the one-token step — and against the float64 recurrence
 * on the host. Seeded random layouts: rows with no earlier tokens, long segments, extra rows no
 * segment names (their output is zero), odd head sizes. Then in place, and the errors.
 *
 * Letters: B state rows, N token rows (N ≥ B), H heads, D query/key head dim, E value head dim.
 */
import * as T from "@lightning-ts/tensor";
import type { Backend, DType, Tensor } from "@lightning-ts/tensor";
import { closeness, seeded } from "@lightning-ts/tensor/testing";
import { expect, it } from "vitest";

interface SegmentCase {
  B: number;
  H: number;
  D: number;
  E: number;
  /** Most earlier tokens of one row (each row gets 0 … this many, seeded). */
  most: number;
  /** Token rows after the segments that no row reads. */
  unused: number;
}

/** The head shapes a decoder runs (D = 2·E is the LRPE layer's), and odd ones for the general paths. */
const CASES: SegmentCase[] = [
  { B: 3, H: 2, D: 128, E: 128, most: 17, unused: 2 },
  { B: 4, H: 3, D: 64, E: 64, most: 5, unused: 0 },
  { B: 2, H: 2, D: 256, E: 128, most: 13, unused: 3 },
  { B: 3, H: 5, D: 24, E: 40, most: 4, unused: 1 },
  { B: 2, H: 3, D: 17, E: 33, most: 3, unused: 2 },
];

const STEP_BOUND: Record<string, number> = { f64: 1e-12, f32: 1e-5, bf16: 6e-3, f16: 1e-3 };

function floatDTypes(be: Backend): DType[] {
  return (["f32", "bf16", "f16", "f64"] as const).filter((d) => be.capabilities.dtypes.includes(d));
}

function expectSameBytes(a: Uint8Array, b: Uint8Array, label: string): void {
  expect(a.byteLength, `${label}: byte length`).toBe(b.byteLength);
  expect(
    a.findIndex((x, j) => x !== b[j]),
    `${label}: first differing byte`,
  ).toBe(-1);
}

/** A seeded layout: each row's count of earlier tokens, the offsets, and each row's token rows in order. */
function layout(c: SegmentCase, seed: number) {
  const rng = seeded(seed);
  const counts = Array.from({ length: c.B }, (_, b) => (b === 0 ? c.most : rng.int(c.most + 1)));
  const offsets = [0];
  for (const n of counts) offsets.push(offsets[offsets.length - 1] + n);
  const N = c.B + offsets[c.B] + c.unused;
  const rows = counts.map((n, b) => [...Array.from({ length: n }, (_, j) => c.B + offsets[b] + j), b]);
  return { offsets, N, rows };
}

function inputs(be: Backend, c: SegmentCase, N: number, dtype: DType, seed: number) {
  const rng = seeded(seed);
  const stateDType = dtype === "f64" ? "f64" : "f32";
  const slopeValues = T.tnlSlopes(c.H, rng.int(6), 6);
  return {
    q: rng.tensor([N, c.H, c.D], { std: 0.5, dtype, backend: be }),
    k: rng.tensor([N, c.H, c.D], { std: 0.5, dtype, backend: be }),
    v: rng.tensor([N, c.H, c.E], { std: 0.5, dtype, backend: be }),
    slopeValues,
    slopes: T.tensor(slopeValues, [c.H], { backend: be }),
    state: rng.tensor([c.B, c.H, c.D, c.E], { std: 0.5, dtype: stateDType, backend: be }),
  };
}

/** Runs `fn` with the tensors it makes freed after it. */
async function scoped(fn: () => Promise<void>): Promise<void> {
  const frame = T.beginScope();
  try {
    await fn();
  } finally {
    T.endScope(frame);
  }
}

/** Row `r` of x as a tensor of one row. */
const row = (x: Tensor, r: number) => T.narrow(x, 0, r, 1);

export function stepSegmentsSuite(backend: () => Backend): void {
  for (const c of CASES) {
    it(`segments == one-token steps bit for bit, and the float64 recurrence: B=${c.B} H=${c.H} D×E=${c.D}×${c.E}, up to ${c.most} earlier tokens`, async () => {
      const be = backend();
      for (const [n, dtype] of floatDTypes(be).entries()) {
        const { offsets, N, rows } = layout(c, 31 + n);
        await scoped(async () => {
          const x = inputs(be, c, N, dtype, 700 + n);
          const segments = T.tensor(offsets, [c.B + 1], { dtype: "i32", backend: be });
          const got = T.lightningStep(x.q, x.k, x.v, x.slopes, x.state, { segments });
          expect(got.output.shape).toEqual([N, c.H, c.E]);
          expect(got.state.shape).toEqual([c.B, c.H, c.D, c.E]);
          const out = await got.output.bytes();
          const rowBytes = (out.byteLength / N) | 0;
          const stateBytes = await got.state.bytes();
          const stateRowBytes = stateBytes.byteLength / c.B;
          const q64 = Float64Array.from(await x.q.data());
          const k64 = Float64Array.from(await x.k.data());
          const v64 = Float64Array.from(await x.v.data());
          const S64 = Float64Array.from(await x.state.data());
          const o64 = new Float64Array(N * c.H * c.E);
          for (let b = 0; b < c.B; b++) {
            // The same tokens one step at a time on this row alone.
            let S = row(x.state, b);
            for (const t of rows[b]) {
              const one = T.lightningStep(row(x.q, t), row(x.k, t), row(x.v, t), x.slopes, S);
              expectSameBytes(out.subarray(t * rowBytes, (t + 1) * rowBytes), await one.output.bytes(), `${dtype} output row ${t} (state row ${b})`);
              S = one.state;
            }
            expectSameBytes(stateBytes.subarray(b * stateRowBytes, (b + 1) * stateRowBytes), await S.bytes(), `${dtype} state row ${b}`);
            // The recurrence in float64 on the values the tensors hold.
            const DE = c.D * c.E;
            const Sb = S64.slice(b * c.H * DE, (b + 1) * c.H * DE);
            for (const t of rows[b]) {
              for (let h = 0; h < c.H; h++) {
                const lambda = Math.exp(-Math.fround(x.slopeValues[h]));
                const qi = (t * c.H + h) * c.D;
                const vi = (t * c.H + h) * c.E;
                for (let d = 0; d < c.D; d++) {
                  for (let e = 0; e < c.E; e++) {
                    const i = h * DE + d * c.E + e;
                    Sb[i] = lambda * Sb[i] + k64[qi + d] * v64[vi + e];
                    o64[vi + e] += q64[qi + d] * Sb[i];
                  }
                }
              }
            }
          }
          const o = Float64Array.from(await got.output.data());
          const usedRows = c.B + offsets[c.B];
          expect(closeness(o.subarray(0, usedRows * c.H * c.E), o64.subarray(0, usedRows * c.H * c.E)).relRms, `${dtype} output vs float64`).toBeLessThan(STEP_BOUND[dtype]);
          expect(Array.from(o.subarray(usedRows * c.H * c.E)).every((y) => y === 0), `${dtype}: rows no segment reads are zero`).toBe(true);
        });
      }
    });
  }

  it("segments in place give the bits of segments out of place, over the state's storage", async () => {
    const be = backend();
    const c = CASES[0];
    const { offsets, N } = layout(c, 5);
    await scoped(async () => {
      const x = inputs(be, c, N, floatDTypes(be).includes("bf16") ? "bf16" : "f32", 9);
      const segments = T.tensor(offsets, [c.B + 1], { dtype: "i32", backend: be });
      const ref = T.lightningStep(x.q, x.k, x.v, x.slopes, x.state, { segments });
      const refOut = await ref.output.bytes();
      const refState = await ref.state.bytes();
      const got = T.lightningStep(x.q, x.k, x.v, x.slopes, x.state, { segments, inPlace: true });
      expect(got.state.handle).toBe(x.state.handle);
      expectSameBytes(await got.output.bytes(), refOut, "output");
      expectSameBytes(await x.state.bytes(), refState, "state");
    });
  });

  it("refuses segments that are not i32 [B + 1], a state with more rows than tokens, and offsets out of order", async () => {
    const be = backend();
    await scoped(async () => {
      const rng = seeded(3);
      const [B, H, D, E, N] = [2, 2, 8, 8, 5];
      const q = rng.tensor([N, H, D], { backend: be });
      const v = rng.tensor([N, H, E], { backend: be });
      const slopes = T.tensor(T.tnlSlopes(H, 0, 2), [H], { backend: be });
      const state = rng.tensor([B, H, D, E], { backend: be });
      const seg = (values: number[], dtype: DType = "i32") => T.tensor(values, [values.length], { dtype, backend: be });
      expect(() => T.lightningStep(q, q, v, slopes, state, { segments: seg([0, 1, 3], "f32") })).toThrow(/lightningStep.*segments.*i32/);
      expect(() => T.lightningStep(q, q, v, slopes, state, { segments: seg([0, 3]) })).toThrow(/lightningStep.*segments.*\[3\]/);
      expect(() => T.lightningStep(q, q, v, slopes, state, { segments: [0, 1, 3] as never })).toThrow(/lightningStep.*options\.segments.*i32 Tensor/);
      const wide = rng.tensor([6, H, D, E], { backend: be });
      expect(() => T.lightningStep(q, q, v, slopes, wide, { segments: seg([0, 0, 0, 0, 0, 0, 0]) })).toThrow(/lightningStep.*segments.*at most 5 rows.*6 rows/);
      // Offsets are data: the CPU refuses them at the call, a GPU at the next read.
      for (const bad of [
        [0, 2, 1],
        [0, 1, 4],
        [-1, 0, 1],
      ]) {
        const run = async () => {
          const r = T.lightningStep(q, q, v, slopes, state, { segments: seg(bad) });
          await r.output.data();
        };
        await expect(run(), `offsets ${bad.join(", ")}`).rejects.toThrow(/lightningStep.*segments/);
      }
      // The backend works on after a refused table.
      const ok = T.lightningStep(q, q, v, slopes, state, { segments: seg([0, 1, 3]) });
      expect((await ok.output.data()).every(Number.isFinite)).toBe(true);
    });
  });
}
