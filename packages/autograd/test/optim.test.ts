/** Optimizers against plain float64 implementations of their published update rules. */
import { findLeaks, type Tensor, tensor } from "@lightning-ts/tensor";
import { assertClose, seeded } from "@lightning-ts/testing";
import { describe, expect, it } from "vitest";
import { disposeTree } from "../src/index.js";
import { AdamW, clipGradNorm, constant, cosineDecay, linearWarmup, SGD, sequence, warmupCosine } from "../src/optim/index.js";

type Params = { w: Tensor; b: Tensor; norm: Tensor };
const SHAPES = { w: [3, 5], b: [5], norm: [7] } as const;
const NAMES = ["w", "b", "norm"] as const;

/** Seeded values per parameter and step; gradient scales differ so that ε and the moments matter. */
const initial = (name: string) => Array.from(seeded(name.length).array(SHAPES[name as keyof typeof SHAPES].reduce((a, b) => a * b, 1)));
const gradAt = (name: string, step: number) =>
  Array.from(seeded(100 * step + name.length).array(initial(name).length, name === "norm" ? 1e-3 : 1));

const makeTree = (values: (name: string) => number[], dtype: "f32" | "f64") =>
  Object.fromEntries(NAMES.map((n) => [n, tensor(values(n), SHAPES[n], { dtype })])) as Params;

/** Runs `steps` updates of `opt` and returns the parameter values after each step. */
function runOptimizer(opt: AdamW | SGD, dtype: "f32" | "f64", steps: number): Record<string, number[]>[] {
  let params = makeTree(initial, dtype);
  const history: Record<string, number[]>[] = [];
  for (let t = 1; t <= steps; t++) {
    const grads = makeTree((n) => gradAt(n, t), dtype);
    params = opt.step(params, grads);
    disposeTree(grads);
    history.push(Object.fromEntries(NAMES.map((n) => [n, Array.from(params[n].dataSync())])));
  }
  disposeTree(params);
  opt.dispose();
  return history;
}

/**
 * AdamW as published (Loshchilov & Hutter 2019, Algorithm 2), with the decay scaled by the
 * learning rate as PyTorch does: θ ← θ − lr·(m̂ / (√v̂ + ε) + λ·θ).
 */
function adamwReference(lr: (step: number) => number, decay: (name: string) => number, steps: number, b1: number, b2: number, eps: number) {
  const theta = Object.fromEntries(NAMES.map((n) => [n, initial(n)]));
  const m = Object.fromEntries(NAMES.map((n) => [n, theta[n].map(() => 0)]));
  const v = Object.fromEntries(NAMES.map((n) => [n, theta[n].map(() => 0)]));
  const history: Record<string, number[]>[] = [];
  for (let t = 1; t <= steps; t++) {
    for (const n of NAMES) {
      const g = gradAt(n, t);
      theta[n] = theta[n].map((th, i) => {
        m[n][i] = b1 * m[n][i] + (1 - b1) * g[i];
        v[n][i] = b2 * v[n][i] + (1 - b2) * g[i] ** 2;
        const mHat = m[n][i] / (1 - b1 ** t);
        const vHat = v[n][i] / (1 - b2 ** t);
        return th - lr(t - 1) * (mHat / (Math.sqrt(vHat) + eps) + decay(n) * th);
      });
    }
    history.push(Object.fromEntries(NAMES.map((n) => [n, [...theta[n]]])));
  }
  return history;
}

describe("AdamW", () => {
  const lr = warmupCosine({ peak: 0.05, warmupSteps: 2, totalSteps: 6, floor: 0.01 });
  const make = () =>
    new AdamW({ lr, betas: [0.8, 0.95], eps: 1e-3, weightDecay: 0.1 }, [{ name: "no_decay", match: /^(b|norm)$/, weightDecay: 0 }]);
  const reference = adamwReference(lr, (n) => (n === "w" ? 0.1 : 0), 6, 0.8, 0.95, 1e-3);

  it("matches the published update rule in float64 over several steps", () => {
    const got = runOptimizer(make(), "f64", 6);
    got.forEach((step, t) => {
      for (const n of NAMES) assertClose(step[n], reference[t][n], { atol: 1e-13, rtol: 1e-13, label: `step ${t + 1} ${n}` });
    });
  });

  it("matches it in float32 within float32 rounding", () => {
    const got = runOptimizer(make(), "f32", 6);
    got.forEach((step, t) => {
      for (const n of NAMES) assertClose(step[n], reference[t][n], { atol: 1e-5, rtol: 1e-5, label: `step ${t + 1} ${n}` });
    });
  });

  it("applies weight decay only outside the no-decay group", () => {
    // With zero gradients, only decay moves parameters.
    const opt = new AdamW({ lr: 0.5, weightDecay: 0.1 }, [{ name: "no_decay", match: (path) => path.startsWith("norm"), weightDecay: 0 }]);
    const params = { w: tensor([1, 2]), norm: tensor([1, 2]) };
    const next = opt.step(params, { w: tensor([0, 0]), norm: tensor([0, 0]) });
    expect(Array.from(next.w.dataSync())).toEqual([0.949999988079071, 1.899999976158142]);
    expect(Array.from(next.norm.dataSync())).toEqual([1, 2]);
    expect(params.w.isDisposed).toBe(true);
    expect(opt.groupOf("norm", next.norm).name).toBe("no_decay");
  });

  it("keeps parameters without a gradient and non-tensor leaves", () => {
    const opt = new AdamW({ lr: 0.1 });
    const frozen = tensor([1, 2, 3]);
    const params = { w: tensor([1]), frozen, config: { depth: 2 } };
    const next = opt.step(params, { w: tensor([1]), frozen: null, config: { depth: null } });
    expect(next.frozen).toBe(frozen);
    expect(next.config.depth).toBe(2);
    // 1·(1 − 0.1·0.01) − 0.1: default weight decay, then a first Adam step of (almost exactly) lr.
    expect(next.w.dataSync()[0]).toBeCloseTo(0.899, 6);
  });
});

describe("SGD", () => {
  function sgdReference(lr: number, mu: number, nesterov: boolean, wd: number, steps: number) {
    const theta = Object.fromEntries(NAMES.map((n) => [n, initial(n)]));
    const buf: Record<string, number[]> = {};
    const history: Record<string, number[]>[] = [];
    for (let t = 1; t <= steps; t++) {
      for (const n of NAMES) {
        const g = gradAt(n, t).map((x, i) => x + wd * theta[n][i]);
        buf[n] = t === 1 ? g : buf[n].map((b, i) => mu * b + g[i]);
        const dir = nesterov ? g.map((x, i) => x + mu * buf[n][i]) : buf[n];
        theta[n] = theta[n].map((th, i) => th - lr * dir[i]);
      }
      history.push(Object.fromEntries(NAMES.map((n) => [n, [...theta[n]]])));
    }
    return history;
  }

  for (const nesterov of [false, true]) {
    it(`with momentum${nesterov ? " (Nesterov)" : ""} matches the reference in float64`, () => {
      const got = runOptimizer(new SGD({ lr: 0.05, momentum: 0.9, nesterov, weightDecay: 0.01 }), "f64", 5);
      const want = sgdReference(0.05, 0.9, nesterov, 0.01, 5);
      got.forEach((step, t) => {
        for (const n of NAMES) assertClose(step[n], want[t][n], { atol: 1e-13, rtol: 1e-13, label: `step ${t + 1} ${n}` });
      });
    });
  }
});

describe("clipGradNorm", () => {
  it("scales all gradients by maxNorm / ‖g‖ and returns the norm before clipping", () => {
    const grads = { a: tensor([3, 0]), b: [tensor([0, 4]), null] };
    const { grads: clipped, norm } = clipGradNorm(grads, 1);
    expect(norm.dataSync()[0]).toBeCloseTo(5, 6);
    assertClose(clipped.a, [0.6, 0], { atol: 1e-6 });
    assertClose(clipped.b[0]!, [0, 0.8], { atol: 1e-6 });
    expect(clipped.b[1]).toBeNull();
    expect(grads.a.isDisposed).toBe(false);
  });

  it("leaves gradients below the bound unchanged", () => {
    const { grads: clipped, norm } = clipGradNorm([tensor([0.3, -0.4])], 1);
    expect(norm.dataSync()[0]).toBeCloseTo(0.5, 6);
    expect(Array.from(clipped[0].dataSync())).toEqual([0.30000001192092896, -0.4000000059604645]);
  });

  it("leaks nothing", async () => {
    const g = { a: tensor([1, 2, 3]), b: tensor([4, 5], [2], { dtype: "f32" }) };
    expect(await findLeaks(() => clipGradNorm(g, 0.5))).toEqual([]);
  });
});

describe("schedules", () => {
  it("give the documented values", () => {
    expect(constant(0.1)(123)).toBe(0.1);
    const warm = linearWarmup(1, 4);
    expect([0, 1, 2, 3, 10].map(warm)).toEqual([0.25, 0.5, 0.75, 1, 1]);
    const cos = cosineDecay(1, 10, 0.1);
    expect(cos(0)).toBe(1);
    expect(cos(5)).toBeCloseTo(0.55, 12);
    expect(cos(10)).toBeCloseTo(0.1, 12);
    expect(cos(50)).toBeCloseTo(0.1, 12);
    const wc = warmupCosine({ peak: 1, warmupSteps: 2, totalSteps: 12, floor: 0.1 });
    expect([0, 1, 2, 7, 12, 20].map(wc)).toEqual([0.5, 1, 1, cos(5), cos(10), cos(10)]);
    const seq = sequence([constant(3), constant(2), constant(1)], [2, 5]);
    expect([0, 1, 2, 4, 5, 9].map(seq)).toEqual([3, 3, 2, 2, 1, 1]);
    expect(() => sequence([constant(1)], [3])).toThrow(/boundaries/);
  });
});

describe("optimizer state", () => {
  it("round-trips through stateDict / loadStateDict and continues identically", () => {
    const settings = { lr: cosineDecay(0.1, 10), weightDecay: 0.05 };
    const a = new AdamW(settings);
    let pa = makeTree(initial, "f32");
    for (let t = 1; t <= 3; t++) pa = a.step(pa, makeTree((n) => gradAt(n, t), "f32"));
    const state = a.stateDict();
    expect(state.meta.step).toBe(3);
    expect(Object.keys(state.tensors).sort()).toEqual(["exp_avg/b", "exp_avg/norm", "exp_avg/w", "exp_avg_sq/b", "exp_avg_sq/norm", "exp_avg_sq/w"]);
    expect(state.meta.settings.lr).toBe("schedule");

    const b = new AdamW(settings);
    b.loadStateDict({ meta: JSON.parse(JSON.stringify(state.meta)) as typeof state.meta, tensors: state.tensors });
    disposeTree(state.tensors); // b holds its own handles
    let pb = makeTree((n) => Array.from(pa[n as keyof Params].dataSync()), "f32");
    pa = a.step(pa, makeTree((n) => gradAt(n, 4), "f32"));
    pb = b.step(pb, makeTree((n) => gradAt(n, 4), "f32"));
    for (const n of NAMES) expect(Array.from(pb[n].dataSync())).toEqual(Array.from(pa[n].dataSync()));
    expect(b.stepCount).toBe(4);
  });

  it("refuses state from different settings or another optimizer", () => {
    const state = new AdamW({ lr: 0.1 }).stateDict();
    expect(() => new AdamW({ lr: 0.2 }).loadStateDict(state)).toThrow(/differ/);
    expect(() => new SGD({ lr: 0.1 }).loadStateDict(state)).toThrow(/AdamW/);
  });

  it("an optimizer step leaks nothing", async () => {
    const opt = new AdamW({ lr: 0.1 });
    const leaks = await findLeaks(() => {
      let p = makeTree(initial, "f32");
      for (let t = 1; t <= 3; t++) {
        const g = makeTree((n) => gradAt(n, t), "f32");
        p = opt.step(p, g);
        disposeTree(g);
      }
      opt.dispose();
      return p;
    });
    expect(leaks).toEqual([]);
  });
});

describe("tentativeStep", () => {
  const values = (p: Params) => Object.fromEntries(NAMES.map((n) => [n, Array.from(p[n].dataSync())]));
  const slotValues = (opt: AdamW) => {
    const { tensors, meta } = opt.stateDict();
    const out = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, Array.from(t.dataSync())]));
    disposeTree(tensors);
    return { out, step: meta.step, params: meta.params };
  };

  for (const dtype of ["f32", "bf16"] as const) {
    it(`committed, equals step() bit for bit; rolled back, leaves parameters and state as they were (${dtype})`, () => {
      const settings = { lr: 0.05, weightDecay: 0.1 };
      const plain = new AdamW(settings);
      const tentative = new AdamW(settings);
      const make = (v: (n: string) => number[]) => Object.fromEntries(NAMES.map((n) => [n, tensor(v(n), SHAPES[n], { dtype })])) as Params;
      let a = make(initial);
      let b = make(initial);
      for (let t = 1; t <= 4; t++) {
        const g = make((n) => gradAt(n, t));
        a = plain.step(a, g);
        // Steps 2 and 4 are first tried with a non-finite gradient and taken back.
        if (t % 2 === 0) {
          const before = { params: values(b), state: slotValues(tentative) };
          const bad = make((n) => gradAt(n, t).map((x, i) => (i === 1 ? Number.NaN : x)));
          const tried = tentative.tentativeStep(b, bad);
          expect(Number.isNaN(tried.params.w.dataSync()[1])).toBe(true);
          b = tried.rollback();
          disposeTree(bad);
          expect(values(b)).toEqual(before.params);
          expect(slotValues(tentative)).toEqual(before.state);
        }
        const next = tentative.tentativeStep(b, g);
        next.commit();
        b = next.params;
        disposeTree(g);
        expect(values(b)).toEqual(values(a));
      }
      expect(slotValues(tentative)).toEqual(slotValues(plain));
      disposeTree([a, b]);
      plain.dispose();
      tentative.dispose();
    });
  }

  it("must be settled exactly once before the next update", () => {
    const opt = new AdamW({ lr: 0.1 });
    const p = makeTree(initial, "f32");
    const g = makeTree((n) => gradAt(n, 1), "f32");
    const next = opt.tentativeStep(p, g);
    expect(() => opt.step(p, g)).toThrow(/neither committed nor rolled back/);
    next.rollback();
    expect(() => next.commit()).toThrow(/already committed or rolled back/);
    expect(opt.stepCount).toBe(0);
    disposeTree([p, g]);
  });

  it("leaks nothing, committed or rolled back", async () => {
    const opt = new AdamW({ lr: 0.1 });
    const leaks = await findLeaks(() => {
      let p = makeTree(initial, "f32");
      for (let t = 1; t <= 4; t++) {
        const g = makeTree((n) => gradAt(n, t), "f32");
        const next = opt.tentativeStep(p, g);
        if (t === 3) p = next.rollback();
        else {
          next.commit();
          p = next.params;
        }
        disposeTree(g);
      }
      opt.dispose();
      return p;
    });
    expect(leaks).toEqual([]);
  });
});
