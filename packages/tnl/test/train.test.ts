/**
 * Training: the model under autograd, a whole-model float64 gradient check, and a tiny TNL that
 * learns a synthetic task with AdamW.
 */
import { checkGrad, disposeTree, valueAndGrad } from "@lightning-ts/autograd";
import { AdamW, clipGradNorm } from "@lightning-ts/autograd/optim";
import { collectTensors, type Tensor } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { disposeParams, initParams, loss, makeConfig, parameterSpecs, preset, type TnlConfig, type TnlParams } from "../src/index.js";

/** Parameters as a flat list in spec order, and back: checkGrad takes a flat list of inputs. */
const flatten = (c: TnlConfig, p: TnlParams) => parameterSpecs(c).map((spec) => spec.get(p)!);
function unflatten(c: TnlConfig, flat: readonly Tensor[]): TnlParams {
  const p = { layers: [] } as unknown as TnlParams;
  parameterSpecs(c).forEach((spec, i) => spec.set(p, flat[i]));
  return p;
}

describe("training", () => {
  it("loss works under valueAndGrad and every parameter gets a gradient", async () => {
    const config = preset("tnl-micro");
    const params = initParams(config, { seed: 1 });
    const ids = [[1, 4, 7, 2, 9, 3], [5, 5, 6, 8, 10, 0]];
    const { value, grads } = valueAndGrad((p: TnlParams) => loss(p, config, ids, { blockSize: 4 }))(params);
    expect(value.shape).toEqual([]);
    expect((await value.data())[0]).toBeCloseTo(Math.log(11), 0); // near uniform at init
    const gs = collectTensors(grads);
    expect(gs.length).toBe(collectTensors(params).length);
    for (const g of gs) expect(Math.max(...Array.from(await g.data(), Math.abs))).toBeGreaterThan(0);
    disposeTree([value, grads]);
    disposeParams(params);
  });

  it("checkGrad passes for the whole model in float64 (LRPE, decay, both mixers, loss)", async () => {
    // Larger init than the official 0.02 so that every path carries signal above finite-difference noise.
    const config: TnlConfig = { ...preset("tnl-micro"), initStd: 0.5, tieWordEmbeddings: false };
    const params = initParams(config, { seed: 2, dtype: "f64" });
    const flat = flatten(config, params);
    // No pad token (0) in the input: its embedding row is zero, where srms(attention(srms(x)))
    // saturates within the finite-difference step (|x| ≈ √eps), so only the numeric side is wrong there.
    const ids = [[1, 4, 7, 2, 9, 3, 3], [5, 5, 6, 8, 10, 1, 2]];
    const labels = [[-100, 4, 7, 2, 9, 3, 3], [5, 5, 6, -100, 10, 0, 2]];
    const report = await checkGrad((...xs: Tensor[]) => loss(unflatten(config, xs), config, ids, { labels, blockSize: 3 }), flat, { atol: 1e-7, rtol: 1e-5 });
    const worstAbs = Math.max(...report.inputs.map((r) => r.maxAbsError));
    console.log(`checkGrad over ${flat.length} parameter tensors: max |analytic − numeric| = ${worstAbs.toExponential(2)}`);
    expect(report.inputs.filter((r) => !r.ok)).toEqual([]);
    expect(report.ok).toBe(true);
    disposeParams(params);
  });

  it("AdamW drives the loss down on a synthetic task", () => {
    // Next token = previous + 1 (mod V) after a random start: learnable only through the token mixer.
    const V = 16;
    const config = makeConfig({ vocabSize: V, dModel: 32, numLayers: 2, numHeads: 2, gluDim: 64, activation: "silu" });
    const batch = (seed: number) => Array.from({ length: 8 }, (_, b) => Array.from({ length: 12 }, (_, t) => ((seed * 7 + b * 5) + t) % V));
    let params = initParams(config, { seed: 0 });
    const opt = new AdamW({ lr: 0.01, weightDecay: 0 });
    const step = (p: TnlParams, ids: number[][]) => loss(p, config, ids);
    const losses: number[] = [];
    for (let s = 0; s < 60; s++) {
      const { value, grads } = valueAndGrad(step)(params, batch(s));
      losses.push(value.dataSync()[0]);
      const { grads: clipped, norm } = clipGradNorm(grads, 1.0);
      params = opt.step(params, clipped);
      disposeTree([value, grads, clipped, norm]);
    }
    console.log(`AdamW on a counting task: loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}`);
    expect(losses[0]).toBeGreaterThan(2.5);
    expect(losses.at(-1)!).toBeLessThan(0.3 * losses[0]);
    disposeParams(params);
  });
});
