/** Mixed precision in the optimizers: f32 master copies of half-precision parameters, and dynamic loss scaling. */
import { f32BitsToBf16, findLeaks, roundTo, scalar, type Tensor, tensor } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/testing";
import { describe, expect, it } from "vitest";
import { disposeTree } from "../src/index.js";
import { AdamW, allFinite, GradScaler, SGD } from "../src/optim/index.js";

type Params = { w: Tensor; b: Tensor };
const SHAPES = { w: [3, 5], b: [7] } as const;
/** Seeded values on the bf16 grid, so that the bf16 and f32 parameters start equal. */
const start = (n: keyof Params) => Array.from(seeded(n.length).array(SHAPES[n][0] * (SHAPES[n][1] ?? 1)), (x) => roundTo("bf16", x));
const gradAt = (n: keyof Params, t: number) => Array.from(seeded(100 * t + n.length).array(start(n).length, n === "b" ? 1e-3 : 1));
const tree = (values: (n: keyof Params) => number[], dtype: "f32" | "bf16" | "f16"): Params => ({
  w: tensor(values("w"), SHAPES.w, { dtype }),
  b: tensor(values("b"), SHAPES.b, { dtype }),
});
const f32Bits = async (t: Tensor) => Array.from(new Uint32Array((await t.bytes()).buffer));
const u16Bits = async (t: Tensor) => Array.from(new Uint16Array((await t.bytes()).buffer));

describe("f32 master weights for half-precision parameters", () => {
  it("accumulate updates below half a bf16 step, which a bf16 update would lose", () => {
    // 1 − 0.001 rounds back to 1 in bf16 (its step at 1 is 2⁻⁷): without a master copy nothing moves.
    let p = { w: tensor([1, 1, 1], [3], { dtype: "bf16" }) };
    const opt = new SGD({ lr: 1e-3 });
    for (let t = 0; t < 40; t++) {
      const g = { w: tensor([1, 1, 1], [3], { dtype: "bf16" }) };
      p = opt.step(p, g);
      disposeTree(g);
    }
    const { tensors } = opt.stateDict();
    expect(tensors["master/w"].dtype).toBe("f32");
    expect(tensors["master/w"].dataSync()[0]).toBeCloseTo(0.96, 5);
    expect(p.w.dtype).toBe("bf16");
    expect(Array.from(p.w.dataSync())).toEqual([0.9609375, 0.9609375, 0.9609375]); // 0.96 rounded to bf16
    disposeTree([p, tensors]);
    opt.dispose();
  });

  it("AdamW on bf16 parameters with f32 gradients runs the f32 update bit for bit on the master", async () => {
    const settings = { lr: 0.05, weightDecay: 0.1, betas: [0.9, 0.95] as const };
    const [a, b] = [new AdamW(settings), new AdamW(settings)];
    let [pf, ph] = [tree(start, "f32"), tree(start, "bf16")];
    for (let t = 1; t <= 5; t++) {
      const g = tree((n) => gradAt(n, t), "f32");
      pf = a.step(pf, g);
      ph = b.step(ph, g); // f32 gradients are accepted for half-precision parameters
      disposeTree(g);
    }
    const { tensors } = b.stateDict();
    expect(Object.keys(tensors).sort()).toEqual(["exp_avg/b", "exp_avg/w", "exp_avg_sq/b", "exp_avg_sq/w", "master/b", "master/w"]);
    for (const t of Object.values(tensors)) expect(t.dtype).toBe("f32");
    for (const n of ["w", "b"] as const) {
      expect(await f32Bits(tensors[`master/${n}`])).toEqual(await f32Bits(pf[n]));
      expect(ph[n].dtype).toBe("bf16");
      expect(await u16Bits(ph[n])).toEqual((await f32Bits(pf[n])).map(f32BitsToBf16));
    }
    disposeTree([pf, ph, tensors]);
    a.dispose();
    b.dispose();
  });

  it("save and load with the master copy and continue bit for bit; a bad gradient dtype is refused", async () => {
    const a = new AdamW({ lr: 0.05 });
    let pa = tree(start, "bf16");
    for (let t = 1; t <= 3; t++) pa = a.step(pa, tree((n) => gradAt(n, t), "bf16"));
    const state = a.stateDict();
    const b = new AdamW({ lr: 0.05 });
    b.loadStateDict({ meta: JSON.parse(JSON.stringify(state.meta)) as typeof state.meta, tensors: state.tensors });
    disposeTree(state.tensors);
    let pb = { w: tensor(pa.w.dataSync(), SHAPES.w, { dtype: "bf16" }), b: tensor(pa.b.dataSync(), SHAPES.b, { dtype: "bf16" }) };
    for (let t = 4; t <= 6; t++) {
      pa = a.step(pa, tree((n) => gradAt(n, t), "bf16"));
      pb = b.step(pb, tree((n) => gradAt(n, t), "bf16"));
    }
    for (const n of ["w", "b"] as const) expect(await u16Bits(pb[n])).toEqual(await u16Bits(pa[n]));
    const f16 = tree((n) => gradAt(n, 7), "f16");
    expect(() => b.step(pb, f16)).toThrow(/gradient f16\[3, 5\] at 'w' does not match parameter bf16\[3, 5\]/);
    disposeTree([pa, pb, f16]);
    a.dispose();
    b.dispose();
  });

  it("leak nothing", async () => {
    const opt = new AdamW({ lr: 0.1 });
    const leaks = await findLeaks(() => {
      let p = tree(start, "f16");
      for (let t = 1; t <= 3; t++) {
        const g = tree((n) => gradAt(n, t), t === 2 ? "f32" : "f16");
        p = opt.step(p, g);
        disposeTree(g);
      }
      opt.dispose();
      return p;
    });
    expect(leaks).toEqual([]);
  });
});

describe("GradScaler", () => {
  it("skips a step with an injected Inf or NaN and halves the scale; grows it after growthInterval finite steps", async () => {
    const opt = new SGD({ lr: 0.1 });
    const scaler = new GradScaler({ initScale: 2 ** 10, growthInterval: 3 });
    let p = tree(start, "f16");
    const scales: number[] = [];
    const skipped: boolean[] = [];
    const inject = [Infinity, 0, 0, 0, 0, NaN, 0];
    for (const [t, bad] of inject.entries()) {
      scales.push(scaler.scale);
      // Gradients of a loss scaled by S, with one entry overflowing on the bad steps.
      const raw = tree((n) => gradAt(n, t + 1).map((x, i) => (n === "w" && i === 4 && bad !== 0 ? bad : x * scaler.scale * 1e-3)), "f16");
      const unscaled = scaler.unscale(raw);
      expect(unscaled.w.dtype).toBe("f32");
      const before = p;
      const r = await scaler.step(opt, p, unscaled);
      if (r.skipped) expect(r.params).toBe(before);
      p = r.params;
      skipped.push(r.skipped);
      disposeTree([raw, unscaled]);
    }
    expect(skipped).toEqual([true, false, false, false, false, true, false]);
    expect(scales).toEqual([2 ** 10, 2 ** 9, 2 ** 9, 2 ** 9, 2 ** 10, 2 ** 10, 2 ** 9]);
    expect(opt.stepCount).toBe(5);
    expect(scaler.stateDict()).toEqual({ scale: 2 ** 9, growthTracker: 1 });
    const resumed = new GradScaler({ initScale: 2 ** 10, growthInterval: 3 });
    resumed.loadStateDict(scaler.stateDict());
    expect(resumed.scale).toBe(2 ** 9);
    disposeTree(p);
    opt.dispose();
  });

  it("scales the loss, unscales gradients exactly into f32, and checks settings", () => {
    const scaler = new GradScaler({ initScale: 2 ** 12 });
    const loss = scaler.scaleLoss(scalar(1.5));
    expect(loss.dataSync()[0]).toBe(1.5 * 2 ** 12);
    const g = { a: tensor([2 ** 12, -3 * 2 ** 12], [2], { dtype: "f16" }), b: null };
    const u = scaler.unscale(g);
    expect(Array.from(u.a.dataSync())).toEqual([1, -3]);
    expect(u.b).toBeNull();
    disposeTree([loss, g, u]);
    expect(() => new GradScaler({ backoffFactor: 1 })).toThrow(/backoffFactor/);
    expect(() => new GradScaler({ growthInterval: 0 })).toThrow(/growthInterval/);
  });

  it("allFinite finds an Inf or NaN anywhere in a tree, with one read", async () => {
    const ok = { a: tensor([1, -65504, 0], [3], { dtype: "f16" }), b: [tensor([3e38], [1])] };
    const inf = { a: tensor([1, Infinity], [2], { dtype: "bf16" }) };
    const nan = [tensor([0, NaN, 2], [3])];
    expect(await allFinite(ok)).toBe(true);
    expect(await allFinite(inf)).toBe(false);
    expect(await allFinite(nan)).toBe(false);
    expect(await allFinite({})).toBe(true);
    disposeTree([ok, inf, nan]);
  });
});
