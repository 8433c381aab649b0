/** Bad input, overload, timeouts, disconnects and graceful shutdown: each answered cleanly, the server unharmed. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postJson, type Running, startServer, waitFor } from "./helpers.js";

// Longer than the tests' time limit however fast the machine generates (a request that is not
// aborted or timed out would take tens of seconds).
const LONG = { prompt: "Call me", max_tokens: 100_000, temperature: 0, ignore_eos: true };

async function healthy(s: Running): Promise<void> {
  const r = await postJson(`${s.url}/v1/completions`, { prompt: "Call me", max_tokens: 3, temperature: 0 });
  expect(r.status).toBe(200);
}

async function metric(s: Running, name: string): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{"));
  return line ? Number(line.split(" ").pop()) : NaN;
}

describe("bad requests", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startServer({ limits: { maxTokens: 256, maxPromptTokens: 200 }, bodyLimit: 16 * 1024 });
  });
  afterAll(() => s.shutdown());

  it("answers malformed JSON with 400 and keeps serving", async () => {
    const r = await postJson(`${s.url}/v1/completions`, '{"prompt": "Call me", "max_tokens": ');
    expect(r.status).toBe(400);
    expect(r.json.error.type).toBe("invalid_request_error");
    expect(typeof r.json.error.message).toBe("string");
    await healthy(s);
  });

  it.each([
    [{ prompt: "x", max_tokens: 100_000 }, "max_tokens"],
    [{ prompt: "x", max_tokens: 0 }, "max_tokens"],
    [{ prompt: "x", max_tokens: 2.5 }, "max_tokens"],
    [{ prompt: "x", temperature: -1 }, "temperature"],
    [{ prompt: "x", top_p: 0 }, "top_p"],
    [{ prompt: "x", n: 99 }, "n"],
    [{ prompt: "x", stop: ["a", "b", "c", "d", "e"] }, "stop"],
    [{ prompt: "x", stream: "yes" }, "stream"],
    [{ prompt: "x", logprobs: 9 }, "logprobs"],
    [{ prompt: 42 }, "prompt"],
    [{ max_tokens: 4 }, "prompt"],
    [{ prompt: [1, 2, 1_000_000] }, "prompt"],
    [{ prompt: "the sea ".repeat(300) }, "prompt"],
    [{ prompt: "x", state: "state_nope" }, "state"],
  ])("refuses %j naming %s", async (body, param) => {
    const r = await postJson(`${s.url}/v1/completions`, body);
    expect(r.status).toBe(400);
    expect(r.json.error.param).toBe(param);
  });

  it.each([
    [{ messages: [] }, "messages"],
    [{ messages: [{ content: "hi" }] }, "messages[0]"],
    [{ messages: [{ role: "user", content: 5 }] }, "messages[0].content"],
    [{ messages: [{ role: "user", content: "hi" }], max_completion_tokens: 10_000 }, "max_completion_tokens"],
  ])("refuses chat %j naming %s", async (body, param) => {
    const r = await postJson(`${s.url}/v1/chat/completions`, body);
    expect(r.status).toBe(400);
    expect(r.json.error.param).toBe(param);
  });

  it("answers a body over the limit with 413", async () => {
    const r = await postJson(`${s.url}/v1/completions`, { prompt: "x".repeat(20_000), max_tokens: 1 });
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe("request_too_large");
    await healthy(s);
  });

  // Regression (issue 19, item 4): formatting the error of 100,000 nested arrays overflowed the stack (500).
  it("refuses deeply nested arrays in a numeric field with 400, and never echoes a huge value whole", async () => {
    const big = await startServer();
    try {
      const depth = 100_000;
      const nested = `{"prompt": "x", "max_tokens": ${"[".repeat(depth)}${"]".repeat(depth)}}`;
      const r = await postJson(`${big.url}/v1/completions`, nested);
      expect(r.status).toBe(400);
      expect(r.json.error.param).toBe("max_tokens");
      expect(r.json.error.message.length).toBeLessThan(200);
      const huge = await postJson(`${big.url}/v1/completions`, { prompt: "x", state: "s".repeat(900_000) });
      expect(huge.status).toBe(400);
      expect(huge.json.error.param).toBe("state");
      expect(huge.json.error.message.length).toBeLessThan(300);
      expect(huge.json.error.message).toContain("… (900002 characters)");
      const str = await postJson(`${big.url}/v1/completions`, { prompt: "x", temperature: "t".repeat(500_000) });
      expect([str.status, str.json.error.param]).toEqual([400, "temperature"]);
      expect(str.json.error.message.length).toBeLessThan(300);
      await healthy(big);
    } finally {
      await big.shutdown();
    }
  });

  it("answers unknown routes and non-object bodies in the OpenAI format", async () => {
    const r = await postJson(`${s.url}/v1/nothing`, {});
    expect(r.status).toBe(404);
    expect(r.json.error.code).toBe("not_found");
    const arr = await postJson(`${s.url}/v1/completions`, [1, 2]);
    expect(arr.status).toBe(400);
  });
});

describe("overload, timeouts and disconnects", () => {
  let s: Running;
  beforeAll(async () => {
    s = await startServer({ engine: { maxBatch: 1, maxQueue: 1 }, requestTimeoutMs: 1500, limits: { maxTokens: LONG.max_tokens } });
  });
  afterAll(() => s.shutdown());

  it("refuses with 429 when the queue is full, and serves again once it drains", async () => {
    const controllers = [new AbortController(), new AbortController()];
    const running = controllers.map((c) => fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(LONG), signal: c.signal }).catch(() => null));
    await waitFor(() => s.engine.activeCount === 1 && s.engine.queueDepth === 1);
    const r = await postJson(`${s.url}/v1/completions`, { prompt: "x", max_tokens: 2 });
    expect(r.status).toBe(429);
    expect(r.json.error.type).toBe("rate_limit_error");
    for (const c of controllers) c.abort();
    await Promise.all(running);
    await waitFor(() => s.engine.activeCount === 0 && s.engine.queueDepth === 0);
    await healthy(s);
  });

  // Regression (issue 19, item 2): the handle left the store before the queue refused the request.
  it("keeps the state handle of a request refused with 429, so a retry can use it", async () => {
    const first = await postJson(`${s.url}/v1/completions`, { prompt: "Call me", max_tokens: 3, temperature: 0, return_state: true });
    const handle = first.json.choices[0].state!;
    const controllers = [new AbortController(), new AbortController()];
    const running = controllers.map((c) => fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(LONG), signal: c.signal }).catch(() => null));
    await waitFor(() => s.engine.activeCount === 1 && s.engine.queueDepth === 1);
    const refused = await postJson(`${s.url}/v1/completions`, { prompt: " Ishmael", max_tokens: 2, state: handle });
    expect(refused.status).toBe(429);
    for (const c of controllers) c.abort();
    await Promise.all(running);
    await waitFor(() => s.engine.activeCount === 0 && s.engine.queueDepth === 0);
    const retried = await postJson(`${s.url}/v1/completions`, { prompt: " Ishmael", max_tokens: 2, state: handle });
    expect(retried.status).toBe(200);
  });

  // Regression (issue 19, item 3): streams were counted by fastify's hook and again where they end.
  it("counts a stream once, and a timed-out stream once as 504", async () => {
    const count = (status: number) => metric(s, `lightning_requests_total{endpoint="/v1/completions",status="${status}"}`).then((x) => (Number.isNaN(x) ? 0 : x));
    const [ok0, late0] = [await count(200), await count(504)];
    const res = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "Call me", max_tokens: 3, stream: true }) });
    expect(await res.text()).toContain("[DONE]");
    const slow = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...LONG, stream: true }) });
    expect(await slow.text()).toContain("request_timeout");
    await waitFor(async () => (await count(504)) === late0 + 1);
    expect(await count(200)).toBe(ok0 + 1);
    expect(await count(504)).toBe(late0 + 1);
  });

  it("ends a request that runs past the time limit with 504", async () => {
    const r = await postJson(`${s.url}/v1/completions`, LONG);
    expect(r.status).toBe(504);
    expect(r.json.error.code).toBe("request_timeout");
    await waitFor(() => s.engine.activeCount === 0);
  });

  it("takes a sequence out of the batch when its client disconnects mid-stream", async () => {
    const before = await metric(s, "lightning_cancelled_sequences_total");
    const controller = new AbortController();
    const res = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...LONG, stream: true }), signal: controller.signal });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain("data: ");
    expect(s.engine.activeCount).toBe(1);
    controller.abort();
    await waitFor(() => s.engine.activeCount === 0, 2000);
    expect(await metric(s, "lightning_cancelled_sequences_total")).toBe(before + 1);
    expect(await metric(s, 'lightning_state_bytes{holder="active"}')).toBe(0);
    await healthy(s);
  });
});

describe("graceful shutdown", () => {
  it("finishes running requests and answers new ones with 503", async () => {
    const s = await startServer();
    const running = postJson(`${s.url}/v1/completions`, { ...LONG, max_tokens: 300 });
    await waitFor(() => s.engine.activeCount === 1);
    const closing = s.shutdown();
    const late = await postJson(`${s.url}/v1/completions`, { prompt: "x", max_tokens: 2 });
    expect(late.status).toBe(503);
    expect(late.json.error.code).toBe("shutting_down");
    const done = await running;
    expect(done.status).toBe(200);
    expect(done.json.usage.completion_tokens).toBe(300);
    await closing;
  });
});

// Regression (issue 19, item 7): a long prompt held the event loop for whole 512-token prefill calls.
// Judged by tokens, not time: /health must be answered within two prefill chunks of asking.
describe("a long prompt", () => {
  it("leaves /health answered while its prefill runs", async () => {
    const s = await startServer();
    try {
      const chunk = s.engine.options.prefillChunk;
      expect(chunk).toBeLessThanOrEqual(128);
      const V = s.model.config.vocabSize;
      const prompt = Array.from({ length: 40 * chunk }, (_, i) => 3 + ((i * 7919) % (V - 3)));
      let finished = false;
      const running = postJson(`${s.url}/v1/completions`, { prompt, max_tokens: 1 }).then((r) => ((finished = true), r));
      await waitFor(() => s.engine.prefillTokens > 0);
      const before = s.engine.prefillTokens;
      const health = await fetch(`${s.url}/health`);
      const ran = s.engine.prefillTokens - before;
      expect(health.status).toBe(200);
      expect(finished).toBe(false);
      expect(ran).toBeLessThanOrEqual(2 * chunk);
      expect((await running).status).toBe(200);
    } finally {
      await s.shutdown();
    }
  });
});
