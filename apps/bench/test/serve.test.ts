/**
 * The serve suite's streamed load and soak on the CPU, against the built server (apps/server/dist,
 * or LIGHTNING_BENCH_SERVER_MAIN): a tiny model whose every token is one printable ASCII character,
 * so each generated token is exactly one SSE chunk and the chunks can be checked against max_tokens.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Tensor } from "@lightning-ts/tensor";
import { initParams, makeConfig, saveCheckpoint } from "@lightning-ts/tnl";
import { loadTiktoken, saveTokenizerJson } from "@lightning-ts/tokenizer";
import { beforeAll, describe, expect, it } from "vitest";
import { classifyEvent, SseSplitter } from "../src/serve/load-worker.js";
import { percentile } from "../src/serve/load.js";
import { fastRandomParams, gpt2TokenizerJson } from "../src/serve/models.js";
import { disconnectPlan, serveSuite, type ServeOptions } from "../src/suites/serve.js";
import { type BenchResult, timedSpan } from "../src/suite.js";

const context = { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 1 }, log: () => {} };

/** What commander would fill in, for options the tests leave alone. */
const DEFAULTS: ServeOptions = {
  levelSeconds: 1.5,
  clientThreads: 2,
  requestsPerConnection: 4,
  levelTimeout: 60,
  load: true,
  memory: false,
  lengths: [64],
  turnTokens: 64,
  disconnects: 0,
  soakConcurrency: 2,
  soakWarmup: 1,
  serverMain: process.env.LIGHTNING_BENCH_SERVER_MAIN,
};

/** A seeded xorshift in [0, 1). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>> 0) / 2 ** 32);
}

let model: string;

beforeAll(async () => {
  model = mkdtempSync(join(tmpdir(), "bench-serve-"));
  // 95 tokens, the printable ASCII characters, no merges and no special tokens: every id decodes to one character.
  const ranks = Array.from({ length: 95 }, (_, i) => `${Buffer.from([32 + i]).toString("base64")} ${i}`).join("\n");
  const tokenizer = loadTiktoken(ranks, { pattern: "r50k_base" });
  const config = makeConfig({ vocabSize: tokenizer.vocabSize, dModel: 24, numLayers: 2, numHeads: 2, gluDim: 40 });
  await saveCheckpoint(model, { config, params: initParams(config, { seed: 7 }) });
  writeFileSync(join(model, "tokenizer.json"), saveTokenizerJson(tokenizer));
});

/** The docs/PERFORMANCE.md "How to report" fields and the streamed ones. */
function expectStreamFields(r: BenchResult, maxTokens: number): void {
  for (const key of ["suite", "impl", "backend", "device", "B", "T", "H", "D", "E", "dtype", "fwd_ms", "fwdbwd_ms", "tokens_per_s", "gbps", "pct_copy", "rel_err", "ok"]) expect(r).toHaveProperty(key);
  expect([r.suite, r.backend, r.dtype]).toEqual(["serve", "cpu", "f32"]);
  expect(typeof r.device).toBe("string");
  expect(r.errors).toBe(0);
  expect(r.requests).toBeGreaterThanOrEqual(r.concurrency as number);
  // Every request yielded exactly max_tokens tokens, each one its own chunk.
  expect(r.max_tokens).toBe(maxTokens);
  expect(r.tokens).toBe((r.requests as number) * maxTokens);
  expect(r.chunks).toBe(r.tokens);
  expect(r.tokens_exact).toBe(true);
  expect(r.tokens_per_s).toBeCloseTo((r.tokens as number) / (r.seconds as number), 6);
  const [t50, t99, i50, i99] = [r.ttft_p50_ms, r.ttft_p99_ms, r.itl_p50_ms, r.itl_p99_ms] as number[];
  expect(t50).toBeGreaterThan(0);
  expect(t99).toBeGreaterThanOrEqual(t50);
  // Two chunks read in one socket read share a time (a busy CI machine), so only the tail must be above zero.
  expect(i50).toBeGreaterThanOrEqual(0);
  expect(i99).toBeGreaterThanOrEqual(i50);
  expect(i99).toBeGreaterThan(0);
  expect(r.stream_tokens_per_s).toBeGreaterThan(0);
  expect(r.client_cpu_pct).toBeGreaterThan(0);
  expect(r.client_threads).toBe(Math.min(2, r.concurrency as number));
}

describe("serve suite: the SSE reader", () => {
  const chunk = (text: string, finish: string | null) => `data: ${JSON.stringify({ id: "cmpl-1", object: "text_completion", created: 1, model: "m", choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] })}`;

  it("tells token chunks from empty ones, the last choice chunk, usage, errors and [DONE]", () => {
    expect(classifyEvent(chunk("a", null))).toEqual({ kind: "token" });
    expect(classifyEvent(chunk('"quoted"', null))).toEqual({ kind: "token" });
    expect(classifyEvent(chunk("", null))).toEqual({ kind: "other" });
    expect(classifyEvent(chunk("tail", "length"))).toEqual({ kind: "other" });
    expect(classifyEvent(`data: ${JSON.stringify({ id: "x", choices: [], usage: { prompt_tokens: 9, completion_tokens: 37, total_tokens: 46 } })}`)).toEqual({ kind: "usage", completionTokens: 37 });
    expect(classifyEvent('data: {"error":{"message":"boom"}}')).toMatchObject({ kind: "error" });
    expect(classifyEvent("data: [DONE]")).toEqual({ kind: "done" });
    expect(classifyEvent(": keep-alive")).toEqual({ kind: "other" });
  });

  it("splits a stream cut at random places into the same events", () => {
    const random = rng(11);
    const events = Array.from({ length: 37 }, (_, i) => chunk(String.fromCharCode(33 + Math.floor(random() * 90)).repeat(1 + (i % 3)), null));
    const stream = events.map((e) => `${e}\n\n`).join("");
    const splitter = new SseSplitter();
    const got: string[] = [];
    for (let at = 0; at < stream.length; ) {
      const n = 1 + Math.floor(random() * 97);
      got.push(...splitter.push(stream.slice(at, at + n)));
      at += n;
    }
    expect(got).toEqual(events);
  });

  it("percentiles by nearest rank; disconnects spread over the time with a few chunks each", () => {
    const random = rng(5);
    const values = Array.from({ length: 201 }, () => random() * 100);
    const sorted = [...values].sort((a, b) => a - b);
    expect(percentile(values, 50)).toBe(sorted[100]);
    expect(percentile(values, 99)).toBe(sorted[Math.ceil(0.99 * 201) - 1]);
    expect(percentile([], 50)).toBeNull();
    const plan = disconnectPlan(13, 7, 29);
    expect(plan).toHaveLength(13);
    for (let i = 0; i < plan.length; i++) {
      expect(plan[i].atMs).toBeGreaterThan(i === 0 ? 0 : plan[i - 1].atMs);
      expect(plan[i].atMs).toBeLessThan(7000);
      expect(plan[i].afterChunks).toBeGreaterThanOrEqual(1);
      expect(plan[i].afterChunks).toBeLessThanOrEqual(7);
    }
  });
});

describe("serve suite on the CPU", () => {
  it("streamed load: one row per concurrency with the latency fields, every request exactly max_tokens", async () => {
    const began = Date.now();
    const results = await serveSuite.run(context, { ...DEFAULTS, model, stream: true, concurrency: [1, 2], maxTokens: 11 });
    expect(results.map((r) => [r.impl, r.concurrency, r.ok])).toEqual([
      ["http stream", 1, true],
      ["http stream", 2, true],
    ]);
    for (const r of results) {
      expectStreamFields(r, 11);
      // The span --gpu-clocks reads the clocks over: the level's timed part, about levelSeconds long.
      const [from, to] = timedSpan(r)!;
      expect(from).toBeGreaterThanOrEqual(began);
      expect((to - from) / 1000).toBeGreaterThanOrEqual(DEFAULTS.levelSeconds * 0.9);
      // The server's own time to first token starts when the request arrives, after the client sent
      // it, and ends when the token is generated, before the client reads it: above zero, and at
      // most the clients' slowest.
      expect(r.server_ttft_mean_ms).toBeGreaterThan(0);
      expect(r.server_ttft_mean_ms).toBeLessThanOrEqual(r.ttft_p99_ms as number);
      // Of it: time queued before admission (within it), and decode steps to the first token (none
      // or more: on the CPU a prompt is read by a prefill call, whose logits give the first token).
      expect(r.server_queue_mean_ms).toBeGreaterThanOrEqual(0);
      expect(r.server_queue_mean_ms).toBeLessThanOrEqual(r.server_ttft_mean_ms as number);
      expect(r.server_steps_to_first_token).toBeGreaterThanOrEqual(0);
    }
  });

  it("soak: steady streams with clients aborting mid-stream; memory read after warm-up and at the end", async () => {
    const results = await serveSuite.run(context, { ...DEFAULTS, model, load: false, soak: 0.1, disconnects: 5, maxTokens: 13 });
    expect(results.map((r) => r.impl)).toEqual(["soak"]);
    const [r] = results;
    expectStreamFields(r, 13);
    expect([r.minutes, r.disconnects, r.disconnects_aborted, r.warmup_errors, r.drained, r.active_end]).toEqual([0.1, 5, 5, 0, true, 0]);
    for (const key of ["rss_warm_mib", "rss_end_mib", "rss_max_mib", "gpu_warm_mib", "gpu_end_mib", "gpu_max_mib"]) expect(r[key]).toBeGreaterThan(0);
    expect(r.rss_max_mib).toBeGreaterThanOrEqual(r.rss_warm_mib as number);
    expect(r.rss_ratio).toBeCloseTo((r.rss_end_mib as number) / (r.rss_warm_mib as number), 9);
    expect(r.gpu_ratio).toBeCloseTo((r.gpu_end_mib as number) / (r.gpu_warm_mib as number), 9);
    // ok is the 5% rule on both (a few seconds on a small CPU model need not meet it; the rule must hold either way).
    expect(r.ok).toBe(Math.abs((r.rss_ratio as number) - 1) <= 0.05 && Math.abs((r.gpu_ratio as number) - 1) <= 0.05);
  });

  it("refuses a bad --backend, --shape or --max-tokens by name", async () => {
    await expect(serveSuite.run(context, { ...DEFAULTS, backend: "tpu" })).rejects.toThrow(/--backend must be one of cpu, webgpu, cuda, got "tpu"/);
    await expect(serveSuite.run(context, { ...DEFAULTS, shape: "7b" })).rejects.toThrow(/--shape must be one of small, 436m, got "7b"/);
    await expect(serveSuite.run(context, { ...DEFAULTS, model, shape: "436m" })).rejects.toThrow(/--model or --shape, not both/);
    await expect(serveSuite.run(context, { ...DEFAULTS, model, maxTokens: 0 })).rejects.toThrow(/--max-tokens must be a positive integer, got 0/);
  });
});

describe("serve suite: the 436M bench model's parts", () => {
  it("fastRandomParams: every parameter of the config in bf16, seeded, std 0.02, padding row zero, LRPE θ as initParams", async () => {
    const { checkParams, lrpeTheta } = await import("@lightning-ts/tnl");
    const config = makeConfig({ vocabSize: 97, dModel: 24, numLayers: 3, numHeads: 2, gluDim: 40, tieWordEmbeddings: false });
    const a = fastRandomParams(config, 3);
    const b = fastRandomParams(config, 3);
    const c = fastRandomParams(config, 4);
    checkParams(config, a);
    expect(a.embed.dtype).toBe("bf16");
    const values = (t: Tensor) => Array.from(t.dataSync() as ArrayLike<number>);
    expect(values(a.lmHead!)).toEqual(values(b.lmHead!));
    expect(values(a.lmHead!)).not.toEqual(values(c.lmHead!));
    const embed = values(a.embed);
    const row = (v: number) => embed.slice(v * config.dModel, (v + 1) * config.dModel);
    expect(row(config.padTokenId).every((x) => x === 0)).toBe(true);
    expect(row(config.padTokenId + 1).every((x) => x !== 0)).toBe(true);
    const all = [...values(a.layers[1].l1), ...values(a.layers[2].qkvu)];
    const mean = all.reduce((s, x) => s + x, 0) / all.length;
    const std = Math.sqrt(all.reduce((s, x) => s + (x - mean) ** 2, 0) / all.length);
    expect(Math.abs(mean)).toBeLessThan(0.002);
    expect(Math.abs(std - 0.02)).toBeLessThan(0.001);
    expect(Math.max(...all.map(Math.abs))).toBeLessThanOrEqual(0.02 * Math.sqrt(3) * 1.01);
    expect(values(a.layers[0].theta!)).toEqual(values(lrpeTheta(config, "bf16")));
  });

  it("gpt2TokenizerJson: GPT-2's ids, padded with unused specials to the model's vocabulary", async () => {
    const { loadTokenizerJson } = await import("@lightning-ts/tokenizer");
    const tokenizer = loadTokenizerJson(gpt2TokenizerJson(50272));
    expect(tokenizer.vocabSize).toBe(50272);
    expect(tokenizer.encode("hello world")).toEqual([31373, 995]);
    expect(tokenizer.decode([50256, 50271], { skipSpecialTokens: true })).toBe("");
    expect(tokenizer.isSpecial(50265)).toBe(true);
  });
});
