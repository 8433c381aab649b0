/**
 * The float64 oracles against what they are checked against elsewhere: the masked (quadratic)
 * Lightning Attention form against the recurrence S_t = λ S_{t−1} + k_tᵀ v_t, o_t = q_t S_t
 * (docs/ALGORITHM.md G.2, written again here), against closed forms derived by hand for T = 1 and
 * T = 2, and its analytic gradients against central differences; the other oracles against small
 * cases worked out by hand. A perturbed input must make each comparison fail.
 */
import { describe, expect, it } from "vitest";
import { assertClose, oracle as O, seeded } from "../src/testing/index.js";

type Dims = { B: number; H: number; T: number; D: number; E: number };

/** The recurrence, per (b, h), from S₀ (or zero). Returns o [B, H, T, E] and the final S [B, H, D, E]. */
function recurrence(dims: Dims, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, slopes: ArrayLike<number>, S0?: ArrayLike<number>) {
  const { B, H, T, D, E } = dims;
  const o = new Float64Array(B * H * T * E);
  const S = new Float64Array(B * H * D * E);
  if (S0) S.set(Array.from(S0));
  for (let bh = 0; bh < B * H; bh++) {
    const lam = Math.exp(-slopes[bh % H]);
    const St = S.subarray(bh * D * E, (bh + 1) * D * E);
    for (let t = 0; t < T; t++) {
      for (let d = 0; d < D; d++) {
        for (let e = 0; e < E; e++) St[d * E + e] = lam * St[d * E + e] + k[(bh * T + t) * D + d] * v[(bh * T + t) * E + e];
      }
      for (let e = 0; e < E; e++) {
        let x = 0;
        for (let d = 0; d < D; d++) x += q[(bh * T + t) * D + d] * St[d * E + e];
        o[(bh * T + t) * E + e] = x;
      }
    }
  }
  return { o, S };
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, x, i) => s + x * b[i], 0);

function randomCase(seed: number, dims: Dims, slopes: number[], withState: boolean) {
  const { B, H, T, D, E } = dims;
  const r = seeded(seed);
  return {
    dims,
    slopes,
    q: r.array(B * H * T * D, 0.5),
    k: r.array(B * H * T * D, 0.5),
    v: r.array(B * H * T * E, 0.5),
    S0: withState ? r.array(B * H * D * E, 0.5) : undefined,
    dO: r.array(B * H * T * E),
    dS: r.array(B * H * D * E),
  };
}

const exact = { atol: 1e-12, rtol: 1e-12 };

describe("Lightning Attention oracle: masked form", () => {
  // Two batches, three heads with different decays; the last head has slope 0 (λ = 1, no decay).
  const dims = { B: 2, H: 3, T: 7, D: 3, E: 4 };
  const slopes = [0.7, 0.05, 0];

  for (const withState of [false, true]) {
    it(`equals the recurrence, output and final state (${withState ? "with" : "without"} initial state)`, () => {
      const c = randomCase(withState ? 2 : 1, dims, slopes, withState);
      const got = O.lightningAttention(dims, c.q, c.k, c.v, slopes, c.S0);
      const want = recurrence(dims, c.q, c.k, c.v, slopes, c.S0);
      assertClose(got.o, want.o, { ...exact, label: "o" });
      assertClose(got.S, want.S, { ...exact, label: "S" });
    });
  }

  it("disagrees with the recurrence once one input element is perturbed", () => {
    const c = randomCase(3, dims, slopes, true);
    const want = recurrence(dims, c.q, c.k, c.v, slopes, c.S0);
    for (const name of ["q", "k", "v", "S0"] as const) {
      const x = Float64Array.from(c[name]!);
      x[5] = x[5] + 1e-3;
      const p = { ...c, [name]: x };
      const got = O.lightningAttention(dims, p.q, p.k, p.v, slopes, p.S0);
      expect(() => assertClose(got.o, want.o, exact), name).toThrow(/exceeds/);
    }
    // A wrong decay too.
    const got = O.lightningAttention(dims, c.q, c.k, c.v, [0.7, 0.051, 0], c.S0);
    expect(() => assertClose(got.o, want.o, exact)).toThrow(/exceeds/);
  });

  it("is causal: perturbing position 4 leaves outputs 0..3 unchanged and changes 4..6", () => {
    const one = { B: 1, H: 1, T: 7, D: 3, E: 4 };
    const c = randomCase(4, one, [0.3], false);
    const before = O.lightningAttention(one, c.q, c.k, c.v, [0.3]).o;
    const k = Float64Array.from(c.k);
    k[4 * 3 + 1] += 0.5;
    const after = O.lightningAttention(one, c.q, k, c.v, [0.3]).o;
    expect(Array.from(after.subarray(0, 4 * 4))).toEqual(Array.from(before.subarray(0, 4 * 4)));
    for (let t = 4; t < 7; t++) expect(after.subarray(t * 4, t * 4 + 4)).not.toEqual(before.subarray(t * 4, t * 4 + 4));
  });

  it("matches the closed form for T = 1: o = q (λ S₀ + kᵀ v), S = λ S₀ + kᵀ v", () => {
    // D = 2, E = 1: q = [2, −1], k = [3, 0.5], v = [4], S₀ = [1, −2]ᵀ, slope ln 2 (λ = 1/2).
    const dims1 = { B: 1, H: 1, T: 1, D: 2, E: 1 };
    const r = O.lightningAttention(dims1, [2, -1], [3, 0.5], [4], [Math.LN2], [1, -2]);
    // S = ½·[1, −2] + [12, 2] = [12.5, 1]; o = 2·12.5 − 1·1 = 24.
    assertClose(r.S, [12.5, 1], exact);
    assertClose(r.o, [24], exact);
    // Without a state: o = (q·k) v = (6 − 0.5)·4 = 22.
    assertClose(O.lightningAttention(dims1, [2, -1], [3, 0.5], [4], [Math.LN2]).o, [22], exact);
  });

  it("matches the closed form for T = 2 with scalar heads, and its gradients", () => {
    // D = E = 1, λ = 1/2: o₀ = q₀(k₀v₀ + λs), o₁ = q₁(λk₀v₀ + k₁v₁ + λ²s), S = λ²s + λk₀v₀ + k₁v₁.
    const [q0, q1, k0, k1, v0, v1, s, lam] = [2, -3, 0.5, 4, 6, -1, 8, 0.5];
    const [g0, g1, gS] = [1.5, -2, 0.25]; // dO₀, dO₁, dS
    const dims2 = { B: 1, H: 1, T: 2, D: 1, E: 1 };
    const r = O.lightningAttention(dims2, [q0, q1], [k0, k1], [v0, v1], [Math.LN2], [s], { dO: [g0, g1], dS: [gS] });
    assertClose(r.o, [2 * (3 + 4), -3 * (1.5 - 4 + 2)], exact); // [14, 1.5]
    assertClose(r.S, [2 + 1.5 - 4], exact);
    // Derivatives of L = g₀o₀ + g₁o₁ + gS·S, by hand.
    assertClose(r.dq, [g0 * (k0 * v0 + lam * s), g1 * (lam * k0 * v0 + k1 * v1 + lam ** 2 * s)], exact);
    assertClose(r.dk, [g0 * q0 * v0 + g1 * q1 * lam * v0 + gS * lam * v0, g1 * q1 * v1 + gS * v1], exact);
    assertClose(r.dv, [g0 * q0 * k0 + g1 * q1 * lam * k0 + gS * lam * k0, g1 * q1 * k1 + gS * k1], exact);
    assertClose(r.dS0, [g0 * lam * q0 + g1 * lam ** 2 * q1 + gS * lam ** 2], exact);
    // One wrong factor in a hand value is noticed.
    expect(() => assertClose(r.dk, [g0 * q0 * v0 + g1 * q1 * v0 + gS * lam * v0, g1 * q1 * v1 + gS * v1], exact)).toThrow();
  });

  it("has analytic gradients equal to central differences of the recurrence", () => {
    const c = randomCase(5, dims, slopes, true);
    const g = O.lightningAttention(dims, c.q, c.k, c.v, slopes, c.S0, { dO: c.dO, dS: c.dS });
    // L is linear in each single element, so central differences are exact up to rounding.
    const loss = (p: typeof c) => {
      const r = recurrence(dims, p.q, p.k, p.v, slopes, p.S0);
      return dot(r.o, c.dO) + dot(r.S, c.dS);
    };
    const h = 1e-3;
    for (const [name, analytic] of [["q", g.dq], ["k", g.dk], ["v", g.dv], ["S0", g.dS0]] as const) {
      const x = c[name]!;
      const numeric = Array.from(x, (_, i) => {
        const plus = Float64Array.from(x);
        const minus = Float64Array.from(x);
        plus[i] += h;
        minus[i] -= h;
        return (loss({ ...c, [name]: plus }) - loss({ ...c, [name]: minus })) / (2 * h);
      });
      assertClose(analytic, numeric, { atol: 1e-9, rtol: 1e-9, label: `d${name}` });
      // A gradient scaled by 1.01 is rejected.
      expect(() => assertClose(analytic.map((a) => a * 1.01), numeric, { atol: 1e-9, rtol: 1e-9 })).toThrow();
    }
  });
});

describe("the other oracles, on cases worked out by hand", () => {
  it("matmul with transposes and a broadcast batch", () => {
    const a = [1, 2, 3, 4, 5, 6]; // [2, 3]
    const b = [1, 0, -1, 2, 0.5, 1]; // [3, 2]
    // [[1·1 + 2·(−1) + 3·0.5, 0 + 4 + 3], [4 − 5 + 3, 0 + 10 + 6]]
    expect(O.matmul(a, [2, 3], b, [3, 2])).toEqual({ shape: [2, 2], data: Float64Array.from([0.5, 7, 2, 16]) });
    // aᵀ as [3, 2] stored, transposed back: the same product.
    const aT = [1, 4, 2, 5, 3, 6];
    expect(O.matmul(aT, [3, 2], b, [3, 2], true, false).data).toEqual(Float64Array.from([0.5, 7, 2, 16]));
    // Batch [2] against one matrix: the second batch is 2·a.
    const r = O.matmul([...a, ...a.map((x) => 2 * x)], [2, 2, 3], b, [3, 2]);
    expect(r.shape).toEqual([2, 2, 2]);
    expect(Array.from(r.data)).toEqual([0.5, 7, 2, 16, 1, 14, 4, 32]);
  });

  it("reductions, softmax and cross-entropy", () => {
    const x = [1, 5, -2, 3, 0, 4]; // [2, 3]
    expect(Array.from(O.reduce(x, [2, 3], [1], "sum"))).toEqual([4, 7]);
    expect(Array.from(O.reduce(x, [2, 3], [0], "max"))).toEqual([3, 5, 4]);
    expect(Array.from(O.reduce(x, [2, 3], [0, 1], "mean"))).toEqual([11 / 6]);
    expect(Array.from(O.reduce(x, [2, 3], [1], "min"))).toEqual([-2, 0]);
    // softmax([0, ln 2, ln 5]) = [1, 2, 5] / 8.
    assertClose(O.softmax([0, Math.LN2, Math.log(5)], [3], 0, false), [1 / 8, 2 / 8, 5 / 8], exact);
    assertClose(O.softmax([0, Math.LN2, Math.log(5)], [3], 0, true), [-Math.log(8), Math.LN2 - Math.log(8), Math.log(5 / 8)], exact);
    // Row 0 label 2: loss = ln 8 − ln 5, grad = p − e₂; row 1 ignored: zero loss and grad.
    const ce = O.crossEntropy([0, Math.LN2, Math.log(5), 7, 7, 7], 2, 3, [2, -100], -100);
    assertClose(ce.loss, [Math.log(8 / 5), 0], exact);
    assertClose(ce.grad, [1 / 8, 2 / 8, 5 / 8 - 1, 0, 0, 0], exact);
    expect(() => assertClose(ce.grad, [1 / 8, 2 / 8, 5 / 8, 0, 0, 0], exact)).toThrow();
  });

  it("rmsNorm and its gradient against central differences", () => {
    // [3, 4] → rms = √(25/2): y = [3, 4] / √12.5.
    assertClose(O.rmsNorm([3, 4], 2, 0).y, [3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)], exact);
    const r = seeded(6);
    const x = r.array(10);
    const dy = r.array(10);
    const M = 5;
    const loss = (xs: ArrayLike<number>) => dot(O.rmsNorm(xs, M, 1e-6).y, dy);
    const h = 1e-5;
    const numeric = Array.from(x, (_, i) => {
      const p = Float64Array.from(x);
      const m = Float64Array.from(x);
      p[i] += h;
      m[i] -= h;
      return (loss(p) - loss(m)) / (2 * h);
    });
    assertClose(O.rmsNorm(x, M, 1e-6, dy).dx, numeric, { atol: 1e-8, rtol: 1e-8 });
  });

  it("movement and indexing oracles", () => {
    const x = [0, 1, 2, 3, 4, 5]; // [2, 3]
    expect(Array.from(O.permute(x, [2, 3], [1, 0]))).toEqual([0, 3, 1, 4, 2, 5]);
    expect(Array.from(O.slice(x, [2, 3], [0, 1], [2, 3]))).toEqual([1, 2, 4, 5]);
    expect(Array.from(O.pad([1, 2], [2], [1], [2]))).toEqual([0, 1, 2, 0, 0]);
    expect(Array.from(O.concat([x, [6, 7]], [[2, 3], [2, 1]], 1))).toEqual([0, 1, 2, 6, 3, 4, 5, 7]);
    expect(Array.from(O.take(x, [2, 3], [2, 0, 2], [3], 1))).toEqual([2, 0, 2, 5, 3, 5]);
    // scatterAdd is take's adjoint: repeated indices add up.
    expect(Array.from(O.scatterAdd([1, 10, 100, 2, 20, 200], [2, 3], [2, 0, 2], [3], 1, 3))).toEqual([10, 0, 101, 20, 0, 202]);
    expect(O.mapBroadcast([[2, 1], [3]], [[1, 2], [10, 20, 30]], (a, b) => a * b)).toEqual({ shape: [2, 3], data: Float64Array.from([10, 20, 30, 20, 40, 60]) });
  });
});
