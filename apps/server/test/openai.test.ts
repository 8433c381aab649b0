/** The official `openai` client against the server: shapes, streaming, usage, stop strings, greedy = `tnl generate`. */
import { main as tnlMain } from "../../../packages/tnl/src/cli-main.js";
import { generateIds } from "@lightning-ts/tnl";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JSON_START, jsonFeed } from "../src/json-mode.js";
import { compileSchema, schemaFeed, schemaStart } from "../src/json-schema.js";
import { postJson, type Running, startServer } from "./helpers.js";

let s: Running;
let client: OpenAI;
const PROMPT = "Call me Ishmael. Some years ago";

beforeAll(async () => {
  s = await startServer();
  client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
afterAll(async () => {
  await s.shutdown();
});

async function tnlGenerate(ids: number[], maxTokens: number): Promise<number[]> {
  let out = "";
  const code = await tnlMain(["generate", "--model", s.tiny.dir, "--prompt-ids", JSON.stringify([ids]), "--max-tokens", String(maxTokens)], {
    stdout: (t) => (out += t),
    stderr: (t) => (out += t),
  });
  expect(code).toBe(0);
  return (JSON.parse(out) as { ids: number[][] }).ids[0];
}

describe("completions", () => {
  it("lists the model", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["tiny"]);
  });

  it("greedy output equals `tnl generate` on the same model and prompt", async () => {
    const ids = s.tokenizer.encode(PROMPT);
    const want = await tnlGenerate(ids, 24);
    const r = await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 24, temperature: 0 });
    expect(r.object).toBe("text_completion");
    expect(r.choices[0].text).toBe(s.tokenizer.decode(want, { skipSpecialTokens: true }));
    expect(r.usage).toMatchObject({ prompt_tokens: ids.length, completion_tokens: want.length, total_tokens: ids.length + want.length });
    expect(r.choices[0].finish_reason).toBe(want.length === 24 && !want.includes(2) ? "length" : "stop");
    // The package's generate, in-process, agrees too.
    const [direct] = await generateIds(s.model, ids, { maxTokens: 24 });
    expect(direct).toEqual(want);
  });

  it("streams the same text, and usage when asked", async () => {
    const plain = await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 20, temperature: 0, ignore_eos: true } as never);
    const stream = await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true }, ignore_eos: true } as never);
    let text = "";
    let chunks = 0;
    let usage: unknown;
    let finish: string | null = null;
    for await (const c of stream as unknown as AsyncIterable<OpenAI.Completion>) {
      chunks++;
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) {
        text += ch.text;
        finish = ch.finish_reason ?? finish;
      }
    }
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe((plain as OpenAI.Completion).choices[0].text);
    expect(finish).toBe("length");
    expect(usage).toMatchObject({ completion_tokens: 20, prompt_tokens: s.tokenizer.encode(PROMPT).length });
  });

  it("stops at a stop string, streamed or not, and never shows part of it", async () => {
    const full = (await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 40, temperature: 0, ignore_eos: true } as never)) as OpenAI.Completion;
    const text = full.choices[0].text;
    expect(text.length).toBeGreaterThan(12);
    const stop = text.slice(8, 11);
    const want = text.slice(0, text.indexOf(stop));
    const r = (await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 40, temperature: 0, stop: [stop, "\u0000never"], ignore_eos: true } as never)) as OpenAI.Completion;
    expect(r.choices[0].text).toBe(want);
    expect(r.choices[0].finish_reason).toBe("stop");
    expect(r.usage!.completion_tokens).toBeLessThan(40);
    const stream = await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 40, temperature: 0, stop, stream: true, ignore_eos: true } as never);
    let streamed = "";
    for await (const c of stream as unknown as AsyncIterable<OpenAI.Completion>) for (const ch of c.choices) streamed += ch.text;
    expect(streamed).toBe(want);
  });

  // Choice i samples from stream i of the seed, so the two choices differ; ignore_eos keeps both
  // 8 tokens long (an early end-of-sequence could otherwise make them equal).
  const sampled = () =>
    client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 8, temperature: 1, top_p: 0.9, seed: 7, n: 2, logprobs: 3, top_k: 50, ignore_eos: true } as never) as Promise<OpenAI.Completion>;

  it("samples reproducibly by seed, with n different choices and logprobs", async () => {
    const [a, b] = await Promise.all([sampled(), sampled()]);
    expect(a.choices.map((c) => c.text)).toEqual(b.choices.map((c) => c.text));
    expect(a.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(a.choices[0].text).not.toBe(a.choices[1].text);
    for (const choice of a.choices) {
      const lp = choice.logprobs!;
      expect([lp.tokens!.length, lp.token_logprobs!.length, lp.top_logprobs!.length]).toEqual([8, 8, 8]);
      expect(lp.tokens!.join("")).toBe(choice.text);
      lp.top_logprobs!.forEach((top, i) => {
        // An object keyed by text (or "bytes:…", see the test below): its order is not meaningful
        // (JavaScript puts integer-like keys first). The token-level checks are in the chat test.
        expect(Object.keys(top)).toHaveLength(3);
        checkTopLogprobs(Object.values(top).sort((x, y) => y - x), lp.token_logprobs![i], undefined);
      });
    }
  });

  // Byte tokens that are not UTF-8 on their own all decode to U+FFFD; the legacy format names them
  // "bytes:\\xNN" so that none of the requested alternatives collapses into another's key (the tiny
  // model samples such tokens with this seed).
  it("keeps all requested alternatives in completions top_logprobs, naming partial characters by their bytes", async () => {
    const r = await sampled();
    const tops = r.choices.flatMap((c) => c.logprobs!.top_logprobs!);
    expect(tops.map((top) => Object.keys(top).length)).toEqual(tops.map(() => 3));
    const keys = tops.flatMap((top) => Object.keys(top));
    expect(keys.some((k) => /^bytes:(\\x[0-9a-f]{2})+$/.test(k))).toBe(true);
    expect(keys.every((k) => !k.includes("\uFFFD"))).toBe(true);
  });

  it("reuses a cached prompt prefix and gives the same answer", async () => {
    const long = "It was the best of times, it was the worst of times. ".repeat(12);
    const n = s.tokenizer.encode(long).length;
    expect(n).toBeGreaterThan(128);
    const first = (await client.completions.create({ model: "tiny", prompt: long, max_tokens: 8, temperature: 0 })) as OpenAI.Completion;
    const second = (await client.completions.create({ model: "tiny", prompt: long, max_tokens: 8, temperature: 0 })) as OpenAI.Completion;
    expect(second.choices[0].text).toBe(first.choices[0].text);
    const cached = (second.usage as unknown as { prompt_tokens_details: { cached_tokens: number } }).prompt_tokens_details.cached_tokens;
    expect(cached).toBe(Math.floor((n - 1) / 64) * 64);
  });
});

describe("chat", () => {
  const messages = [{ role: "user" as const, content: "Who is the captain?" }];

  it("answers in the chat shape, streamed and not, through the default template", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 12, temperature: 0 });
    expect(r.object).toBe("chat.completion");
    expect(r.choices[0].message.role).toBe("assistant");
    const prompt = s.tokenizer.encode("User: Who is the captain?\nAssistant:");
    expect(r.usage!.prompt_tokens).toBe(prompt.length);
    const stream = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) {
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) text += ch.delta.content ?? "";
    }
    expect(text).toBe(r.choices[0].message.content);
    expect(usage?.completion_tokens).toBe(r.usage!.completion_tokens);
  });

  it("returns token logprobs in the chat format", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2, ignore_eos: true } as never);
    const content = (r as OpenAI.ChatCompletion).choices[0].logprobs!.content!;
    expect(content).toHaveLength(4);
    for (const c of content) {
      expect(c.top_logprobs).toHaveLength(2);
      // Greedy: the chosen token is the most likely one.
      expect(c.bytes).toEqual(c.top_logprobs[0].bytes);
      expect(c.logprob).toBeCloseTo(c.top_logprobs[0].logprob, 6);
    }
  });

  it("samples n different choices with exactly the requested top_logprobs", async () => {
    const ask = () =>
      client.chat.completions.create({ model: "tiny", messages, max_tokens: 8, temperature: 1, top_p: 0.9, top_k: 50, seed: 7, n: 2, logprobs: true, top_logprobs: 3, ignore_eos: true } as never) as Promise<OpenAI.ChatCompletion>;
    const [a, b] = await Promise.all([ask(), ask()]);
    const tokens = (r: OpenAI.ChatCompletion) => r.choices.map((c) => c.logprobs!.content!.map((t) => t.bytes));
    expect(tokens(a)).toEqual(tokens(b));
    expect(tokens(a)[0]).not.toEqual(tokens(a)[1]);
    for (const choice of a.choices) {
      const content = choice.logprobs!.content!;
      expect(content).toHaveLength(8);
      for (const t of content) {
        expect(t.top_logprobs).toHaveLength(3);
        expect(new Set(t.top_logprobs.map((x) => JSON.stringify(x.bytes))).size).toBe(3);
        const same = t.top_logprobs.find((x) => JSON.stringify(x.bytes) === JSON.stringify(t.bytes));
        checkTopLogprobs(t.top_logprobs.map((x) => x.logprob), t.logprob, same?.logprob);
      }
    }
  });
});

/**
 * One position's alternatives: most likely first, log-probabilities (≤ 0, their probabilities sum
 * to at most 1); the chosen token is no likelier than the best one and, where it is among them
 * (`chosenThere`), has the same logprob there.
 */
function checkTopLogprobs(top: number[], chosen: number, chosenThere: number | undefined): void {
  expect(top).toEqual([...top].sort((x, y) => y - x));
  expect(top.every((x) => x <= 0)).toBe(true);
  expect(top.reduce((s, x) => s + Math.exp(x), 0)).toBeLessThanOrEqual(1 + 1e-6);
  expect(chosen).toBeLessThan(0);
  expect(chosen).toBeLessThanOrEqual(top[0] + 1e-6);
  if (chosenThere !== undefined) expect(chosenThere).toBeCloseTo(chosen, 6);
}

describe("state handles", () => {
  it("continues a conversation from a handle exactly as if the whole text had been sent", async () => {
    const a = await postJson(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 6, temperature: 0, ignore_eos: true, return_state: true });
    expect(a.status).toBe(200);
    const handle = a.json.choices[0].state as string;
    expect(handle).toMatch(/^state_/);
    const b = await postJson(`${s.url}/v1/completions`, { prompt: " And then", max_tokens: 6, temperature: 0, ignore_eos: true, state: handle });
    expect(b.status).toBe(200);
    // Everything the server has seen, as one prompt: the first prompt, its answer, the new text.
    const aIds = s.tokenizer.encode(PROMPT);
    const [aOut] = await generateIds(s.model, aIds, { maxTokens: 6, stopIds: [] });
    const [bOut] = await generateIds(s.model, [...aIds, ...aOut, ...s.tokenizer.encode(" And then")], { maxTokens: 6, stopIds: [] });
    expect(a.json.choices[0].text).toBe(s.tokenizer.decode(aOut, { skipSpecialTokens: true }));
    expect(b.json.choices[0].text).toBe(s.tokenizer.decode(bOut, { skipSpecialTokens: true }));
    expect(b.json.usage.prompt_tokens).toBe(1 + s.tokenizer.encode(" And then").length); // the pending token + the new text
    // Handles are single-use.
    const again = await postJson(`${s.url}/v1/completions`, { prompt: "x", max_tokens: 2, state: handle });
    expect(again.status).toBe(400);
    expect(again.json.error.param).toBe("state");
  });
});

/** Regressions of issue 19, item 5: the OpenAI surface, through the official client. */
describe("OpenAI surface", () => {
  const sample = (extra: Record<string, unknown>) =>
    client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 8, temperature: 1, ignore_eos: true, ...extra } as never) as Promise<OpenAI.Completion>;

  it("retrieves the model by id, and answers an unknown model with 404 model_not_found", async () => {
    expect((await client.models.retrieve("tiny")).id).toBe("tiny");
    await expect(client.models.retrieve("gpt-4o")).rejects.toMatchObject({ status: 404, code: "model_not_found" });
    await expect(client.completions.create({ model: "gpt-4o", prompt: PROMPT, max_tokens: 2 })).rejects.toMatchObject({ status: 404, code: "model_not_found", param: "model" });
    await expect(client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] })).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it("samples with a random seed when none is given, and takes seeds up to 2^64 - 1", async () => {
    const [a, b] = await Promise.all([sample({}), sample({})]);
    expect(a.choices[0].text).not.toBe(b.choices[0].text);
    // A JavaScript number cannot hold 2^64 - 1 exactly: send the JSON text.
    const raw = async (seed: string) => {
      const res = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: `{"model": "tiny", "prompt": "Call me", "max_tokens": 8, "ignore_eos": true, "seed": ${seed}}` });
      return { status: res.status, json: (await res.json()) as { choices: { text: string }[]; error: { param: string } } };
    };
    const [max, again, below] = await Promise.all([raw("18446744073709551615"), raw("18446744073709551615"), raw("18446744073709551614")]);
    expect([max.status, again.status, below.status]).toEqual([200, 200, 200]);
    expect(again.json.choices[0].text).toBe(max.json.choices[0].text);
    expect(below.json.choices[0].text).not.toBe(max.json.choices[0].text);
    const over = await raw("18446744073709551616");
    expect([over.status, over.json.error.param]).toEqual([400, "seed"]);
  });

  it("applies logit_bias", async () => {
    const token = s.tokenizer.encode(" the")[0];
    const r = await sample({ temperature: 0, logit_bias: { [token]: 100 }, max_tokens: 5 });
    expect(r.choices[0].text).toBe(s.tokenizer.decode(Array(5).fill(token)));
    const banned = await sample({ temperature: 0, logit_bias: { [token]: -100 }, max_tokens: 20 });
    expect(s.tokenizer.encode(banned.choices[0].text)).not.toContain(token);
  });

  it("echoes the prompt, and answers several prompts with n choices each", async () => {
    const echo = await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 4, temperature: 0, echo: true });
    const plain = await client.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 4, temperature: 0 });
    expect(echo.choices[0].text).toBe(PROMPT + plain.choices[0].text);
    const other = await sample({ prompt: "The whale", seed: 3, n: 2 });
    const many = await sample({ prompt: [PROMPT, "The whale"], seed: 3, n: 2 });
    expect(many.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(many.choices.slice(2).map((c) => c.text)).toEqual(other.choices.map((c) => c.text));
    expect(many.usage!.prompt_tokens).toBe(s.tokenizer.encode(PROMPT).length + s.tokenizer.encode("The whale").length);
  });

  it("sends usage: null in every stream chunk but the last when usage is asked for", async () => {
    const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, stream: true, stream_options: { include_usage: true } });
    const usages: unknown[] = [];
    for await (const c of stream) usages.push(c.usage);
    expect(usages.length).toBeGreaterThan(2);
    expect(usages.slice(0, -1).every((u) => u === null)).toBe(true);
    expect(usages.at(-1)).toMatchObject({ completion_tokens: 4 });
  });

  it.each([
    [{ tools: [{ type: "function", function: { name: "f", parameters: {} } }] }, "tools"],
    [{ response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { a: { type: "string", pattern: "^a" } } } } } }, "response_format"],
    [{ frobnicate: true }, "frobnicate"],
    [{ functions: [{ name: "f" }] }, "functions"],
  ])("refuses the unsupported chat parameter %j by name", async (extra, param) => {
    const ask = client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2, ...extra } as never);
    await expect(ask).rejects.toMatchObject({ status: 400, param });
  });

  it("refuses best_of other than n, and suffix", async () => {
    await expect(sample({ best_of: 3 })).rejects.toMatchObject({ status: 400, param: "best_of" });
    await expect(sample({ suffix: "end" })).rejects.toMatchObject({ status: 400, param: "suffix" });
    expect((await sample({ best_of: 2, n: 2 })).choices).toHaveLength(2);
  });

  it("stops at stop_token_ids", async () => {
    const token = s.tokenizer.encode(" the")[0];
    const r = await sample({ temperature: 0, max_tokens: 12, logit_bias: { [token]: 100 }, stop_token_ids: [7, token] });
    expect(r.choices[0].finish_reason).toBe("stop");
    expect(r.usage!.completion_tokens).toBe(1);
    await expect(sample({ stop_token_ids: [1e6] })).rejects.toMatchObject({ status: 400, param: "stop_token_ids" });
  });

  // The tiny model has random weights: left alone it writes JSON that does not end within a few
  // tokens (strings of random text). So: every answer is a prefix of a JSON object, and with the
  // closing brace made likely the object closes and the choice stops there.
  it("answers in JSON with response_format json_object, streamed or not", async () => {
    const ask = (extra: Record<string, unknown>) =>
      client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "A captain, as JSON" }], max_tokens: 30, temperature: 0.7, response_format: { type: "json_object" }, ...extra } as never) as Promise<OpenAI.ChatCompletion>;
    for (const r of await Promise.all([1, 2, 3, 4].map((seed) => ask({ seed })))) {
      expect(jsonFeed(JSON_START, r.choices[0].message.content!)).not.toBeNull();
    }
    const close = s.tokenizer.encode("}")[0];
    const quote = s.tokenizer.encode('"')[0];
    const closed = await ask({ seed: 1, max_tokens: 200, logit_bias: { [close]: 8, [quote]: 4 } });
    expect(closed.choices[0].finish_reason).toBe("stop");
    expect(JSON.parse(closed.choices[0].message.content!)).toBeTypeOf("object");
    const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "A captain, as JSON" }], max_tokens: 30, seed: 1, temperature: 0.7, response_format: { type: "json_object" }, stream: true });
    let text = "";
    for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
    expect(text).toBe((await ask({ seed: 1 })).choices[0].message.content);
  });

  // As with json_object: with a few structural tokens made likely, the document closes within
  // max_tokens; every answer, closed or cut short, is a prefix the matcher accepts.
  it("answers with a document of the schema with response_format json_schema, streamed or not", async () => {
    const schema = {
      type: "object",
      properties: {
        captain: { type: "string" },
        age: { type: "integer" },
        mate: { enum: ["Starbuck", "Stubb", null] },
        ship: { $ref: "#/$defs/ship" },
        alive: { anyOf: [{ type: "boolean" }, { type: "null" }] },
        crew: { type: "array", items: { type: "string" }, maxItems: 2 },
      },
      required: ["captain", "age", "mate", "ship", "alive", "crew"],
      additionalProperties: false,
      $defs: { ship: { type: "object", properties: { name: { type: "string" }, tons: { type: "number" } }, required: ["name"], additionalProperties: false } },
    };
    const bias = Object.fromEntries(Object.entries({ '"': 8, "}": 4, "]": 4 }).map(([t, b]) => [s.tokenizer.encode(t)[0], b]));
    const ask = (extra: Record<string, unknown>) =>
      client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "A captain, as JSON" }], max_tokens: 200, temperature: 0.7, logit_bias: bias, response_format: { type: "json_schema", json_schema: { name: "captain", schema, strict: true } }, ...extra } as never) as Promise<OpenAI.ChatCompletion>;
    const answers = await Promise.all([1, 2, 3].map((seed) => ask({ seed })));
    for (const r of answers) {
      const text = r.choices[0].message.content!;
      expect(r.choices[0].finish_reason, JSON.stringify(text)).toBe("stop");
      expect(validate(JSON.parse(text), schema, schema), text).toEqual([]);
    }
    const short = await ask({ seed: 1, max_tokens: 5, logit_bias: {} });
    expect(short.choices[0].finish_reason).toBe("length");
    expect(schemaFeed(schemaStart(compileSchema(schema)), short.choices[0].message.content!)).not.toBeNull();
    const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "A captain, as JSON" }], max_tokens: 200, seed: 1, temperature: 0.7, logit_bias: bias, response_format: { type: "json_schema", json_schema: { name: "captain", schema, strict: true } }, stream: true });
    let text = "";
    for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
    expect(text).toBe(answers[0].choices[0].message.content);
  });

  it("refuses a json_schema with a keyword it does not support, naming the keyword", async () => {
    const ask = (schema: unknown) => client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2, response_format: { type: "json_schema", json_schema: { name: "x", schema } } } as never);
    await expect(ask({ type: "object", properties: { n: { type: "integer", minimum: 0 } } })).rejects.toMatchObject({ status: 400, param: "response_format", message: expect.stringContaining("'minimum'") as unknown });
    await expect(ask({ type: "object", properties: { s: { type: "string", format: "email" } } })).rejects.toMatchObject({ status: 400, message: expect.stringContaining("'format'") as unknown });
    await expect(ask({ not: { type: "string" } })).rejects.toMatchObject({ status: 400, message: expect.stringContaining("'not'") as unknown });
  });

  it("tokenizes and detokenizes", async () => {
    const t = await postJson(`${s.url}/tokenize`, { model: "tiny", prompt: PROMPT });
    const body = t.json as unknown as { tokens: number[]; count: number };
    expect(body.tokens).toEqual([s.model.config.bosTokenId, ...s.tokenizer.encode(PROMPT)].slice(s.model.config.addBosToken ? 0 : 1));
    expect(body.count).toBe(body.tokens.length);
    const d = await postJson(`${s.url}/detokenize`, { tokens: body.tokens });
    expect((d.json as unknown as { prompt: string }).prompt).toBe(PROMPT);
    const chat = await postJson(`${s.url}/tokenize`, { messages: [{ role: "user", content: "Hi" }], add_special_tokens: false });
    expect((chat.json as unknown as { tokens: number[] }).tokens).toEqual(s.tokenizer.encode("User: Hi\nAssistant:"));
  });
});

describe("API key and CORS", () => {
  let locked: Running;
  beforeAll(async () => {
    locked = await startServer({ apiKey: "sk-test", cors: "*" });
  });
  afterAll(() => locked.shutdown());

  it("wants the bearer key on the API, and answers cross-origin requests", async () => {
    const wrong = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
    expect((await right.models.list()).data[0].id).toBe("tiny");
    expect((await fetch(`${locked.url}/health`)).status).toBe(200);
    const preflight = await fetch(`${locked.url}/v1/chat/completions`, { method: "OPTIONS", headers: { origin: "http://example.com", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("*");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("authorization");
    const streamed = await fetch(`${locked.url}/v1/completions`, { method: "POST", headers: { origin: "http://example.com", authorization: "Bearer sk-test", "content-type": "application/json" }, body: JSON.stringify({ prompt: "x", max_tokens: 2, stream: true }) });
    expect(streamed.headers.get("access-control-allow-origin")).toBe("*");
    expect(await streamed.text()).toContain("[DONE]");
  });
});

// Regression (issue 19, item 6): the handle path left out the template's text after the assistant's reply.
describe("a chat continued through a state handle", () => {
  it("feeds the same tokens as the whole conversation, and answers the same", async () => {
    const first = [{ role: "user" as const, content: "Who is the captain?" }];
    const next = { role: "user" as const, content: "And the whale?" };
    const a = (await client.chat.completions.create({ model: "tiny", messages: first, max_tokens: 6, temperature: 0, ignore_eos: true, return_state: true } as never)) as OpenAI.ChatCompletion;
    const reply = a.choices[0].message.content!;
    const handle = (a.choices[0] as unknown as { state: string }).state;
    const b = (await client.chat.completions.create({ model: "tiny", messages: [next], max_tokens: 6, temperature: 0, ignore_eos: true, state: handle } as never)) as OpenAI.ChatCompletion;
    const whole = await client.chat.completions.create({ model: "tiny", messages: [...first, { role: "assistant", content: reply }, next], max_tokens: 6, temperature: 0, ignore_eos: true } as never) as OpenAI.ChatCompletion;
    // The tokens each path feeds: the state saw the first prompt and the reply's tokens but the last.
    const firstIds = s.tokenizer.encode("User: Who is the captain?\nAssistant:");
    const replyIds = s.tokenizer.encode(reply);
    const wholeIds = s.tokenizer.encode(`User: Who is the captain?\nAssistant:${reply}\nUser: And the whale?\nAssistant:`);
    expect(whole.usage!.prompt_tokens).toBe(wholeIds.length);
    expect(firstIds.length + replyIds.length + b.usage!.prompt_tokens - 1).toBe(wholeIds.length);
    expect(b.choices[0].message.content).toBe(whole.choices[0].message.content);
  });
});

type Schema = Record<string, unknown>;
/** A validator for the schema subset the server supports; returns what is wrong (nothing: valid). */
function validate(v: unknown, schema: Schema, root: Schema, at = "#"): string[] {
  if (typeof schema.$ref === "string") return validate(v, (root.$defs as Record<string, Schema>)[schema.$ref.split("/").at(-1)!], root, at);
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as Schema[]).some((o) => validate(v, o, root, at).length === 0) ? [] : [`${at}: no anyOf option matches`];
  if (Array.isArray(schema.enum)) return schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(v)) ? [] : [`${at}: not in enum`];
  switch (schema.type) {
    case "object": {
      if (typeof v !== "object" || v === null || Array.isArray(v)) return [`${at}: not an object`];
      const props = schema.properties as Record<string, Schema>;
      const errors = ((schema.required ?? []) as string[]).filter((k) => !(k in v)).map((k) => `${at}: ${k} missing`);
      for (const [k, x] of Object.entries(v)) errors.push(...(props[k] ? validate(x, props[k], root, `${at}/${k}`) : [`${at}: ${k} not allowed`]));
      return errors;
    }
    case "array":
      if (!Array.isArray(v)) return [`${at}: not an array`];
      if (v.length > ((schema.maxItems as number | undefined) ?? Infinity)) return [`${at}: too many items`];
      return v.flatMap((x, i) => validate(x, schema.items as Schema, root, `${at}/${i}`));
    case "integer":
      return Number.isInteger(v) ? [] : [`${at}: not an integer`];
    case "null":
      return v === null ? [] : [`${at}: not null`];
    default:
      return typeof v === schema.type ? [] : [`${at}: not a ${String(schema.type)}`];
  }
}
