/**
 * The fused `adamwUpdate` op that AdamW runs per parameter: on the CPU (its decomposition) it gives,
 * bit for bit, what the elementwise composition AdamW used before gave; it agrees with a float64
 * formula written out per element; its optional half-precision output is the new parameter rounded
 * once; a half-precision gradient is read as its exact f32 widening; it has no gradient; and AdamW
 * runs it once per parameter and step, half-precision parameters included.
 */
import {
  add,
  addOpObserver,
  adamwUpdate,
  type AdamwOptions,
  cast,
  div,
  type DType,
  mul,
  scope,
  sqrt,
  square,
  sub,
  sum,
  type Tensor,
  tensor,
} from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/testing";
import { describe, expect, it } from "vitest";
import { grad } from "../src/index.js";
import { AdamW } from "../src/optim/index.js";

/** The composition AdamW.update ran before the fused op (optim/adamw.ts up to this change), op for op. */
function composed(p: Tensor, g: Tensor, m0: Tensor, v0: Tensor, o: Required<Omit<AdamwOptions, "castTo">>) {
  const { lr, beta1: b1, beta2: b2, eps, weightDecay, step: t } = o;
  const m = add(mul(m0, b1), mul(g, 1 - b1));
  const v = add(mul(v0, b2), mul(square(g), 1 - b2));
  const decayed = weightDecay !== 0 ? mul(p, 1 - lr * weightDecay) : p;
  const denom = add(div(sqrt(v), Math.sqrt(1 - b2 ** t)), eps);
  const param = sub(decayed, mul(div(m, denom), lr / (1 - b1 ** t)));
  return { param, expAvg: m, expAvgSq: v };
}

/**
 * The formula per element in float64, and for each result the sum of the magnitudes of its terms
 * (what rounding errors scale with when the terms cancel).
 */
function formula(p: number, g: number, m0: number, v0: number, o: Required<Omit<AdamwOptions, "castTo">>) {
  const m = o.beta1 * m0 + (1 - o.beta1) * g;
  const v = o.beta2 * v0 + (1 - o.beta2) * g * g;
  const decayed = p * (1 - o.lr * o.weightDecay);
  const update = (o.lr / (1 - o.beta1 ** o.step)) * (m / (Math.sqrt(v) / Math.sqrt(1 - o.beta2 ** o.step) + o.eps));
  return {
    value: { param: decayed - update, m, v },
    scale: { param: Math.abs(decayed) + Math.abs(update), m: Math.abs(o.beta1 * m0) + Math.abs((1 - o.beta1) * g), v },
  };
}

/** Seeded param, grad and moments of one shape (v ≥ 0, some moments zero as on the first step). */
function inputs(seed: number, shape: number[], dtype: DType) {
  const r = seeded(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const make = (f: (x: number, i: number) => number) => tensor(Array.from(r.array(n), f), shape, { dtype });
  return {
    p: make((x) => x),
    g: make((x) => 0.1 * x),
    m: make((x, i) => (i % 5 === 0 ? 0 : 0.05 * x)),
    v: make((x, i) => (i % 5 === 0 ? 0 : 1e-3 * x * x)),
  };
}

const SHAPES = [[1], [7], [65, 3], [513], [3, 1, 37]];
const SETTINGS: Required<Omit<AdamwOptions, "castTo">>[] = [
  { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 },
  { lr: 3e-2, beta1: 0.8, beta2: 0.95, eps: 1e-3, weightDecay: 0, step: 2 },
  { lr: 0.5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 37 },
  { lr: 1e-4, beta1: 0, beta2: 0.5, eps: 0, weightDecay: 0.3, step: 1000 },
];

const bits = (t: Tensor) => Array.from(t.dataSync());

describe("adamwUpdate", () => {
  for (const dtype of ["f64", "f32"] as const) {
    it(`equals the elementwise composition bit for bit, and the float64 formula (${dtype}, odd sizes, several steps)`, () => {
      SHAPES.forEach((shape, si) => {
        SETTINGS.forEach((o, oi) => {
          scope(() => {
            const { p, g, m, v } = inputs(100 * si + oi, shape, dtype);
            const fused = adamwUpdate(p, g, m, v, o);
            const want = composed(p, g, m, v, o);
            const label = `${dtype} ${shape.join("x")} setting ${oi}`;
            for (const k of ["param", "expAvg", "expAvgSq"] as const) {
              expect(fused[k].dtype, label).toBe(dtype);
              expect(fused[k].shape, label).toEqual(shape);
              expect(bits(fused[k]), `${label} ${k}`).toEqual(bits(want[k]));
            }
            const [hp, hg, hm, hv] = [p, g, m, v].map(bits);
            const got = { param: bits(fused.param), m: bits(fused.expAvg), v: bits(fused.expAvgSq) };
            // f64: a few ulps of float64; f32: the rounding of each op (and of the scalars) to f32.
            const rtol = dtype === "f64" ? 1e-14 : 2e-6;
            hp.forEach((_, i) => {
              const { value, scale } = formula(hp[i], hg[i], hm[i], hv[i], o);
              for (const k of ["param", "m", "v"] as const) {
                expect(Math.abs(got[k][i] - value[k]), `${label} ${k}[${i}]`).toBeLessThanOrEqual(rtol * scale[k]);
              }
            });
          });
        });
      });
    });
  }

  it("rounds the new parameter to castTo in the same op, as a cast of it would", () => {
    for (const castTo of ["bf16", "f16"] as const) {
      scope(() => {
        const { p, g, m, v } = inputs(7, [129], "f32");
        const r = adamwUpdate(p, g, m, v, { ...SETTINGS[2], castTo });
        expect(r.half?.dtype).toBe(castTo);
        expect(bits(r.half!)).toEqual(bits(cast(r.param, castTo)));
        expect(adamwUpdate(p, g, m, v, SETTINGS[2]).half).toBeUndefined();
      });
    }
  });

  it("reads a bf16 or f16 gradient of an f32 parameter as its exact f32 value", () => {
    for (const gd of ["bf16", "f16"] as const) {
      scope(() => {
        const { p, g, m, v } = inputs(8, [65], "f32");
        const gh = cast(g, gd);
        const a = adamwUpdate(p, gh, m, v, SETTINGS[0]);
        const b = adamwUpdate(p, cast(gh, "f32"), m, v, SETTINGS[0]);
        for (const k of ["param", "expAvg", "expAvgSq"] as const) expect(bits(a[k])).toEqual(bits(b[k]));
      });
    }
  });

  it("has no gradient: one reaching it names the op and why", () => {
    const { p, g, m, v } = inputs(9, [5], "f32");
    expect(() => grad((x: Tensor) => sum(adamwUpdate(x, g, m, v, SETTINGS[0]).param))(p)).toThrow(/adamwUpdate.*optimizer update/);
    for (const t of [p, g, m, v]) t.dispose();
  });

  it("is the one op of an AdamW step per parameter, bf16 parameters and gradients included", () => {
    const r = seeded(10);
    let params = { w: tensor(Array.from(r.array(15)), [3, 5], { dtype: "bf16" }), b: tensor(Array.from(r.array(5)), [5]) };
    const opt = new AdamW({ lr: 1e-2 });
    const perStep: string[][] = [];
    for (let step = 0; step < 3; step++) {
      const grads = { w: tensor(Array.from(r.array(15)), [3, 5], { dtype: "bf16" }), b: tensor(Array.from(r.array(5)), [5]) };
      const ops: string[] = [];
      const stop = addOpObserver((rec) => ops.push(rec.op === "adamwUpdate" ? `adamwUpdate${rec.inputs[1].dtype === "bf16" ? " (bf16 grad)" : ""}` : rec.op));
      params = opt.step(params, grads);
      stop();
      perStep.push(ops);
      for (const t of Object.values(grads)) t.dispose();
    }
    // The first step makes the moments (fill) and the f32 master of w (cast); after that, nothing else.
    expect(perStep[0].filter((op) => !op.startsWith("adamwUpdate")).sort()).toEqual(["cast", "fill", "fill", "fill", "fill"]);
    expect(perStep[1]).toEqual(["adamwUpdate (bf16 grad)", "adamwUpdate"]);
    expect(perStep[2]).toEqual(perStep[1]);
    expect(params.w.dtype).toBe("bf16");
    for (const t of Object.values(params)) t.dispose();
    opt.dispose();
  });
});
