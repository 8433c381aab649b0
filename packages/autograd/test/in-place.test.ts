/** Writes over existing storage (runOp's `into`, lightningStep's inPlace, copyInto) are refused by a recording tape. */
import { copyInto, lightningStep, liveTensorCount, mul, scope, sum, type Tensor, tensor } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { grad } from "../src/index.js";
import { rand } from "./helpers.js";

const [B, H, D, E] = [1, 2, 3, 5];

function stepInputs(seed: number) {
  return {
    q: rand(seed, [B, H, D]),
    k: rand(seed + 1, [B, H, D]),
    v: rand(seed + 2, [B, H, E]),
    slopes: tensor([0.5, 0.125], [H]),
  };
}

describe("in-place ops under a gradient tape", () => {
  it("refuses lightningStep with inPlace on a traced input, naming the op", () => {
    const before = liveTensorCount();
    scope(() => {
      const { k, v, slopes } = stepInputs(11);
      const state = rand(14, [B, H, D, E]);
      const f = (q: Tensor) => sum(lightningStep(q, k, v, slopes, state, { inPlace: true }).output);
      expect(() => grad(f)(rand(15, [B, H, D]))).toThrow(/lightningStep with inPlace is not differentiable: it reads a tensor that a gradient tape traces/);
    });
    expect(liveTensorCount()).toBe(before);
  });

  it("refuses writing over a tensor the tape saved for the backward pass", () => {
    scope(() => {
      const { q, k, v, slopes } = stepInputs(21);
      const state = rand(24, [B, H, D, E]);
      // mul saves `state` to form x's gradient; overwriting it would make that gradient wrong.
      const f = (x: Tensor) => {
        const y = sum(mul(x, state));
        lightningStep(q, k, v, slopes, state, { inPlace: true });
        return y;
      };
      expect(() => grad(f)(rand(25, [B, H, D, E]))).toThrow(/lightningStep with inPlace is not differentiable: it writes over a tensor that a gradient tape traces or saved/);
    });
  });

  it("lets the same step run out of place under the tape, and in place on values the tape does not hold", () => {
    scope(() => {
      const { q, k, v, slopes } = stepInputs(31);
      const state = rand(34, [B, H, D, E]);
      const other = rand(35, [B, H, D, E]);
      const f = (x: Tensor) => {
        const y = sum(mul(x, state));
        lightningStep(q, k, v, slopes, state);
        lightningStep(q, k, v, slopes, other, { inPlace: true });
        return y;
      };
      const g = grad(f)(rand(36, [B, H, D, E]));
      expect(Array.from(g!.dataSync())).toEqual(Array.from(state.dataSync()));
    });
  });

  it("refuses copyInto from a traced tensor or over one the tape saved, and allows it elsewhere", () => {
    scope(() => {
      const state = rand(41, [B, H, D, E]);
      const spare = rand(42, [B, H, D, E]);
      const from = (x: Tensor) => {
        copyInto(spare, x);
        return sum(x);
      };
      expect(() => grad(from)(rand(43, [B, H, D, E]))).toThrow(/copyInto is not differentiable: it reads a tensor that a gradient tape traces/);
      const over = (x: Tensor) => {
        const y = sum(mul(x, state));
        copyInto(state, spare);
        return y;
      };
      expect(() => grad(over)(rand(44, [B, H, D, E]))).toThrow(/copyInto is not differentiable: it writes over a tensor that a gradient tape traces or saved/);
      const elsewhere = (x: Tensor) => {
        const y = sum(mul(x, state));
        copyInto(spare, state);
        return y;
      };
      expect(Array.from(grad(elsewhere)(rand(45, [B, H, D, E]))!.dataSync())).toEqual(Array.from(state.dataSync()));
      // Outside a tape nothing is refused.
      copyInto(state, spare);
      expect(Array.from(state.dataSync())).toEqual(Array.from(spare.dataSync()));
    });
  });
});
