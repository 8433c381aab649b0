import { describe, expect, it } from "vitest";
import {
  categorical,
  chain,
  frequencyPenalty,
  greedy,
  minP,
  presencePenalty,
  repetitionPenalty,
  type SampleContext,
  samplerFromOptions,
  seededRandom,
  softmaxOf,
  temperature,
  topK,
  topP,
} from "../src/index.js";

const ctx = (over: Partial<SampleContext> = {}): SampleContext => ({ prompt: [], generated: [], random: seededRandom(1), ...over });
const L = (...xs: number[]) => Float32Array.from(xs);
const kept = (l: Float32Array) => [...l.keys()].filter((i) => l[i] > -Infinity);

/** Empirical token frequencies of `n` draws from one random stream. */
function histogram(pick: (c: SampleContext) => number, n: number, V: number, seed = 1): number[] {
  const c = ctx({ random: seededRandom(seed) });
  const counts = new Array<number>(V).fill(0);
  for (let i = 0; i < n; i++) counts[pick(c)]++;
  return counts.map((k) => k / n);
}

describe("samplers", () => {
  it("greedy takes the highest logit, the first on ties", () => {
    expect(greedy()(L(0.1, 3, -2, 3), ctx())).toBe(1);
  });

  it("categorical follows softmax frequencies and is reproducible per seed", () => {
    const logits = L(Math.log(0.5), Math.log(0.3), Math.log(0.2));
    const freq = histogram((c) => categorical()(logits, c), 20000, 3, 11);
    expect(freq).toEqual([expect.closeTo(0.5, 1), expect.closeTo(0.3, 1), expect.closeTo(0.2, 1)]);
    const draw = (seed: number) => {
      const c = ctx({ random: seededRandom(seed) });
      return Array.from({ length: 20 }, () => categorical()(logits, c));
    };
    expect(draw(5)).toEqual(draw(5));
    expect(draw(5)).not.toEqual(draw(6));
    // Row streams of one seed differ, so batch rows do not sample in lockstep.
    expect(seededRandom(5, 0)()).not.toBe(seededRandom(5, 1)());
  });

  it("temperature rescales logits; low temperature concentrates the draw", () => {
    expect([...temperature(0.5)(L(1, -2), ctx())]).toEqual([2, -4]);
    const logits = L(1, 0.5, 0);
    const hot = histogram((c) => chain(temperature(5), categorical())(logits, c), 4000, 3);
    const cold = histogram((c) => chain(temperature(0.05), categorical())(logits, c), 4000, 3);
    expect(cold[0]).toBeGreaterThan(0.99);
    expect(hot[2]).toBeGreaterThan(0.25);
    expect(() => temperature(0)).toThrow(/temperature/);
  });

  it("top-k keeps exactly the k best", () => {
    expect(kept(topK(2)(L(0.3, 2, -1, 1.5, 0), ctx()))).toEqual([1, 3]);
    expect(kept(topK(9)(L(1, 2), ctx()))).toEqual([0, 1]);
  });

  it("top-p keeps the smallest prefix reaching p, at least one token", () => {
    const logits = L(Math.log(0.1), Math.log(0.5), Math.log(0.25), Math.log(0.15));
    expect(kept(topP(0.7)(logits, ctx()))).toEqual([1, 2]); // 0.5 + 0.25 ≥ 0.7
    expect(kept(topP(0.76)(logits, ctx()))).toEqual([1, 2, 3]);
    expect(kept(topP(0.01)(logits, ctx()))).toEqual([1]);
  });

  it("min-p drops tokens below p × the top probability", () => {
    const logits = L(Math.log(0.6), Math.log(0.3), Math.log(0.1));
    expect(kept(minP(0.2)(logits, ctx()))).toEqual([0, 1]); // threshold 0.12
    expect(kept(minP(0.6)(logits, ctx()))).toEqual([0]);
  });

  it("repetition penalty divides positive and multiplies negative logits of seen tokens (prompt included)", () => {
    const out = repetitionPenalty(2)(L(4, -4, 4, 1), ctx({ prompt: [0], generated: [1, 1] }));
    expect([...out]).toEqual([2, -8, 4, 1]);
  });

  it("frequency and presence penalties count generated tokens only", () => {
    const c = ctx({ prompt: [3], generated: [0, 0, 0, 1] });
    expect([...frequencyPenalty(0.5)(L(0, 0, 0, 0), c)]).toEqual([-1.5, -0.5, 0, 0]);
    expect([...presencePenalty(0.5)(L(0, 0, 0, 0), c)]).toEqual([-0.5, -0.5, 0, 0]);
  });

  it("penalties change the greedy choice", () => {
    const logits = L(2, 1.9);
    const c = ctx({ generated: [0] });
    expect(greedy()(logits, c)).toBe(0);
    expect(chain(presencePenalty(0.2), greedy())(logits, c)).toBe(1);
    expect(samplerFromOptions({ repetitionPenalty: 1.1 })(logits, c)).toBe(1);
  });

  it("chain never modifies the caller's logits", () => {
    const logits = L(1, 2, 3);
    chain(repetitionPenalty(3), frequencyPenalty(1), topK(1), greedy())(logits, ctx({ generated: [2] }));
    expect([...logits]).toEqual([1, 2, 3]);
  });

  it("samplerFromOptions: greedy at temperature 0, random otherwise, filters applied", () => {
    const logits = L(0, 5, 4.9, -3);
    expect(samplerFromOptions({})(logits, ctx())).toBe(1);
    const freq = histogram((c) => samplerFromOptions({ temperature: 1, topK: 2 })(logits, c), 2000, 4);
    expect(freq[0] + freq[3]).toBe(0);
    expect(freq[2]).toBeGreaterThan(0.3);
    expect(() => samplerFromOptions({ temperature: -1 })).toThrow();
  });

  it("softmaxOf treats −∞ as probability 0 and refuses all −∞", () => {
    expect([...softmaxOf(L(0, -Infinity))]).toEqual([1, 0]);
    expect(() => softmaxOf(L(-Infinity))).toThrow(/every token was removed/);
  });
});
