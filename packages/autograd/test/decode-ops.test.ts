/**
 * Gradients of the fused decode-step ops: addRmsNorm, rmsNormGate and fusedLinear (every part on
 * and off) against float64 finite differences in each operand separately, both outputs of
 * addRmsNorm weighted differently; and splitQkvu and decodeLayer, which have none, refusing by
 * name (decodeLayer in place refusing to run on what a tape traces at all).
 */
import { addRmsNorm, decodeLayer, fusedLinear, liveTensorCount, mul, rmsNormGate, scope, splitQkvu, sum, type Tensor, tensor } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { checkGrad, grad } from "../src/index.js";
import { rand } from "./helpers.js";

describe("gradients of the fused decode-step ops", () => {
  it("addRmsNorm in x and y, both outputs used (odd widths)", async () => {
    for (const shape of [[1, 1], [3, 37], [2, 1, 129]]) {
      // w weights the sum; it is an input (so that it is f64 too) without a gradient checked.
      const fn = (x: Tensor, y: Tensor, w: Tensor) => {
        const r = addRmsNorm(x, y, 1e-5);
        return [mul(r.sum, w), r.normed];
      };
      const report = await checkGrad(fn, [rand(31, shape), rand(32, shape), rand(30, shape)], { wrt: [0, 1] });
      expect(report.ok, JSON.stringify(report.inputs)).toBe(true);
    }
  });

  it("rmsNormGate in o and u (odd widths)", async () => {
    for (const shape of [[1, 1], [5, 33], [2, 3, 65]]) {
      const report = await checkGrad((o: Tensor, u: Tensor) => rmsNormGate(o, u, 1e-5), [rand(33, shape), rand(34, shape)]);
      expect(report.ok, JSON.stringify(report.inputs)).toBe(true);
    }
  });

  it("fusedLinear in every input, each part on and off (odd sizes)", async () => {
    const [R, K, N] = [3, 11, 7];
    for (const norm of [false, true])
      for (const gate of norm ? [false, true] : [false])
        for (const product of [false, true])
          for (const residual of [false, true]) {
            const inputs = [rand(41, [R, K]), rand(42, [N, K])];
            if (gate) inputs.push(rand(43, [R, K]));
            if (product) inputs.push(rand(44, [N, K]));
            if (residual) inputs.push(rand(45, [R, N]));
            const fn = (x: Tensor, w: Tensor, ...rest: Tensor[]) => {
              let next = 0;
              const [g, w2, r] = [gate, product, residual].map((on) => (on ? rest[next++] : undefined));
              return fusedLinear(x, w, { norm: norm ? { eps: 1e-5, gate: g } : undefined, second: w2, residual: r });
            };
            const report = await checkGrad(fn, inputs);
            expect(report.ok, `${JSON.stringify({ norm, gate, product, residual })} ${JSON.stringify(report.inputs)}`).toBe(true);
          }
  });

  it("splitQkvu refuses a gradient, naming the op and why", () => {
    const x = rand(35, [2, 4 * 3 * 5]);
    expect(() => grad((t: Tensor) => sum(splitQkvu(t, { heads: 3 }).q))(x)).toThrow(/splitQkvu has no gradient: decode-only/);
    x.dispose();
  });

  it("decodeLayer refuses a gradient in h and in a weight, naming the op and why; in place, it refuses a traced input", () => {
    const before = liveTensorCount();
    scope(() => {
      const [B, H, hd, M, G] = [3, 2, 3, 5, 7];
      const hid = H * hd;
      const weights = { qkvu: rand(51, [4 * hid, M]), out: rand(52, [M, hid]), l1: rand(53, [G, M]), l2: rand(54, [G, M]), l3: rand(55, [M, G]) };
      const slopes = tensor([0.5, 0.125], [H]);
      const state = rand(56, [B, H, hd, hd]);
      const h = rand(57, [B, M]);
      expect(() => grad((t: Tensor) => sum(decodeLayer(t, weights, state, slopes, { heads: H }).h))(h)).toThrow(/autograd: decodeLayer has no gradient: decode-only layer/);
      expect(() => grad((w: Tensor) => sum(decodeLayer(h, { ...weights, l3: w }, state, slopes, { heads: H }).h))(weights.l3)).toThrow(/decodeLayer has no gradient/);
      expect(() => grad((t: Tensor) => sum(decodeLayer(t, weights, state, slopes, { heads: H, inPlace: true }).h))(h)).toThrow(
        /decodeLayer with inPlace is not differentiable: it reads a tensor that a gradient tape traces/,
      );
    });
    expect(liveTensorCount()).toBe(before);
  });
});
