/**
 * `decodeLayer` on one backend (shared by the CPU test here and the GPU backends' test files): the
 * op against the explicit chain of five ops it stands for (bit for bit where the backend runs its
 * decomposition; within the float64 bound where it has a kernel of its own), in place against out
 * of place, and both against a float64 run of the chain on the host. Seeded random inputs, never
 * zeros; the widths are odd multiples of 8 (a GPU's small-M kernels read rows of 8 elements).
 *
 * Letters: B rows, H heads, hd head dim, hid = H·hd, M width, G SGLU width, D q/k head dim (hd, or
 * 2·hd with LRPE), E value head dim (= hd).
 */
import * as T from "@lightning-ts/tensor";
import type { Backend, DType, QkvActivation, Tensor } from "@lightning-ts/tensor";
import { assertClose, seeded } from "@lightning-ts/tensor/testing";
import { expect, it } from "vitest";

export const EPS = 1e-6;

export interface LayerCase {
  B: number;
  H: number;
  hd: number;
  M: number;
  G: number;
  lrpe: boolean;
  activation: QkvActivation;
}

/** Every combination the op's tests ask for: B 1 and 3, H 2 and 3, hd 8 and 16, with and without LRPE. */
export function layerCases(): LayerCase[] {
  const cases: LayerCase[] = [];
  const acts: QkvActivation[] = ["silu", "relu", "1+elu", "none"];
  for (const B of [1, 3]) {
    for (const H of [2, 3]) {
      for (const hd of [8, 16]) {
        for (const lrpe of [false, true]) {
          const n = cases.length;
          cases.push({ B, H, hd, M: [40, 24, 56][n % 3], G: [56, 72, 40][(n >> 1) % 3], lrpe, activation: acts[n % acts.length] });
        }
      }
    }
  }
  return cases;
}

/** The op's inputs (the state as host values, so that each run gets a tensor of its own). */
export interface LayerInputs {
  h: Tensor;
  weights: T.DecodeLayerWeights;
  slopes: Tensor;
  theta?: Tensor;
  positions?: Tensor;
  state: Float64Array;
  stateShape: number[];
  stateDType: DType;
}

/** Fresh inputs of `c` in `dtype` on `be`: weights of std 1/√(fan-in), h of std 1, the state of std 0.5. */
export function layerInputs(be: Backend, c: LayerCase, dtype: DType, seed: number): LayerInputs {
  const rng = seeded(seed);
  const hid = c.H * c.hd;
  const w = (rows: number, cols: number) => rng.tensor([rows, cols], { std: 1 / Math.sqrt(cols), dtype, backend: be });
  const D = c.lrpe ? 2 * c.hd : c.hd;
  const phase = dtype === "f64" ? "f64" : "f32";
  return {
    h: rng.tensor([c.B, c.M], { dtype, backend: be }),
    weights: { qkvu: w(4 * hid, c.M), out: w(c.M, hid), l1: w(c.G, c.M), l2: w(c.G, c.M), l3: w(c.M, c.G) },
    slopes: T.tensor(T.tnlSlopes(c.H, rng.int(5), 5), [c.H], { backend: be }),
    // θ in multiples of 2⁻¹⁰ below 4 and positions below 512: θp is exact in f32, so the phases
    // the op computes in f32 are those of the float64 reference.
    theta: c.lrpe ? T.tensor(rng.array(c.H * c.hd, 0.5).map((v) => Math.round(v * 1024) / 1024), [c.H, c.hd], { dtype: phase, backend: be }) : undefined,
    positions: c.lrpe ? T.tensor(Array.from({ length: c.B }, () => 1 + rng.int(500)), [c.B], { dtype: phase, backend: be }) : undefined,
    state: rng.array(c.B * c.H * D * c.hd, 0.5),
    stateShape: [c.B, c.H, D, c.hd],
    stateDType: dtype === "f64" ? "f64" : "f32",
  };
}

export const stateOf = (x: LayerInputs, be: Backend): Tensor => T.tensor(x.state, x.stateShape, { dtype: x.stateDType, backend: be });

const optionsOf = (x: LayerInputs, c: LayerCase) => ({ heads: c.H, activation: c.activation, eps: EPS, ...(c.lrpe ? { theta: x.theta, positions: x.positions } : {}) });

/** The TNL decode step's layer before the op (packages/tnl/src/model.ts): five ops, in this order. */
export function layerChain(x: LayerInputs, c: LayerCase, state: Tensor, inPlace: boolean): { h: Tensor; state: Tensor } {
  const { qkvu, out, l1, l2, l3 } = x.weights;
  const { q, k, v, u } = T.qkvuProjection(x.h, qkvu, optionsOf(x, c));
  const r = T.lightningStep(q, k, v, x.slopes, state, { inPlace });
  const h1 = T.fusedLinear(T.reshape(r.output, [c.B, c.H * c.hd]), out, { norm: { eps: EPS, gate: u }, residual: x.h });
  const g = T.fusedLinear(h1, l1, { norm: { eps: EPS }, second: l2 });
  return { h: T.fusedLinear(g, l3, { residual: h1 }), state: r.state };
}

export const layerOp = (x: LayerInputs, c: LayerCase, state: Tensor, inPlace: boolean) => T.decodeLayer(x.h, x.weights, state, x.slopes, { ...optionsOf(x, c), inPlace });

const host = T.createCpuBackend({ threads: 1 });

/** The chain in float64 on the host, from the values the inputs hold. */
async function float64Chain(x: LayerInputs, c: LayerCase): Promise<{ h: Float64Array; state: Float64Array }> {
  const f64 = async (t: Tensor) => T.tensor(Float64Array.from(await t.data()), t.shape, { dtype: "f64", backend: host });
  const frame = T.beginScope();
  try {
    const { qkvu, out, l1, l2, l3 } = x.weights;
    const y: LayerInputs = {
      ...x,
      h: await f64(x.h),
      weights: { qkvu: await f64(qkvu), out: await f64(out), l1: await f64(l1), l2: await f64(l2), l3: await f64(l3) },
      slopes: T.tensor(Float32Array.from(await x.slopes.data()), [c.H], { backend: host }),
      theta: x.theta && (await f64(x.theta)),
      positions: x.positions && (await f64(x.positions)),
    };
    const r = layerChain(y, c, T.tensor(x.state, x.stateShape, { dtype: "f64", backend: host }), false);
    return { h: Float64Array.from(r.h.dataSync()), state: Float64Array.from(r.state.dataSync()) };
  } finally {
    T.endScope(frame);
  }
}

/**
 * Relative RMS bounds against float64 (the worst element within 4× that of the largest value), by
 * dtype: f32 rounds each of the chain's stored values (2⁻²⁴ relative) and sums in f32 over at most
 * 4·hid + 2·G terms, some thirty unit roundoffs in all; bf16 stores every intermediate (q, k, v, u, o,
 * the normed rows, h1, g) rounded to 2⁻⁸ relative, about four of which add up in h2 and the state.
 */
const BOUND: Record<string, { h: number; state: number }> = {
  f32: { h: 2e-6, state: 2e-6 },
  bf16: { h: 1.5e-2, state: 1.5e-2 },
};

/** Fails with the first differing byte unless `a` and `b` hold the same bytes. */
async function expectSameBytes(a: Tensor, b: Tensor, label: string): Promise<void> {
  expect([a.dtype, a.shape], label).toEqual([b.dtype, b.shape]);
  const [x, y] = [await a.bytes(), await b.bytes()];
  const i = x.findIndex((v, j) => v !== y[j]);
  expect(i, `${label}: first differing byte (of ${x.byteLength})`).toBe(-1);
}

export interface LayerSuiteOptions {
  /** The backend runs the op's decomposition, so the op must give the chain's bits (else: within the float64 bound). */
  exact: boolean;
  /** Float dtypes to run, of f32 and bf16 (default both; those the backend stores). */
  dtypes?: DType[];
  cases?: LayerCase[];
}

/** decodeLayer against the chain, in place against out of place, and against float64. */
export function decodeLayerSuite(backend: () => Backend, options: LayerSuiteOptions): void {
  const cases = options.cases ?? layerCases();
  const dtypes = (be: Backend) => (options.dtypes ?? ["f32", "bf16"]).filter((d) => be.capabilities.dtypes.includes(d));

  for (const c of cases) {
    const name = `B=${c.B} H=${c.H} hd=${c.hd} M=${c.M} G=${c.G} ${c.activation}${c.lrpe ? " LRPE" : ""}`;
    it(`decodeLayer ${options.exact ? "== the five-op chain bit for bit" : "~ the five-op chain"}, in place == out of place, ~ float64 (${name})`, async () => {
      const be = backend();
      for (const [n, dtype] of dtypes(be).entries()) {
        const frame = T.beginScope();
        try {
          const x = layerInputs(be, c, dtype, c.B * 1009 + c.H * 101 + c.hd * 13 + (c.lrpe ? 7 : 0) + n);
          const label = `${name} ${dtype}`;
          const chainState = stateOf(x, be);
          const chainBefore = await chainState.bytes();
          const want = layerChain(x, c, chainState, false);
          const [outState, inState, chainInState] = [stateOf(x, be), stateOf(x, be), stateOf(x, be)];

          const got = layerOp(x, c, outState, false);
          expect([got.h.dtype, got.h.shape, got.state.dtype, got.state.shape], label).toEqual([dtype, [c.B, c.M], x.stateDType, x.stateShape]);
          expect(got.state.handle).not.toBe(outState.handle);
          expect(Array.from(await outState.bytes()), `${label}: out of place leaves the state alone`).toEqual(Array.from(chainBefore));

          const placed = layerOp(x, c, inState, true);
          expect(placed.state).not.toBe(inState);
          expect(placed.state.handle, `${label}: in place returns a handle to the state's storage`).toBe(inState.handle);
          await expectSameBytes(placed.h, got.h, `${label}: h2 in place`);
          await expectSameBytes(inState, got.state, `${label}: the state overwritten in place`);

          if (options.exact) {
            await expectSameBytes(got.h, want.h, `${label}: h2 vs the chain`);
            await expectSameBytes(got.state, want.state, `${label}: state vs the chain`);
            const chainPlaced = layerChain(x, c, chainInState, true);
            await expectSameBytes(chainInState, chainPlaced.state, `${label}: the chain in place`);
            await expectSameBytes(inState, chainInState, `${label}: in place vs the chain in place`);
          }

          const ref = await float64Chain(x, c);
          const bound = BOUND[dtype];
          if (!bound) throw new Error(`no float64 bound for ${dtype} (the suite runs f32 and bf16)`);
          const scale = ref.h.reduce((a, v) => Math.max(a, Math.abs(v)), 1);
          assertClose(await got.h.data(), ref.h, { atol: 4 * bound.h * scale, rtol: bound.h, label: `${label}: h2 vs float64` });
          if (!options.exact) assertClose(await got.h.data(), await want.h.data(), { atol: 8 * bound.h * scale, rtol: 2 * bound.h, label: `${label}: h2 vs the chain` });
          const sScale = ref.state.reduce((a, v) => Math.max(a, Math.abs(v)), 1);
          assertClose(await got.state.data(), ref.state, { atol: 4 * bound.state * sScale, rtol: bound.state, label: `${label}: state vs float64` });
        } finally {
          T.endScope(frame);
        }
      }
    });
  }

  it("decodeLayer in place, two steps chained: the second reads the state the first wrote", async () => {
    const be = backend();
    const c: LayerCase = { B: 3, H: 3, hd: 16, M: 40, G: 56, lrpe: true, activation: "silu" };
    for (const [n, dtype] of dtypes(be).entries()) {
      const frame = T.beginScope();
      try {
        const x = layerInputs(be, c, dtype, 911 + n);
        const y = { ...layerInputs(be, c, dtype, 912 + n), weights: x.weights, slopes: x.slopes, theta: x.theta };
        const state = stateOf(x, be);
        const first = layerOp(x, c, stateOf(x, be), false);
        const second = layerOp(y, c, first.state, false);
        layerOp(x, c, state, true);
        const again = layerOp(y, c, state, true);
        await expectSameBytes(again.h, second.h, `${dtype}: second h2`);
        await expectSameBytes(state, second.state, `${dtype}: second state`);
      } finally {
        T.endScope(frame);
      }
    }
  });

  it("decodeLayer with both outputs placed in tensors of their own (runOp's into): the same bits", async () => {
    const be = backend();
    const c: LayerCase = { B: 3, H: 2, hd: 8, M: 24, G: 40, lrpe: false, activation: "relu" };
    const frame = T.beginScope();
    try {
      const x = layerInputs(be, c, "f32", 77);
      const want = layerOp(x, c, stateOf(x, be), false);
      const hTarget = seeded(78).tensor([c.B, c.M], { backend: be });
      const sTarget = seeded(79).tensor(x.stateShape, { backend: be });
      const state = stateOf(x, be);
      const before = await state.bytes();
      const { qkvu, out, l1, l2, l3 } = x.weights;
      const attrs = { heads: c.H, activation: c.activation, lrpe: false, eps: EPS };
      const [h2, next] = T.runOp("decodeLayer", [x.h, qkvu, out, l1, l2, l3, state, x.slopes], attrs, undefined, { into: [hTarget, sTarget] });
      expect(h2.handle).toBe(hTarget.handle);
      expect(next.handle).toBe(sTarget.handle);
      await expectSameBytes(hTarget, want.h, "h2 placed");
      await expectSameBytes(sTarget, want.state, "state placed");
      expect(Array.from(await state.bytes()), "the state read, not written").toEqual(Array.from(before));
    } finally {
      T.endScope(frame);
    }
  });
}
