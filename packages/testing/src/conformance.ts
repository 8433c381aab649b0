/**
 * The backend conformance suite: every op of the set, on every available backend, against the
 * float64 oracles of oracle.ts, on seeded random inputs with odd shapes (size-1 and broadcast dims
 * included), and the unary ops against the independent reference values of unary-reference.ts.
 * Judged by `assertClose` (absolute bound, NaN never passing, relative RMS error).
 *
 * Backend packages run it from a test file: `await conformanceSuite()`.
 */
import * as T from "@lightning-ts/tensor";
import { type DType, type Tensor } from "@lightning-ts/tensor";
import { beforeAll, expect, it } from "vitest";
import { describeBackends } from "./backends.js";
import { assertClose, oracle as O, seeded } from "@lightning-ts/tensor/testing";
import { UNARY_REFERENCE } from "./unary-reference.js";

/** Tolerances by storage dtype: f32 results are float64 results rounded once (plus accumulation order). */
export function tolerance(dtype: DType, scale = 1): { atol: number; rtol: number } {
  switch (dtype) {
    case "f16":
      return { atol: 2e-2 * scale, rtol: 2e-3 };
    case "bf16":
      return { atol: 1.5e-1 * scale, rtol: 1.6e-2 };
    case "f64":
      return { atol: 1e-12 * scale, rtol: 1e-13 };
    default:
      return { atol: 1e-5 * scale, rtol: 2e-6 };
  }
}

const values = async (t: Tensor) => Float64Array.from(await t.data());

const BINARY_ORACLE: Record<T.BinaryOpName, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: Math.max,
  minimum: Math.min,
};

const COMPARE_ORACLE: Record<T.CompareOpName, (a: number, b: number) => boolean> = {
  equal: (a, b) => a === b,
  notEqual: (a, b) => a !== b,
  less: (a, b) => a < b,
  lessEqual: (a, b) => a <= b,
  greater: (a, b) => a > b,
  greaterEqual: (a, b) => a >= b,
};

/** Pairs of shapes that broadcast, including size-1 dims, missing leading dims and scalars. */
const BROADCAST_PAIRS: [number[], number[]][] = [
  [[7], [7]],
  [[3, 5], [3, 5]],
  [[3, 1, 5], [1, 4, 5]],
  [[2, 3, 5], [5]],
  [[1], [6, 1]],
  [[], [3, 2]],
  [[4, 1, 3, 1], [1, 5, 1, 2]],
];

export interface ConformanceOptions {
  /** Float dtypes to run the float tests in (default: f32, f16, bf16). */
  dtypes?: DType[];
}

export async function conformanceSuite(options: ConformanceOptions = {}): Promise<void> {
  const dtypes = options.dtypes ?? ["f32", "f16", "bf16"];
  await describeBackends("conformance", () => {
    let liveAtStart = 0;
    beforeAll(() => {
      liveAtStart = T.liveTensorCount();
    });

    for (const dtype of dtypes) {
      it(`unary ops against reference values (${dtype})`, async () => {
        for (const op of T.UNARY_OPS) {
          const [xs, want] = UNARY_REFERENCE[op];
          const shape = [3, 1, 7];
          const x = T.tensor(xs, shape, { dtype });
          const y = T.scope(() => (T as unknown as Record<string, (t: Tensor) => Tensor>)[op](x));
          expect(y.shape).toEqual(shape);
          assertClose(await values(y), want, { ...tolerance(dtype, 10), label: `${op} ${dtype}` });
          x.dispose();
          y.dispose();
        }
      });

      it(`binary ops with broadcasting (${dtype})`, async () => {
        const rng = seeded(202);
        for (const op of T.BINARY_OPS) {
          for (const [sa, sb] of BROADCAST_PAIRS) {
            const ha = rng.array(O.sizeOf(sa));
            let hb = rng.array(O.sizeOf(sb));
            if (op === "div") hb = hb.map((v) => (Math.abs(v) + 0.5) * Math.sign(v || 1));
            const a = T.tensor(op === "pow" ? ha.map((v) => Math.abs(v) + 0.1) : ha, sa, { dtype });
            const b = T.tensor(hb, sb, { dtype });
            const y = (T as unknown as Record<string, (a: Tensor, b: Tensor) => Tensor>)[op](a, b);
            const want = O.mapBroadcast([sa, sb], [await values(a), await values(b)], BINARY_ORACLE[op]);
            expect(y.shape).toEqual(want.shape);
            assertClose(await values(y), want.data, { ...tolerance(dtype, 10), label: `${op} ${dtype} ${sa.join(",")}×${sb.join(",")}` });
            for (const t of [a, b, y]) t.dispose();
          }
        }
      });

      it(`reductions over any axes (${dtype})`, async () => {
        const rng = seeded(303);
        const shape = [3, 1, 5, 4];
        const x = rng.tensor(shape, { dtype });
        const xs = await values(x);
        for (const op of T.REDUCE_OPS) {
          for (const axes of [[0], [1], [3], [0, 2], [1, 2, 3], [0, 1, 2, 3]]) {
            for (const keepdims of [false, true]) {
              const y = T[op](x, axes, keepdims);
              const want = O.reduce(xs, shape, axes, op);
              const wantShape = shape.flatMap((d, i) => (axes.includes(i) ? (keepdims ? [1] : []) : [d]));
              expect(y.shape).toEqual(wantShape);
              assertClose(await values(y), want, { ...tolerance(dtype, 10), label: `${op} ${axes.join(",")} ${dtype}` });
              y.dispose();
            }
          }
        }
        x.dispose();
      });

      it(`matmul with batch broadcasting and transposes (${dtype})`, async () => {
        const rng = seeded(404);
        const cases: [number[], number[]][] = [
          [[1, 1], [1, 1]],
          [[3, 17], [17, 5]],
          [[2, 7, 9], [9, 11]],
          [[4, 1, 5, 3], [1, 2, 3, 6]],
          [[33, 65], [65, 31]],
        ];
        for (const [sa, sb] of cases) {
          for (const transA of [false, true]) {
            for (const transB of [false, true]) {
              const shA = transA ? [...sa.slice(0, -2), sa[sa.length - 1], sa[sa.length - 2]] : sa;
              const shB = transB ? [...sb.slice(0, -2), sb[sb.length - 1], sb[sb.length - 2]] : sb;
              const a = rng.tensor(shA, { dtype });
              const b = rng.tensor(shB, { dtype });
              const y = T.matmul(a, b, { transA, transB });
              const want = O.matmul(await values(a), shA, await values(b), shB, transA, transB);
              expect(y.shape).toEqual(want.shape);
              const k = sa[sa.length - 1];
              assertClose(await values(y), want.data, { ...tolerance(dtype, 10 * Math.sqrt(k)), label: `matmul ${sa.join(",")}×${sb.join(",")} ${transA} ${transB} ${dtype}` });
              for (const t of [a, b, y]) t.dispose();
            }
          }
        }
      });

      it(`softmax, logSoftmax, rmsNorm and its backward (${dtype})`, async () => {
        const rng = seeded(505);
        for (const [shape, axis] of [[[3, 7], 1], [[2, 5, 3], 1], [[1, 65], 1], [[4, 1], 0]] as [number[], number][]) {
          const x = rng.tensor(shape, { dtype, std: 2 });
          const xs = await values(x);
          for (const log of [false, true]) {
            const y = log ? T.logSoftmax(x, axis) : T.softmax(x, axis);
            assertClose(await values(y), O.softmax(xs, shape, axis, log), { ...tolerance(dtype, 10), label: `softmax log=${log} ${dtype}` });
            y.dispose();
          }
          const M = shape[shape.length - 1];
          const dy = rng.tensor(shape, { dtype });
          const want = O.rmsNorm(xs, M, 1e-6, await values(dy));
          const y = T.rmsNorm(x);
          const dx = T.rmsNormBackward(x, dy);
          assertClose(await values(y), want.y, { ...tolerance(dtype, 10), label: `rmsNorm ${dtype}` });
          assertClose(await values(dx), want.dx, { ...tolerance(dtype, 10), label: `rmsNormBackward ${dtype}` });
          for (const t of [x, dy, y, dx]) t.dispose();
        }
      });

      it(`siluBackward against dy·σ(x)·(1 + x·(1 − σ(x))) in float64, packs and tails (${dtype})`, async () => {
        const rng = seeded(515);
        for (const shape of [[1], [7], [3, 37], [65, 129]]) {
          const x = rng.tensor(shape, { dtype, std: 4 });
          const dy = rng.tensor(shape, { dtype });
          const [xs, gs] = [await values(x), await values(dy)];
          const want = xs.map((v, i) => {
            const s = 1 / (1 + Math.exp(-v));
            return gs[i] * s * (1 + v * (1 - s));
          });
          const dx = T.siluBackward(x, dy);
          assertClose(await values(dx), want, { ...tolerance(dtype, 4), label: `siluBackward [${shape.join(", ")}] ${dtype}` });
          for (const t of [x, dy, dx]) t.dispose();
        }
      });

      it(`softmaxCrossEntropy and its backward, with ignored rows (${dtype})`, async () => {
        const rng = seeded(606);
        for (const [N, V] of [[1, 3], [7, 13], [5, 257]]) {
          const logits = rng.tensor([N, V], { dtype, std: 3 });
          const labelsHost = Int32Array.from({ length: N }, (_, i) => (i % 3 === 2 ? -100 : rng.int(V)));
          const labels = T.tensor(labelsHost, [N], { dtype: "i32" });
          const lossDType = dtype === "f64" ? "f64" : "f32";
          const dloss = rng.tensor([N], { dtype: lossDType });
          const want = O.crossEntropy(await values(logits), N, V, labelsHost, -100);
          const loss = T.softmaxCrossEntropy(logits, labels);
          const grad = T.softmaxCrossEntropyBackward(logits, labels, dloss);
          const g = await values(dloss);
          assertClose(await values(loss), want.loss, { ...tolerance(lossDType, 10), label: `cross-entropy ${dtype}` });
          assertClose(await values(grad), want.grad.map((v, i) => v * g[Math.floor(i / V)]), { ...tolerance(dtype, 10), label: `cross-entropy backward ${dtype}` });
          for (const t of [logits, labels, dloss, loss, grad]) t.dispose();
        }
      });

      // The parameter and moments are f32 (f64 for f64); a half dtype is the gradient's and the rounded copy's.
      it(`adamwUpdate over chained steps, odd sizes (${dtype})`, async () => {
        const rng = seeded(656);
        const half = dtype === "f16" || dtype === "bf16" ? dtype : undefined;
        const pd: DType = dtype === "f64" ? "f64" : "f32";
        for (const shape of [[1], [7], [5, 13], [1029]]) {
          const n = O.sizeOf(shape);
          let p = rng.tensor(shape, { dtype: pd });
          let m = T.zeros(shape, { dtype: pd });
          let v = T.zeros(shape, { dtype: pd });
          for (const [step, weightDecay] of [[1, 0.1], [2, 0], [50, 0.1]]) {
            const g = rng.tensor(shape, { dtype: half ?? pd, std: 0.1 });
            const o = { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay, step };
            const [hp, hg, hm, hv] = await Promise.all([p, g, m, v].map(values));
            const want = { p: new Float64Array(n), m: new Float64Array(n), v: new Float64Array(n) };
            for (let i = 0; i < n; i++) {
              want.m[i] = o.beta1 * hm[i] + (1 - o.beta1) * hg[i];
              want.v[i] = o.beta2 * hv[i] + (1 - o.beta2) * hg[i] * hg[i];
              const denom = Math.sqrt(want.v[i]) / Math.sqrt(1 - o.beta2 ** step) + o.eps;
              want.p[i] = hp[i] * (1 - o.lr * weightDecay) - (o.lr / (1 - o.beta1 ** step)) * (want.m[i] / denom);
            }
            const r = T.adamwUpdate(p, g, m, v, { ...o, castTo: half });
            const label = `adamwUpdate ${shape.join("x")} t=${step} ${dtype}`;
            assertClose(await values(r.param), want.p, { ...tolerance(pd, 10), label: `${label} param` });
            assertClose(await values(r.expAvg), want.m, { ...tolerance(pd, 10), label: `${label} expAvg` });
            assertClose(await values(r.expAvgSq), want.v, { ...tolerance(pd, 10), label: `${label} expAvgSq` });
            if (half) assertClose(await values(r.half!), want.p, { ...tolerance(half), label: `${label} ${half} copy` });
            else expect(r.half).toBeUndefined();
            for (const t of [p, m, v, g, r.half]) t?.dispose();
            [p, m, v] = [r.param, r.expAvg, r.expAvgSq];
          }
          for (const t of [p, m, v]) t.dispose();
        }
      });

      it(`embedding, gather and scatterAdd (${dtype})`, async () => {
        const rng = seeded(707);
        const V = 11;
        const M = 5;
        const w = rng.tensor([V, M], { dtype });
        const idsShape = [3, 4];
        const idsHost = Int32Array.from({ length: 12 }, () => rng.int(V));
        const ids = T.tensor(idsHost, idsShape, { dtype: "i32" });
        const ws = await values(w);
        const e = T.embedding(w, ids);
        expect(e.shape).toEqual([3, 4, M]);
        assertClose(await values(e), O.take(ws, [V, M], idsHost, idsShape, 0), { atol: 0, rtol: 0, label: "embedding" });
        const dy = rng.tensor([3, 4, M], { dtype });
        const dw = T.embeddingBackward(dy, ids, V);
        assertClose(await values(dw), O.scatterAdd(await values(dy), [3, 4, M], idsHost, idsShape, 0, V), { ...tolerance(dtype, 10), label: "embeddingBackward" });

        const x = rng.tensor([2, 6, 3], { dtype });
        const idx = T.tensor(Int32Array.from([5, 0, 0, 2, 1]), [5], { dtype: "i32" });
        const g = T.gather(x, idx, 1);
        const xs = await values(x);
        assertClose(await values(g), O.take(xs, [2, 6, 3], [5, 0, 0, 2, 1], [5], 1), { atol: 0, rtol: 0, label: "gather" });
        const s = T.scatterAdd(g, idx, 1, 6);
        assertClose(await values(s), O.scatterAdd(await values(g), [2, 5, 3], [5, 0, 0, 2, 1], [5], 1, 6), { ...tolerance(dtype, 10), label: "scatterAdd" });
        for (const t of [w, ids, e, dy, dw, x, idx, g, s]) t.dispose();
      });

      it(`movement ops: permute, slice, pad, concat, split, expand, reshape (${dtype})`, async () => {
        const rng = seeded(808);
        const shape = [2, 3, 1, 5];
        const x = rng.tensor(shape, { dtype });
        const xs = await values(x);
        const exact = { atol: 0, rtol: 0 };
        for (const perm of [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]]) {
          const y = T.permute(x, perm);
          assertClose(await values(y), O.permute(xs, shape, perm), { ...exact, label: `permute ${perm.join(",")}` });
          y.dispose();
        }
        const sl = T.slice(x, [1, -2, 0, 1], [2, undefined, 1, 4]);
        expect(sl.shape).toEqual([1, 2, 1, 3]);
        assertClose(await values(sl), O.slice(xs, shape, [1, 1, 0, 1], [2, 3, 1, 4]), { ...exact, label: "slice" });
        const pd = T.pad(x, [[0, 1], [2, 0], [1, 1], [0, 3]]);
        assertClose(await values(pd), O.pad(xs, shape, [0, 2, 1, 0], [1, 0, 1, 3]), { ...exact, label: "pad" });
        const y2 = rng.tensor([2, 4, 1, 5], { dtype });
        const cat = T.concat([x, y2, x], 1);
        assertClose(await values(cat), O.concat([xs, await values(y2), xs], [shape, [2, 4, 1, 5], shape], 1), { ...exact, label: "concat" });
        const parts = T.split(cat, [3, 4, 3], 1);
        assertClose(await values(parts[1]), await values(y2), { ...exact, label: "split" });
        const ex = T.expand(x, [4, 2, 3, 6, 5]);
        assertClose(await values(ex), O.mapBroadcast([shape, [4, 2, 3, 6, 5]], [xs, new Float64Array(720)], (a) => a).data, { ...exact, label: "expand" });
        const r = T.reshape(x, [6, -1]);
        expect(r.shape).toEqual([6, 5]);
        assertClose(await values(r), xs, exact);
        const c = T.copy(x);
        assertClose(await values(c), xs, exact);
        for (const t of [x, sl, pd, y2, cat, ...parts, ex, r, c]) t.dispose();
      });
    }

    for (const dtype of dtypes) {
      it(`lightningAttention forward, backward and decode step, odd sizes (${dtype})`, async () => {
        const rng = seeded(1111);
        const stateDType: DType = dtype === "f64" ? "f64" : "f32";
        const cases = [
          { B: 1, H: 1, T: 1, D: 16, E: 16, blockSize: 64, state: false },
          { B: 2, H: 3, T: 63, D: 12, E: 20, blockSize: 16, state: true },
          { B: 1, H: 2, T: 65, D: 48, E: 24, blockSize: 64, state: true },
          { B: 1, H: 1, T: 130, D: 32, E: 96, blockSize: 64, state: false },
        ];
        for (const c of cases) {
          const dims = { B: c.B, H: c.H, T: c.T, D: c.D, E: c.E };
          const q = rng.tensor([c.B, c.H, c.T, c.D], { dtype, std: 0.3 });
          const k = rng.tensor([c.B, c.H, c.T, c.D], { dtype, std: 0.3 });
          const v = rng.tensor([c.B, c.H, c.T, c.E], { dtype, std: 0.3 });
          const dO = rng.tensor([c.B, c.H, c.T, c.E], { dtype, std: 0.3 });
          const dS = rng.tensor([c.B, c.H, c.D, c.E], { dtype: stateDType, std: 0.3 });
          const S0 = c.state ? rng.tensor([c.B, c.H, c.D, c.E], { dtype: stateDType, std: 0.3 }) : undefined;
          // One head without decay catches masks that treat slope 0 specially.
          const slopeValues = T.tnlSlopes(c.H, 0, 3).map((s, h) => (h === c.H - 1 && c.H > 1 ? 0 : s));
          const slopes = T.slopesTensor(slopeValues);
          const want = O.lightningAttention(dims, await values(q), await values(k), await values(v), slopeValues.map(Math.fround), S0 ? await values(S0) : undefined, {
            dO: await values(dO),
            dS: await values(dS),
          });
          const scaleT = Math.sqrt(c.T * c.D);
          const tol = tolerance(dtype, scaleT);
          const stateTol = tolerance(stateDType, scaleT);
          const { output, state } = T.lightningAttention(q, k, v, slopes, { blockSize: c.blockSize, initialState: S0, returnState: true });
          assertClose(await values(output), want.o, { ...tol, label: `lightningAttention output ${JSON.stringify(dims)} ${dtype}` });
          assertClose(await values(state), want.S, { ...stateTol, label: `lightningAttention state ${dtype}` });
          const g = T.lightningAttentionBackward(q, k, v, slopes, dO, dS, { blockSize: c.blockSize, initialState: S0 });
          assertClose(await values(g.dq), want.dq, { ...tol, label: `dq ${dtype}` });
          assertClose(await values(g.dk), want.dk, { ...tol, label: `dk ${dtype}` });
          assertClose(await values(g.dv), want.dv, { ...tol, label: `dv ${dtype}` });
          if (S0) assertClose(await values(g.dInitialState!), want.dS0, { ...stateTol, label: `dInitialState ${dtype}` });
          // Decode: one step from the state after T tokens equals the forward over T + 1 tokens.
          const qt = rng.tensor([c.B, c.H, c.D], { dtype, std: 0.3 });
          const kt = rng.tensor([c.B, c.H, c.D], { dtype, std: 0.3 });
          const vt = rng.tensor([c.B, c.H, c.E], { dtype, std: 0.3 });
          const step = T.lightningStep(qt, kt, vt, slopes, state);
          const lam = slopeValues.map((s) => Math.exp(-Math.fround(s)));
          const S = await values(state);
          const [qs, ks, vs] = [await values(qt), await values(kt), await values(vt)];
          const wantS = new Float64Array(S.length);
          const wantO = new Float64Array(c.B * c.H * c.E);
          for (let bh = 0; bh < c.B * c.H; bh++) {
            for (let d = 0; d < c.D; d++) {
              for (let e = 0; e < c.E; e++) {
                const i = (bh * c.D + d) * c.E + e;
                wantS[i] = lam[bh % c.H] * S[i] + ks[bh * c.D + d] * vs[bh * c.E + e];
                wantO[bh * c.E + e] += qs[bh * c.D + d] * wantS[i];
              }
            }
          }
          assertClose(await values(step.output), wantO, { ...tol, label: `lightningStep output ${dtype}` });
          assertClose(await values(step.state), wantS, { ...stateTol, label: `lightningStep state ${dtype}` });
          for (const t of [q, k, v, dO, dS, S0, slopes, output, state, g.dq, g.dk, g.dv, g.dInitialState, qt, kt, vt, step.output, step.state]) t?.dispose();
        }
      });
    }

    it("randomUniform and randomNormal reproduce the reference stream exactly", async () => {
      for (const [shape, seed, offset] of [[[7], 1, 0], [[3, 65], 2 ** 40 + 3, 12345], [[1000], 42, 2 ** 32 - 500]] as [number[], number, number][]) {
        const n = O.sizeOf(shape);
        const u = T.randomUniform(shape, { seed, offset, low: -2, high: 3 });
        const z = T.randomNormal(shape, { seed, offset, mean: 0.5, std: 2 });
        expect(Array.from(await u.data())).toEqual(Array.from(T.fillUniform(new Float32Array(n), { seed, offset, low: -2, high: 3 })));
        expect(Array.from(await z.data())).toEqual(Array.from(T.fillNormal(new Float32Array(n), { seed, offset, mean: 0.5, std: 2 })));
        u.dispose();
        z.dispose();
      }
    });

    it("comparisons, where, argmax and casts", async () => {
      const rng = seeded(909);
      for (const [sa, sb] of BROADCAST_PAIRS) {
        // Small integers so that equal values occur.
        const ha = Float64Array.from({ length: O.sizeOf(sa) }, () => rng.int(3));
        const hb = Float64Array.from({ length: O.sizeOf(sb) }, () => rng.int(3));
        const a = T.tensor(ha, sa);
        const b = T.tensor(hb, sb);
        for (const op of T.COMPARE_OPS) {
          const y = T[op](a, b);
          expect(y.dtype).toBe("u8");
          const want = O.mapBroadcast([sa, sb], [ha, hb], (p, q) => (COMPARE_ORACLE[op](p, q) ? 1 : 0));
          assertClose(await values(y), want.data, { atol: 0, rtol: 0, label: op });
          y.dispose();
        }
        const cond = T.less(a, b);
        const w = T.where(cond, a, b);
        assertClose(await values(w), O.mapBroadcast([sa, sb], [ha, hb], Math.min).data, { atol: 0, rtol: 0, label: "where" });
        for (const t of [a, b, cond, w]) t.dispose();
      }
      const x = rng.tensor([4, 7, 3]);
      const xs = await values(x);
      for (const axis of [0, 1, 2]) {
        const am = T.argmax(x, axis);
        const got = await am.data();
        const maxes = O.reduce(xs, [4, 7, 3], [axis], "max");
        const redShape = [4, 7, 3].map((d, i) => (i === axis ? 1 : d));
        // The value at the returned index is the maximum of its slice.
        for (let i = 0; i < got.length; i++) {
          const idx = O.unravel(i, redShape);
          idx[axis] = got[i]!;
          expect(xs[O.ravelBroadcast(idx, [4, 7, 3])]).toBe(maxes[i]);
        }
        am.dispose();
      }
      const ints = T.cast(x, "i32");
      assertClose(await values(ints), xs.map((v) => Math.trunc(v)), { atol: 0, rtol: 0, label: "cast f32→i32" });
      const back = T.cast(ints, "f32");
      assertClose(await values(back), xs.map((v) => Math.trunc(v)), { atol: 0, rtol: 0, label: "cast i32→f32" });
      const half = T.cast(x, "bf16");
      assertClose(await values(half), xs, { ...tolerance("bf16"), label: "cast f32→bf16" });
      for (const t of [x, ints, back, half]) t.dispose();
    });

    it("integer arithmetic and integer reductions", async () => {
      const a = T.tensor(Int32Array.from([7, -7, 2147483647, 3]), [4], { dtype: "i32" });
      const b = T.tensor(Int32Array.from([2, 2, 1, -3]), [4], { dtype: "i32" });
      const results = T.scope(() => [T.div(a, b), T.add(a, b), T.sum(b), T.max(a)]);
      const got = await Promise.all(results.map(async (t) => Array.from(await t.data())));
      expect(got).toEqual([[3, -3, 2147483647, -1], [9, -5, -2147483648, 0], [2], [2147483647]]);
      for (const t of [a, b, ...results]) t.dispose();
    });

    it("creation: fill and arange", async () => {
      for (const dtype of ["f32", "f16", "bf16", "i32", "u8"] as DType[]) {
        const f = T.full([2, 3], 5, { dtype });
        expect(Array.from(await f.data())).toEqual([5, 5, 5, 5, 5, 5]);
        f.dispose();
      }
      const r = T.arange(2, 11, 3);
      expect(Array.from(await r.data())).toEqual([2, 5, 8]);
      r.dispose();
    });

    // Runs last: every case above disposes what it made, so nothing may be left alive.
    it("leaves no tensor alive", () => {
      expect(T.liveTensors().map((t) => `#${t.id} ${t.describe()}`).slice(liveAtStart)).toEqual([]);
      expect(T.liveTensorCount()).toBe(liveAtStart);
    });
  });
}
