/**
 * The engine's batched decoding: sequences that share decode steps — greedy ones (the device's
 * argmax), greedy ones with log probabilities and sampled ones (their logits rows gathered and
 * read), joining and leaving at different steps — generate what each generates alone, and a kept
 * state continues exactly like the whole sequence sent again.
 */
import { cast } from "@lightning-ts/tensor";
import { categorical, chain, disposeParams, greedy, loadCheckpoint, mapParams, type Sampler, temperature, type TnlModel } from "@lightning-ts/tnl";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine, type SequenceRequest, type TokenInfo } from "../src/engine.js";
import { writeTinyModel } from "./tiny-model.js";

let model: TnlModel;
beforeAll(async () => {
  model = await loadCheckpoint((await writeTinyModel({ layers: 3 })).dir);
});
afterAll(() => disposeParams(model.params));

interface Case {
  prompt: number[];
  maxTokens: number;
  sampler: () => Sampler;
  logprobs?: number;
  seed: number;
}

const cases: Case[] = [
  { prompt: [5, 17, 40, 41, 3], maxTokens: 9, sampler: greedy, seed: 1 },
  { prompt: [9], maxTokens: 4, sampler: greedy, logprobs: 2, seed: 2 },
  { prompt: [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42], maxTokens: 12, sampler: () => chain(temperature(0.9), categorical()), seed: 3 },
  { prompt: [7, 8], maxTokens: 6, sampler: () => chain(temperature(1.3), categorical()), logprobs: 1, seed: 4 },
  { prompt: [100, 12, 6], maxTokens: 11, sampler: greedy, seed: 5 },
];

function request(c: Case, infos: TokenInfo[]): SequenceRequest {
  return { prompt: c.prompt, maxTokens: c.maxTokens, sampler: c.sampler(), seed: c.seed, stopIds: new Set(), logprobs: c.logprobs, onToken: (t) => void infos.push(t) };
}

describe("Engine with a batch decoder", () => {
  it("launches greedy rows' next step before reading their tokens, and they generate what they generate alone", async () => {
    // Greedy rows of different lengths, one ending at an end-of-sequence id, joining while others
    // run: every step after the first of a row is launched from the device's argmax.
    const greedyCases = [
      { prompt: [5, 17, 40, 41, 3], maxTokens: 14 },
      { prompt: [9], maxTokens: 3 },
      { prompt: [30, 31, 32, 33, 34, 35, 36, 37, 38], maxTokens: 9 },
      { prompt: [100, 12, 6], maxTokens: 11 },
      { prompt: [61, 62], maxTokens: 6 },
    ];
    const stopIds = new Set([7]);
    const req = (c: (typeof greedyCases)[number], out: number[]): SequenceRequest => ({
      prompt: c.prompt,
      maxTokens: c.maxTokens,
      sampler: greedy(),
      seed: 0,
      stopIds,
      onToken: (t) => void out.push(t.token),
    });
    const alone = new Engine(model, { maxBatch: 1, decodePrefill: 0 });
    const single: number[][] = [];
    for (const c of greedyCases) {
      const out: number[] = [];
      await alone.submit(req(c, out));
      single.push(out);
    }
    await alone.close();
    const shared = new Engine(model, { maxBatch: 3, prefillChunk: 64, decodePrefill: 4 });
    const together = greedyCases.map(() => [] as number[]);
    // The first sequence runs alone for a few steps, then the others arrive: the batch grows past
    // the rows of the step the next one is chained from.
    let rest: Promise<unknown> = Promise.resolve();
    const first = req(greedyCases[0], together[0]);
    first.onToken = (t) => {
      together[0].push(t.token);
      if (together[0].length === 3) rest = Promise.all(greedyCases.slice(1).map((c, i) => shared.submit(req(c, together[i + 1]))));
    };
    await shared.submit(first);
    await rest;
    expect(shared.chainedSteps).toBeGreaterThan(shared.steps / 2);
    await shared.close();
    greedyCases.forEach((_, i) => expect(together[i], `case ${i}`).toEqual(single[i]));
  });

  it("generates in a shared batch what each sequence generates alone", async () => {
    const alone = new Engine(model, { maxBatch: 1 });
    const single: TokenInfo[][] = [];
    for (const c of cases) {
      const infos: TokenInfo[] = [];
      await alone.submit(request(c, infos));
      single.push(infos);
    }
    await alone.close();
    const shared = new Engine(model, { maxBatch: 3, prefillChunk: 64 });
    const together = cases.map(() => [] as TokenInfo[]);
    await Promise.all(cases.map((c, i) => shared.submit(request(c, together[i]))));
    expect(shared.steps).toBeGreaterThan(0);
    await shared.close();
    cases.forEach((c, i) => {
      expect(together[i].map((t) => t.token), `case ${i}`).toEqual(single[i].map((t) => t.token));
      expect(together[i]).toHaveLength(c.maxTokens);
      if (c.logprobs !== undefined) {
        together[i].forEach((t, k) => {
          expect(t.top).toHaveLength(c.logprobs!);
          expect(t.logprob!).toBeCloseTo(single[i][k].logprob!, 5);
        });
      }
    });
  });

  it("reads short prompts through the decode steps as a prefill call reads them", async () => {
    // float64, so reading a prompt one token at a time (the recurrence) and in one call (chunked) agree to ~1e-15.
    const wide: TnlModel = { ...model, params: mapParams(model.params, (t) => cast(t, "f64")) };
    const run = async (decodePrefill: number) => {
      const engine = new Engine(wide, { maxBatch: 3, decodePrefill });
      const out = cases.map(() => [] as TokenInfo[]);
      await Promise.all(cases.map((c, i) => engine.submit(request(c, out[i]))));
      const counts = { prefill: engine.prefillTokens, steps: engine.steps, admitted: engine.admitted, firsts: engine.firstTokens, toFirst: engine.stepsToFirstToken, queued: engine.queueSeconds };
      await engine.close();
      return { out, counts };
    };
    const called = await run(0);
    const stepped = await run(16);
    expect(stepped.out.map((o) => o.map((t) => t.token))).toEqual(called.out.map((o) => o.map((t) => t.token)));
    stepped.out.forEach((o, i) => o.forEach((t, k) => t.logprob !== undefined && expect(t.logprob).toBeCloseTo(called.out[i][k].logprob!, 10)));
    // Every prompt token was read either way; reading them in steps takes more steps.
    expect(stepped.counts.prefill).toBe(called.counts.prefill);
    expect(stepped.counts.steps).toBeGreaterThan(called.counts.steps);
    // The metrics' totals: every sequence admitted once and given a first token; read in steps, a
    // prompt of P tokens takes at least P steps from admission to its first token.
    for (const r of [called, stepped]) {
      expect([r.counts.admitted, r.counts.firsts]).toEqual([cases.length, cases.length]);
      expect(r.counts.queued).toBeGreaterThanOrEqual(0);
    }
    expect(stepped.counts.toFirst).toBeGreaterThanOrEqual(cases.reduce((n, c) => n + c.prompt.length, 0));
    expect(called.counts.toFirst).toBeLessThan(stepped.counts.toFirst);
    disposeParams(wide.params);
  });

  it("reads short prompts several tokens a step (decodePrefillRows) as a prefill call reads them, in fewer steps", async () => {
    const wide: TnlModel = { ...model, params: mapParams(model.params, (t) => cast(t, "f64")) };
    const run = async (decodePrefill: number, decodePrefillRows: number, decodePrefillBatch?: number) => {
      const engine = new Engine(wide, { maxBatch: 3, decodePrefill, decodePrefillRows, decodePrefillBatch });
      expect(engine.decodePrefillRows).toBe(decodePrefillRows);
      const out = cases.map(() => [] as TokenInfo[]);
      await Promise.all(cases.map((c, i) => engine.submit(request(c, out[i]))));
      const counts = { prefill: engine.prefillTokens, steps: engine.steps, toFirst: engine.stepsToFirstToken };
      await engine.close();
      return { out, counts };
    };
    const called = await run(0, 0);
    const oneAStep = await run(16, 0);
    // A budget smaller than the prompts together: rows share it in order, over several steps.
    const several = await run(16, 3);
    const tokens = (r: typeof called) => r.out.map((o) => o.map((t) => t.token));
    expect(tokens(several)).toEqual(tokens(called));
    several.out.forEach((o, i) => o.forEach((t, k) => t.logprob !== undefined && expect(t.logprob).toBeCloseTo(called.out[i][k].logprob!, 10)));
    expect(several.counts.prefill).toBe(called.counts.prefill);
    expect(several.counts.steps).toBeLessThan(oneAStep.counts.steps);
    expect(several.counts.toFirst).toBeLessThan(oneAStep.counts.toFirst);
    // Above decodePrefillBatch rows a step reads one prompt token a row, as without extra rows.
    const capped = await run(16, 3, 1);
    expect(tokens(capped)).toEqual(tokens(called));
    expect(capped.counts.steps).toBeGreaterThan(several.counts.steps);
    expect(() => new Engine(wide, { decodePrefillRows: -2 })).toThrow(/decodePrefillRows must be a non-negative integer/);
    expect(() => new Engine(wide, { decodePrefillBatch: 1.5 })).toThrow(/decodePrefillBatch must be a non-negative integer/);
    disposeParams(wide.params);
  });

  it("hands back a state that continues like the whole sequence", async () => {
    const engine = new Engine(model, { maxBatch: 2 });
    const whole: TokenInfo[] = [];
    await engine.submit({ ...request(cases[0], whole), maxTokens: 8 });
    const first: TokenInfo[] = [];
    const r = await engine.submit({ ...request(cases[0], first), maxTokens: 4, keepState: true });
    expect(r.pending).toEqual([first[3].token]);
    const rest: TokenInfo[] = [];
    await engine.submit({ ...request(cases[0], rest), prompt: r.pending!, state: r.state, maxTokens: 4 });
    expect([...first, ...rest].map((t) => t.token)).toEqual(whole.map((t) => t.token));
    await engine.close();
  });
});
