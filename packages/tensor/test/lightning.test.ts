/**
 * Lightning Attention on the CPU: the invariants of docs/ALGORITHM.md G. Kernel agreement is checked
 * in f64 (so disagreements are bugs, not rounding), against both the kernels' quadratic form and
 * the independent masked-form oracle of @lightning-ts/tensor/testing.
 */
import { describe, expect, it } from "vitest";
import { assertClose, oracle, seeded } from "../src/testing/index.js";
import * as T from "../src/index.js";

type Impl = "chunked" | "recurrent" | "quadratic";
const IMPLS: Impl[] = ["chunked", "recurrent", "quadratic"];

interface Case {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
}

/** Seeded inputs as in the LA-repo tests (N(0, 1)/10), slopes from the TNL table of a random layer. */
function inputs(c: Case, seed: number, dtype: T.DType = "f64", withState = false) {
  const rng = seeded(seed);
  const q = rng.tensor([c.B, c.H, c.T, c.D], { std: 0.1, dtype });
  const k = rng.tensor([c.B, c.H, c.T, c.D], { std: 0.1, dtype });
  const v = rng.tensor([c.B, c.H, c.T, c.E], { std: 0.1, dtype });
  const slopeValues = T.tnlSlopes(c.H, rng.int(4), 4);
  const slopes = T.slopesTensor(slopeValues);
  const stateDType = dtype === "f64" ? "f64" : "f32";
  const state = withState ? rng.tensor([c.B, c.H, c.D, c.E], { std: 0.1, dtype: stateDType }) : undefined;
  const dO = rng.tensor([c.B, c.H, c.T, c.E], { std: 0.1, dtype });
  const dS = rng.tensor([c.B, c.H, c.D, c.E], { std: 0.1, dtype: stateDType });
  return { q, k, v, slopes, slopeValues, state, dO, dS };
}

const f64 = (t: T.Tensor) => Float64Array.from(t.dataSync());
const tight = { atol: 1e-12, rtol: 1e-12 };

/** Each value of T, D/E and H in the sets appears at least once. */
const AGREEMENT_CASES: Case[] = [
  { B: 1, H: 1, T: 1, D: 16, E: 16 },
  { B: 2, H: 6, T: 63, D: 32, E: 48 },
  { B: 1, H: 8, T: 64, D: 48, E: 32 },
  { B: 1, H: 12, T: 65, D: 64, E: 96 },
  { B: 1, H: 8, T: 65, D: 128, E: 16 },
  { B: 2, H: 1, T: 513, D: 96, E: 64 },
  { B: 1, H: 6, T: 513, D: 16, E: 128 },
  { B: 1, H: 1, T: 1000, D: 128, E: 128 },
];

describe("lightningAttention: chunked == recurrent == quadratic", () => {
  for (const c of AGREEMENT_CASES) {
    const withState = c.T % 2 === 1;
    it(`B=${c.B} H=${c.H} T=${c.T} D=${c.D} E=${c.E}${withState ? " with an initial state" : ""}`, () => {
      const x = inputs(c, c.T * 31 + c.D, "f64", withState);
      const results = IMPLS.map((impl) =>
        T.scope(() => {
          const { output, state } = T.lightningAttention(x.q, x.k, x.v, x.slopes, { impl, returnState: true, initialState: x.state });
          const g = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { impl, initialState: x.state });
          return { o: f64(output), S: f64(state), dq: f64(g.dq), dk: f64(g.dk), dv: f64(g.dv), dS0: g.dInitialState ? f64(g.dInitialState) : null };
        }),
      );
      const [chunked, recurrent, quadratic] = results as [(typeof results)[0], (typeof results)[0], (typeof results)[0]];
      for (const other of [recurrent, chunked]) {
        assertClose(other.o, quadratic.o, { ...tight, label: "output" });
        assertClose(other.S, quadratic.S, { ...tight, label: "final state" });
        assertClose(other.dq, quadratic.dq, { ...tight, label: "dq" });
        assertClose(other.dk, quadratic.dk, { ...tight, label: "dk" });
        assertClose(other.dv, quadratic.dv, { ...tight, label: "dv" });
        if (withState) assertClose(other.dS0!, quadratic.dS0!, { ...tight, label: "dInitialState" });
      }
      for (const t of [x.q, x.k, x.v, x.slopes, x.dO, x.dS, x.state]) t?.dispose();
    });
  }
});

describe("lightningAttention against the independent masked-form oracle", () => {
  for (const [c, withState] of [
    [{ B: 1, H: 1, T: 1, D: 3, E: 5 }, false],
    [{ B: 2, H: 3, T: 7, D: 5, E: 4 }, true],
    [{ B: 1, H: 2, T: 70, D: 6, E: 9 }, true],
  ] as [Case, boolean][]) {
    it(`B=${c.B} H=${c.H} T=${c.T} D=${c.D} E=${c.E}, forward and gradients, f64 and f32`, () => {
      for (const dtype of ["f64", "f32"] as T.DType[]) {
        const x = inputs(c, 5 + c.T, dtype, withState);
        const want = oracle.lightningAttention(c, f64(x.q), f64(x.k), f64(x.v), x.slopeValues.map(Math.fround), x.state ? f64(x.state) : undefined, {
          dO: f64(x.dO),
          dS: f64(x.dS),
        });
        const tol = dtype === "f64" ? tight : { atol: 1e-6, rtol: 2e-6 };
        for (const impl of IMPLS) {
          T.scope(() => {
            const { output, state } = T.lightningAttention(x.q, x.k, x.v, x.slopes, { impl, blockSize: 4, returnState: true, initialState: x.state });
            const g = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { impl, blockSize: 4, initialState: x.state });
            assertClose(f64(output), want.o, { ...tol, label: `${impl} output ${dtype}` });
            assertClose(f64(state), want.S, { ...tol, label: `${impl} state ${dtype}` });
            assertClose(f64(g.dq), want.dq, { ...tol, label: `${impl} dq ${dtype}` });
            assertClose(f64(g.dk), want.dk, { ...tol, label: `${impl} dk ${dtype}` });
            assertClose(f64(g.dv), want.dv, { ...tol, label: `${impl} dv ${dtype}` });
            if (withState) assertClose(f64(g.dInitialState!), want.dS0, { ...tol, label: `${impl} dS0 ${dtype}` });
          });
        }
        for (const t of [x.q, x.k, x.v, x.slopes, x.dO, x.dS, x.state]) t?.dispose();
      }
    });
  }
});

describe("lightningAttention f32 GEMM path against the float64 scalar kernel", () => {
  // f32/f16/bf16 chunked calls run as batched GEMMs; f64 keeps the scalar LA-2 loops tested above.
  for (const [c, blockSize, withState] of [
    [{ B: 1, H: 1, T: 1, D: 16, E: 16 }, 64, false],
    [{ B: 2, H: 3, T: 63, D: 20, E: 12 }, 16, true],
    [{ B: 1, H: 2, T: 64, D: 48, E: 96 }, 64, true],
    [{ B: 3, H: 1, T: 200, D: 7, E: 33 }, 37, false],
    [{ B: 1, H: 6, T: 513, D: 64, E: 64 }, 64, true],
  ] as [Case, number, boolean][]) {
    it(`B=${c.B} H=${c.H} T=${c.T} D=${c.D} E=${c.E} blockSize=${blockSize}${withState ? " with a state" : ""}`, () => {
      const x = inputs(c, 1000 + c.T, "f32", withState);
      T.scope(() => {
        const as64 = (t: T.Tensor | undefined) => (t ? T.cast(t, "f64") : undefined);
        const [q, k, v, dO, dS, s0] = [x.q, x.k, x.v, x.dO, x.dS, x.state].map(as64) as T.Tensor[];
        const want = T.lightningAttention(q, k, v, x.slopes, { blockSize, returnState: true, initialState: s0 });
        const wantG = T.lightningAttentionBackward(q, k, v, x.slopes, dO, dS, { blockSize, initialState: s0 });
        const got = T.lightningAttention(x.q, x.k, x.v, x.slopes, { blockSize, returnState: true, initialState: x.state });
        const g = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { blockSize, initialState: x.state });
        const tol = { atol: 1e-6, rtol: 3e-6 };
        assertClose(f64(got.output), f64(want.output), { ...tol, label: "output" });
        assertClose(f64(got.state), f64(want.state), { ...tol, label: "state" });
        assertClose(f64(g.dq), f64(wantG.dq), { ...tol, label: "dq" });
        assertClose(f64(g.dk), f64(wantG.dk), { ...tol, label: "dk" });
        assertClose(f64(g.dv), f64(wantG.dv), { ...tol, label: "dv" });
        if (withState) assertClose(f64(g.dInitialState!), f64(wantG.dInitialState!), { ...tol, label: "dInitialState" });
      });
      for (const t of [x.q, x.k, x.v, x.slopes, x.dO, x.dS, x.state]) t?.dispose();
    });
  }
});

describe("lightningAttention invariants", () => {
  it("does not depend on the block size", () => {
    const c = { B: 1, H: 3, T: 300, D: 24, E: 20 };
    const x = inputs(c, 77, "f64", true);
    const ref = T.scope(() => f64(T.lightningAttention(x.q, x.k, x.v, x.slopes, { impl: "quadratic", initialState: x.state })));
    for (const blockSize of [1, 7, 16, 32, 64, 100, 128, 256, 1000]) {
      T.scope(() => {
        const o = T.lightningAttention(x.q, x.k, x.v, x.slopes, { blockSize, initialState: x.state });
        const g = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { blockSize, initialState: x.state });
        const g64 = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { blockSize: 64, initialState: x.state });
        assertClose(f64(o), ref, { ...tight, label: `blockSize ${blockSize}` });
        assertClose(f64(g.dk), f64(g64.dk), { ...tight, label: `dk blockSize ${blockSize}` });
        assertClose(f64(g.dq), f64(g64.dq), { ...tight, label: `dq blockSize ${blockSize}` });
      });
    }
  });

  it("carries state: [X1; X2] in one call equals X1 → state → X2", () => {
    for (const dtype of ["f64", "f32"] as T.DType[]) {
      const c = { B: 2, H: 4, T: 137, D: 16, E: 12 };
      const x = inputs(c, 91, dtype);
      T.scope(() => {
        const whole = T.lightningAttention(x.q, x.k, x.v, x.slopes, { returnState: true });
        const cut = 37; // not a block boundary
        const part = (t: T.Tensor, a: number, b: number) => T.narrow(t, 2, a, b - a);
        const first = T.lightningAttention(part(x.q, 0, cut), part(x.k, 0, cut), part(x.v, 0, cut), x.slopes, { returnState: true });
        const second = T.lightningAttention(part(x.q, cut, c.T), part(x.k, cut, c.T), part(x.v, cut, c.T), x.slopes, {
          returnState: true,
          initialState: first.state,
        });
        const tol = dtype === "f64" ? { atol: 1e-7, rtol: 1e-7 } : { atol: 1e-6, rtol: 1e-5 };
        assertClose(f64(T.concat([first.output, second.output], 2)), f64(whole.output), { ...tol, label: `outputs ${dtype}` });
        assertClose(f64(second.state), f64(whole.state), { ...tol, label: `state ${dtype}` });
      });
    }
  });

  it("is causal: changing inputs after t leaves outputs up to t bit-identical", () => {
    const c = { B: 1, H: 2, T: 150, D: 8, E: 8 };
    const rng = seeded(12);
    for (const impl of IMPLS) {
      for (const t of [0, 63, 64, 100]) {
        const x = inputs(c, 3, "f32");
        const base = T.scope(() => f64(T.lightningAttention(x.q, x.k, x.v, x.slopes, { impl })));
        // Replace q, k, v after position t with fresh values.
        const tail = c.T - t - 1;
        const mix = (a: T.Tensor, last: number) =>
          T.concat([T.narrow(a, 2, 0, t + 1), rng.tensor([1, 2, tail, last], { std: 5 })], 2);
        const changed = T.scope(() => f64(T.lightningAttention(mix(x.q, 8), mix(x.k, 8), mix(x.v, 8), x.slopes, { impl })));
        const upTo = (arr: Float64Array, h: number) => arr.slice(h * c.T * 8, (h * c.T + t + 1) * 8);
        for (const h of [0, 1]) expect(upTo(changed, h)).toEqual(upTo(base, h));
        expect(changed).not.toEqual(base);
        for (const u of [x.q, x.k, x.v, x.slopes, x.dO, x.dS]) u.dispose();
      }
    }
  });

  it("handles slope 0 (no decay), λ close to 1 and strong decay", () => {
    const c = { B: 1, H: 3, T: 77, D: 5, E: 6 };
    const x = inputs(c, 44, "f64", true);
    const values = [0, 1e-5 / 2, 0.9];
    const slopes = T.slopesTensor(values);
    const want = oracle.lightningAttention(c, f64(x.q), f64(x.k), f64(x.v), values.map(Math.fround), f64(x.state!));
    for (const impl of IMPLS) {
      T.scope(() => assertClose(f64(T.lightningAttention(x.q, x.k, x.v, slopes, { impl, blockSize: 16, initialState: x.state })), want.o, { ...tight, label: impl }));
    }
    slopes.dispose();
  });

  it("stays finite over long sequences with λ ≈ 1 and with strong decay", () => {
    const c = { B: 1, H: 2, T: 20000, D: 8, E: 8 };
    const x = inputs(c, 5, "f32");
    const slopes = T.slopesTensor([1e-7, 0.9]);
    T.scope(() => {
      const { output, state } = T.lightningAttention(x.q, x.k, x.v, slopes, { returnState: true });
      const rec = T.lightningAttention(x.q, x.k, x.v, slopes, { impl: "recurrent" });
      expect(f64(output).every(Number.isFinite)).toBe(true);
      expect(f64(state).every(Number.isFinite)).toBe(true);
      assertClose(f64(output), f64(rec), { atol: 1e-4, rtol: 1e-5, label: "long sequence" });
    });
    slopes.dispose();
  });

  it("gradients match central finite differences in float64", () => {
    const c = { B: 1, H: 2, T: 19, D: 3, E: 4 };
    const x = inputs(c, 8, "f64", true);
    const rng = seeded(99);
    // L = <dO, o> + <dS, S_T>: its gradient is exactly what the backward op returns.
    const loss = (q: T.Tensor, k: T.Tensor, v: T.Tensor, s0: T.Tensor) =>
      T.scope(() => {
        const { output, state } = T.lightningAttention(q, k, v, x.slopes, { blockSize: 8, returnState: true, initialState: s0 });
        const a = f64(output);
        const b = f64(state);
        const dO = f64(x.dO);
        const dS = f64(x.dS);
        return a.reduce((p, y, i) => p + y * dO[i], 0) + b.reduce((p, y, i) => p + y * dS[i], 0);
      });
    const g = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { blockSize: 8, initialState: x.state });
    const args = { q: x.q, k: x.k, v: x.v, s0: x.state! };
    const analytic = { q: f64(g.dq), k: f64(g.dk), v: f64(g.dv), s0: f64(g.dInitialState!) };
    for (const name of ["q", "k", "v", "s0"] as const) {
      const base = f64(args[name]);
      for (let trial = 0; trial < 6; trial++) {
        const i = rng.int(base.length);
        const eps = 1e-6;
        const at = (delta: number) => {
          const moved = Float64Array.from(base);
          moved[i] += delta;
          const t = T.tensor(moved, args[name].shape, { dtype: "f64" });
          const a = { ...args, [name]: t };
          const r = loss(a.q, a.k, a.v, a.s0);
          t.dispose();
          return r;
        };
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        expect(Math.abs(numeric - analytic[name][i])).toBeLessThan(1e-7 * Math.max(1, Math.abs(numeric)));
      }
    }
    for (const t of [x.q, x.k, x.v, x.slopes, x.dO, x.dS, x.state, g.dq, g.dk, g.dv, g.dInitialState]) t?.dispose();
  });

  it("lightningStep repeated over a sequence equals the forward and its final state", () => {
    const c = { B: 2, H: 3, T: 11, D: 7, E: 5 };
    const x = inputs(c, 21, "f32", true);
    T.scope(() => {
      const { output, state } = T.lightningAttention(x.q, x.k, x.v, x.slopes, { returnState: true, initialState: x.state });
      let s = x.state!;
      const outs: T.Tensor[] = [];
      for (let t = 0; t < c.T; t++) {
        const at = (a: T.Tensor) => T.reshape(T.narrow(a, 2, t, 1), [c.B, c.H, a.shape[3]]);
        const step = T.lightningStep(at(x.q), at(x.k), at(x.v), x.slopes, s);
        outs.push(T.reshape(step.output, [c.B, c.H, 1, c.E]));
        s = step.state;
      }
      assertClose(f64(T.concat(outs, 2)), f64(output), { atol: 1e-6, rtol: 1e-6, label: "step outputs" });
      assertClose(f64(s), f64(state), { atol: 1e-6, rtol: 1e-6, label: "step state" });
    });
  });
});

describe("lightningStep: the fused f32 step against its float64 twin", () => {
  for (const dtype of ["f32", "f16", "bf16"] as const) {
    it(`${dtype}: odd B, H, D, E`, () => {
      for (const [i, c] of [{ B: 1, H: 3, T: 1, D: 17, E: 13 }, { B: 3, H: 5, T: 1, D: 7, E: 29 }, { B: 2, H: 1, T: 1, D: 130, E: 1 }].entries()) {
        const x = inputs(c, 40 + i, dtype, true);
        T.scope(() => {
          const at = (a: T.Tensor) => T.reshape(a, [c.B, c.H, a.shape[3]]);
          const got = T.lightningStep(at(x.q), at(x.k), at(x.v), x.slopes, x.state!);
          // The same inputs (as stored) through the float64 step.
          const wide = (a: T.Tensor) => T.cast(a, "f64");
          const want = T.lightningStep(wide(at(x.q)), wide(at(x.k)), wide(at(x.v)), x.slopes, wide(x.state!));
          expect(got.output.dtype).toBe(dtype);
          expect(got.state.dtype).toBe("f32");
          // The state is f32 (rounding 2^-24); the output also rounds to its storage dtype: half an
          // ulp at |o| < 0.25 is 6e-5 in f16 and 5e-4 in bf16.
          const [atol, rtol] = dtype === "f32" ? [1e-7, 1e-6] : dtype === "f16" ? [6.2e-5, 1e-3] : [4.9e-4, 8e-3];
          assertClose(f64(got.state), f64(want.state), { atol: 1e-7, rtol: 1e-6, label: `${dtype} state` });
          assertClose(f64(got.output), f64(want.output), { atol, rtol, label: `${dtype} output` });
        });
      }
    });
  }
});

describe("TNL slope table", () => {
  it("H = 8 gives 2^-1 … 2^-8", () => {
    expect(T.alibiSlopes(8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((i) => 2 ** -i));
  });

  it("H = 40 gives 2^-(h+1)/4 for h < 32, then 2^-(2i+1)/8", () => {
    const want = [...Array.from({ length: 32 }, (_, h) => 2 ** (-(h + 1) / 4)), ...Array.from({ length: 8 }, (_, i) => 2 ** (-(2 * i + 1) / 8))];
    const got = T.alibiSlopes(40);
    expect(got.length).toBe(40);
    got.forEach((s, i) => expect(s).toBeCloseTo(want[i], 14));
  });

  it("H = 6 and H = 12 follow the non-power-of-two rule", () => {
    expect(T.alibiSlopes(6)).toEqual([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]);
    expect(T.alibiSlopes(12).slice(8)).toEqual([2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]);
  });

  it("scales layer l of L by 1 − l/(L−1) + 1e−5", () => {
    const base = T.alibiSlopes(4);
    expect(T.tnlSlopes(4, 0, 24)).toEqual(base.map((s) => s * (1 + 1e-5)));
    expect(T.tnlSlopes(4, 23, 24)).toEqual(base.map((s) => s * 1e-5));
    T.tnlSlopes(4, 7, 24).forEach((s, i) => expect(s).toBeCloseTo(base[i] * (1 - 7 / 23 + 1e-5), 15));
    expect(T.tnlSlopes(4, 0, 1)).toEqual(base.map((s) => s * (1 + 1e-5)));
    expect(() => T.tnlSlopes(4, 2, 2)).toThrow(/tnlSlopes: argument 'layer' expected an integer in \[0, 1\], got 2/);
  });
});

describe("lightningAttention bad inputs", () => {
  const z = (shape: number[], dtype: T.DType = "f32") => T.zeros(shape, { dtype });
  const cases: [string, () => unknown, RegExp][] = [
    ["B of k", () => T.lightningAttention(z([2, 3, 5, 4]), z([1, 3, 5, 4]), z([2, 3, 5, 6]), z([3])), /argument 'k' expected shape \[2, 3, 5, 4\], got \[1, 3, 5, 4\]/],
    ["T of v", () => T.lightningAttention(z([2, 3, 5, 4]), z([2, 3, 5, 4]), z([2, 3, 6, 6]), z([3])), /argument 'v' expected shape \[2, 3, 5, E\] \(B, H, T as q\), got \[2, 3, 6, 6\]/],
    ["H of v", () => T.lightningAttention(z([2, 3, 5, 4]), z([2, 3, 5, 4]), z([2, 2, 5, 6]), z([3])), /argument 'v' expected shape \[2, 3, 5, E\]/],
    ["slopes length", () => T.lightningAttention(z([2, 3, 5, 4]), z([2, 3, 5, 4]), z([2, 3, 5, 6]), z([4])), /argument 'slopes' expected shape \[3\], got \[4\]/],
    ["slopes dtype", () => T.lightningAttention(z([2, 3, 5, 4]), z([2, 3, 5, 4]), z([2, 3, 5, 6]), z([3], "f16")), /argument 'slopes' expected dtype f32, got f16 \[3\]/],
    ["state shape", () => T.lightningAttention(z([2, 3, 5, 4]), z([2, 3, 5, 4]), z([2, 3, 5, 6]), z([3]), { initialState: z([2, 3, 6, 4]) }), /argument 'initialState' expected shape \[2, 3, 4, 6\], got \[2, 3, 6, 4\]/],
    ["integer q", () => T.lightningAttention(z([1, 1, 2, 2], "i32"), z([1, 1, 2, 2], "i32"), z([1, 1, 2, 2], "i32"), z([1])), /argument 'q' expected a float tensor/],
    ["mixed dtypes", () => T.lightningAttention(z([1, 1, 2, 2]), z([1, 1, 2, 2], "bf16"), z([1, 1, 2, 2]), z([1])), /argument 'k' expected dtype f32 \(as the first input\), got bf16/],
    ["block size", () => T.lightningAttention(z([1, 1, 2, 2]), z([1, 1, 2, 2]), z([1, 1, 2, 2]), z([1]), { blockSize: 0 }), /argument 'blockSize' expected a positive integer, got 0/],
    ["step state", () => T.lightningStep(z([1, 2, 3]), z([1, 2, 3]), z([1, 2, 4]), z([2]), z([1, 2, 4, 3])), /lightningStep: argument 'state' expected shape \[1, 2, 3, 4\], got \[1, 2, 4, 3\]/],
  ];
  for (const [name, call, message] of cases) {
    it(name, () => {
      expect(() => T.scope(call)).toThrow(message);
    });
  }
});
