/**
 * POST /v1/completions and /v1/chat/completions: a checked request becomes one engine sequence
 * per choice; tokens come back as one JSON body or as server-sent events ending in `[DONE]`.
 *
 * `response_format: { type: "json_object" }` constrains every choice to one JSON object (json-mode.ts),
 * `{ type: "json_schema" }` to one document of the schema (json-schema.ts).
 *
 * Extensions beyond the OpenAI API: `top_k`, `min_p`, `repetition_penalty`, `ignore_eos`,
 * `stop_token_ids` (token ids that end a choice, as in vLLM; they end it even with `ignore_eos`), and
 * `return_state` / `state`. With `return_state: true` every choice carries `state`, an opaque
 * handle to the recurrent state after the whole exchange; sending it as `state` in a later request
 * continues from there, so that request holds only the new text. A handle is single-use (it is
 * consumed when continued from) and is dropped when the handle store runs out of memory.
 */
import { cloneState, disposeState, type Sampler, samplerFromOptions, type TnlModel, type TnlState } from "@lightning-ts/tnl";
import type { Tokenizer } from "@lightning-ts/tokenizer";
import type { ServerResponse } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";
import { type ChatFormat, renderChat, renderChatContinuation } from "./chat.js";
import { type Engine, QueueFullError, type SequenceResult, ShuttingDownError, type TokenInfo } from "./engine.js";
import { JsonConstraint } from "./json-mode.js";
import { SchemaConstraint } from "./json-schema.js";
import type { ServerMetrics } from "./metrics.js";
import { ApiError, type GenerationParams, type Limits, parseMessages, parseRequest, show } from "./request.js";
import { newHandle, type StateLru } from "./state-cache.js";
import { TextStream } from "./text.js";

export interface Served {
  model: TnlModel;
  tokenizer: Tokenizer;
  modelName: string;
  chat: ChatFormat;
  engine: Engine;
  /** States behind handles, with the tokens still to feed before the next prompt. */
  handles: StateLru<number[]>;
  metrics: ServerMetrics;
  limits: Limits;
  requestTimeoutMs: number;
}

type Kind = "completion" | "chat";

interface Choice {
  index: number;
  /** Which prompt it answers. */
  prompt: number;
  out: TextStream;
  logprobs: TokenInfo[];
  result?: SequenceResult;
  handle?: string;
}

export const modelNotFound = (model: unknown): ApiError =>
  new ApiError(404, `the model ${show(model)} does not exist on this server (see GET /v1/models)`, "model", "invalid_request_error", "model_not_found");

interface Prompts {
  /** Token ids of each prompt. */
  prompts: number[][];
  /** A copy of the state to continue from, owned by the caller; the handle stays in the store until the request is accepted. */
  state?: TnlState;
}

/** The prompts as token ids, and the state they continue from. */
function buildPrompts(s: Served, p: GenerationParams, kind: Kind): Prompts {
  const { config } = s.model;
  const field = kind === "chat" ? "messages" : "prompt";
  const texts: (string | number[])[] =
    kind === "chat" ? [p.state === undefined ? renderChat(s.chat, p.messages!) : renderChatContinuation(s.chat, p.messages!)] : p.prompts!;
  const ids = texts.map((t) => {
    if (typeof t === "string") return s.tokenizer.encode(t);
    const bad = t.find((id) => id >= config.vocabSize);
    if (bad !== undefined) throw new ApiError(400, `'prompt' holds token id ${bad}, outside the vocabulary [0, ${config.vocabSize})`, "prompt");
    return t;
  });
  for (const x of ids) {
    if (x.length + 1 > s.limits.maxPromptTokens) {
      throw new ApiError(400, `'${field}' is ${x.length} tokens, more than this server's limit of ${s.limits.maxPromptTokens}`, field, "invalid_request_error", "context_length_exceeded");
    }
  }
  if (p.state === undefined) return { prompts: ids.map((x) => (config.addBosToken || x.length === 0 ? [config.bosTokenId, ...x] : x)) };
  const hit = s.handles.has(p.state) ? s.handles.get(p.state) : undefined;
  if (!hit) throw new ApiError(400, `'state' ${show(p.state)} is not a live state handle (unknown, already used, or evicted)`, "state");
  const tokens = [...hit.value, ...ids[0]];
  if (tokens.length === 0) {
    disposeState(hit.state);
    throw new ApiError(400, `'${field}' is empty and the state has nothing pending to continue from`, field);
  }
  return { prompts: [tokens], state: hit.state };
}

const tokenText = (s: Served, id: number) => s.tokenizer.decode([id]);

/**
 * A token's name as a key of the legacy `top_logprobs` objects: its text, or, when its bytes are not
 * UTF-8 on their own (a piece of a multi-byte character), "bytes:\xNN…" as OpenAI writes them — so
 * two such tokens, which both decode to U+FFFD, never collapse into one key.
 */
function tokenKey(s: Served, id: number): string {
  const bytes = s.tokenizer.tokenBytes(id);
  const text = s.tokenizer.decode([id]);
  if (Buffer.from(text, "utf8").equals(Buffer.from(bytes))) return text;
  return `bytes:${[...bytes].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("")}`;
}

function completionLogprobs(s: Served, infos: TokenInfo[]) {
  let offset = 0;
  const text_offset: number[] = [];
  const tokens = infos.map((i) => {
    const t = tokenText(s, i.token);
    text_offset.push(offset);
    offset += t.length;
    return t;
  });
  return {
    tokens,
    token_logprobs: infos.map((i) => i.logprob!),
    top_logprobs: infos.map((i) => Object.fromEntries(i.top!.map(([id, lp]) => [tokenKey(s, id), lp]))),
    text_offset,
  };
}

function chatLogprobs(s: Served, infos: TokenInfo[]) {
  const entry = (id: number, logprob: number) => {
    const token = tokenText(s, id);
    return { token, logprob, bytes: [...s.tokenizer.tokenBytes(id)] };
  };
  return { content: infos.map((i) => ({ ...entry(i.token, i.logprob!), top_logprobs: i.top!.map(([id, lp]) => entry(id, lp)) })) };
}

function usage(tokens: number, choices: Choice[], cached: number) {
  const completion = choices.reduce((sum, c) => sum + (c.result?.generated.length ?? 0), 0);
  return { prompt_tokens: tokens, completion_tokens: completion, total_tokens: tokens + completion, prompt_tokens_details: { cached_tokens: cached } };
}

/**
 * Serves one generation request; resolves once the response is complete.
 *
 * @example
 * app.post("/v1/completions", (req, reply) => handleGeneration(served, "completion", req, reply));
 */
export async function handleGeneration(s: Served, kind: Kind, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const started = performance.now();
  const p = parseRequest(request.body, kind, s.limits);
  if (p.model !== undefined && p.model !== s.modelName) throw modelNotFound(p.model);
  const V = s.model.config.vocabSize;
  for (const id of p.logitBias.keys()) if (id >= V) throw new ApiError(400, `'logit_bias' names token id ${id}, outside the vocabulary [0, ${V})`, "logit_bias");
  const { prompts, state } = buildPrompts(s, p, kind);
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${newHandle().slice(6)}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? (p.stream ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  const stops = [...p.stop, ...(kind === "chat" ? s.chat.stops : [])];
  for (const t of p.stopTokenIds) if (t >= V) throw new ApiError(400, `'stop_token_ids' holds token id ${t}, outside the vocabulary [0, ${V})`, "stop_token_ids");
  const stopIds = new Set([...(p.ignoreEos ? [] : [s.model.config.eosTokenId]), ...p.stopTokenIds]);
  // echo: the prompt as the client sent it (token ids as their text), before each choice's text.
  const echoed = p.echo ? p.prompts!.map((x) => (typeof x === "string" ? x : s.tokenizer.decode(x, { skipSpecialTokens: true }))) : undefined;

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new ApiError(504, `generation ran past this server's limit of ${s.requestTimeoutMs} ms`, null, "timeout", "request_timeout")), s.requestTimeoutMs);
  // The response's socket closing before we finished means the client went away: stop its sequences.
  reply.raw.on("close", () => {
    if (!reply.raw.writableFinished) controller.abort(new Error("client disconnected"));
  });

  let firstToken = true;
  // Events are written together once per event-loop turn: the engine launches its next decode step
  // before it yields to I/O, so formatting and writing them overlaps the device's work.
  let queued = "";
  // The first write goes through ServerResponse (the head goes out with it); later ones straight to the socket.
  let headOut = false;
  const flush = () => {
    if (queued === "") return;
    if (headOut) writeChunk(reply.raw, queued);
    else reply.raw.write(queued);
    headOut = true;
    queued = "";
  };
  const sendJson = (json: string) => {
    if (queued === "") flushLater(flush);
    queued += `data: ${json}\n\n`;
  };
  const send = (data: unknown) => sendJson(JSON.stringify(data));
  // With include_usage, every chunk carries `usage: null` and one last chunk the totals, as OpenAI does.
  const chunkObject = (choices: unknown[], usageValue: unknown = null) => ({ id, object, created, model: s.modelName, choices, ...(p.includeUsage ? { usage: usageValue } : {}) });
  const sendChunk = (choices: unknown[], usageValue: unknown = null) => send(chunkObject(choices, usageValue));
  const choiceObject = (c: Choice, text: string, lp: unknown, finish: string | null) =>
    kind === "chat" ? { index: c.index, delta: finish && !text ? {} : { content: text }, logprobs: lp, finish_reason: finish } : { index: c.index, text, logprobs: lp, finish_reason: finish };
  const chunk = (c: Choice, text: string, infos: TokenInfo[], finish: string | null, extra: Record<string, unknown> = {}) => {
    const lp = p.logprobs === undefined || infos.length === 0 ? null : kind === "chat" ? chatLogprobs(s, infos) : completionLogprobs(s, infos);
    sendChunk([{ ...choiceObject(c, text, lp, finish), ...extra }]);
  };
  // A token's chunk without log probabilities, the one sent per token and stream: the same JSON as
  // `chunk` writes, from the text around the choice's text, built once per choice.
  const tokenChunk = (c: Choice) => {
    const json = textTemplate((text) => chunkObject([choiceObject(c, text, null, null)]));
    return (text: string) => sendJson(json(text));
  };

  const choices: Choice[] = prompts.flatMap((_, prompt) =>
    Array.from({ length: p.n }, (_, j) => ({ index: prompt * p.n + j, prompt, out: new TextStream(s.tokenizer, stops), logprobs: [] })),
  );
  const sampler = withLogitBias(
    samplerFromOptions({
      temperature: p.temperature,
      topK: p.topK,
      topP: p.topP,
      minP: p.minP,
      repetitionPenalty: p.repetitionPenalty,
      frequencyPenalty: p.frequencyPenalty,
      presencePenalty: p.presencePenalty,
    }),
    p.logitBias,
  );
  const runs: Promise<SequenceResult>[] = [];
  try {
    for (const c of choices) {
      const eos = s.model.config.eosTokenId;
      const json = p.jsonSchema ? new SchemaConstraint(p.jsonSchema, s.tokenizer, eos) : p.json ? new JsonConstraint(s.tokenizer, eos) : undefined;
      const sendText = p.stream && p.logprobs === undefined ? tokenChunk(c) : undefined;
      const onToken = (info: TokenInfo): boolean => {
        if (firstToken) {
          firstToken = false;
          s.metrics.timeToFirstToken.observe((performance.now() - started) / 1000);
        }
        const { text, stopped } = c.out.push(info.token);
        if (sendText) {
          if (text) sendText(text);
        } else {
          if (p.logprobs !== undefined) c.logprobs.push(info);
          if (p.stream) chunk(c, text, [info], null);
        }
        const complete = json?.push(info.token) ?? false; // the JSON object is closed: nothing may follow
        return stopped || complete;
      };
      runs.push(
        s.engine.submit({
          prompt: prompts[c.prompt],
          state: state && cloneState(state),
          maxTokens: p.maxTokens,
          sampler: json ? json.wrap(sampler) : sampler,
          seed: p.seed,
          // Choice j of every prompt samples from stream j, so one prompt of several gets what it gets alone.
          stream: c.index - c.prompt * p.n,
          stopIds,
          logprobs: p.logprobs,
          keepState: p.returnState,
          signal: controller.signal,
          onToken,
        }),
      );
    }
  } catch (err) {
    // Refused (queue full, shutting down): the request never ran, so its state handle stays usable
    // (a client retrying a 429 must find it); the choices already queued are cancelled.
    controller.abort(err);
    clearTimeout(timer);
    if (err instanceof QueueFullError) throw new ApiError(429, err.message, null, "rate_limit_error", "queue_full");
    if (err instanceof ShuttingDownError) throw new ApiError(503, err.message, null, "server_error", "shutting_down");
    throw err;
  } finally {
    if (state) disposeState(state);
  }
  if (p.state !== undefined) s.handles.delete(p.state); // accepted: the handle is used up

  if (p.stream) {
    s.metrics.countedElsewhere.add(request);
    reply.hijack();
    // Headers set before the hijack (CORS) still go out.
    reply.raw.writeHead(200, { ...(reply.getHeaders() as Record<string, string>), "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive" });
    for (const c of choices) {
      if (kind === "chat") sendChunk([{ index: c.index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]);
      else if (echoed) sendChunk([{ index: c.index, text: echoed[c.prompt], logprobs: null, finish_reason: null }]);
    }
  }

  const settled = await Promise.allSettled(runs);
  clearTimeout(timer);
  const failure = settled.find((r) => r.status === "rejected");
  settled.forEach((r, i) => r.status === "fulfilled" && (choices[i].result = r.value));
  for (const c of choices) {
    const r = c.result;
    if (r?.state) {
      c.handle = newHandle();
      // A chat reply that ended at end-of-sequence: that token is no part of the conversation's text, so it is not fed.
      const endedByEos = kind === "chat" && r.finishReason === "stop" && stopIds.has(r.generated[r.generated.length - 1]);
      s.handles.put(c.handle, r.state, endedByEos ? [] : (r.pending ?? []));
    }
  }
  s.metrics.requestSeconds.observe({ endpoint: kind }, (performance.now() - started) / 1000);
  const promptTokens = prompts.reduce((sum, x) => sum + x.length, 0);
  const cached = prompts.reduce((sum, _, i) => sum + (choices[i * p.n]?.result?.cachedTokens ?? 0), 0);
  const reason: unknown = controller.signal.reason;
  const error = failure ? new ApiError(500, `generation failed: ${(failure.reason as Error).message}`, null, "server_error") : reason instanceof ApiError ? reason : undefined;

  if (p.stream) {
    s.metrics.requests.inc({ endpoint: request.routeOptions.url ?? kind, status: error ? error.status : controller.signal.aborted ? 499 : 200 });
    if (!reply.raw.writable) return; // the client left
    if (error) send(error.body());
    else {
      for (const c of choices) {
        const tail = c.out.end();
        chunk(c, tail, [], c.result!.finishReason, c.handle ? { state: c.handle } : {});
      }
      if (p.includeUsage) sendChunk([], usage(promptTokens, choices, cached));
    }
    // The last events and the end of the body in one write.
    const rest = queued;
    queued = "";
    reply.raw.end(`${rest}data: [DONE]\n\n`);
    return;
  }

  if (error) throw error;
  if (controller.signal.aborted) {
    reply.hijack(); // the client left; nobody to answer
    return;
  }
  const body = choices.map((c) => {
    const text = (echoed?.[c.prompt] ?? "") + c.out.text + c.out.end();
    const lp = p.logprobs === undefined ? null : kind === "chat" ? chatLogprobs(s, c.logprobs) : completionLogprobs(s, c.logprobs);
    const main = kind === "chat" ? { index: c.index, message: { role: "assistant", content: text }, logprobs: lp } : { index: c.index, text, logprobs: lp };
    return { ...main, finish_reason: c.result!.finishReason, ...(c.handle ? { state: c.handle } : {}) };
  });
  await reply.send({ id, object, created, model: s.modelName, choices: body, usage: usage(promptTokens, choices, cached) });
}

/** `logit_bias`: added to the logits before the sampler sees them (the engine hands it a copy). */
function withLogitBias(sampler: Sampler, bias: ReadonlyMap<number, number>): Sampler {
  if (bias.size === 0) return sampler;
  return (logits, context) => {
    for (const [id, b] of bias) logits[id] += b;
    return sampler(logits, context);
  };
}

type Body = Record<string, unknown>;

/**
 * POST /tokenize: `{ prompt }` or `{ messages }` (rendered through the chat template), optional
 * `add_special_tokens` (default true: the BOS the model would be fed) → `{ tokens, count, max_model_len }`.
 */
export function tokenizeRoute(s: Served, raw: unknown): { tokens: number[]; count: number; max_model_len: number } {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ApiError(400, "the request body must be a JSON object", null);
  const body = raw as Body;
  if (body.model !== undefined && body.model !== s.modelName) throw modelNotFound(body.model);
  for (const key of Object.keys(body)) {
    if (!["model", "prompt", "messages", "add_special_tokens"].includes(key)) throw new ApiError(400, `'${key}' is not supported by /tokenize`, key, "invalid_request_error", "unsupported_parameter");
  }
  const special = body.add_special_tokens ?? true;
  if (typeof special !== "boolean") throw new ApiError(400, `'add_special_tokens' must be true or false, got ${show(special)}`, "add_special_tokens");
  let text: string;
  if (typeof body.prompt === "string" && body.messages === undefined) text = body.prompt;
  else if (body.prompt === undefined && body.messages !== undefined) text = renderChat(s.chat, parseMessages(body.messages));
  else throw new ApiError(400, "send either 'prompt' (a string) or 'messages'", body.prompt === undefined ? "prompt" : "messages");
  const { config } = s.model;
  const ids = s.tokenizer.encode(text);
  const tokens = special && (config.addBosToken || ids.length === 0) ? [config.bosTokenId, ...ids] : ids;
  return { tokens, count: tokens.length, max_model_len: s.limits.maxPromptTokens };
}

/** POST /detokenize: `{ tokens }` → `{ prompt }` (special tokens left out, as in completions). */
export function detokenizeRoute(s: Served, raw: unknown): { prompt: string } {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ApiError(400, "the request body must be a JSON object", null);
  const body = raw as Body;
  if (body.model !== undefined && body.model !== s.modelName) throw modelNotFound(body.model);
  for (const key of Object.keys(body)) {
    if (!["model", "tokens"].includes(key)) throw new ApiError(400, `'${key}' is not supported by /detokenize`, key, "invalid_request_error", "unsupported_parameter");
  }
  const V = s.model.config.vocabSize;
  const { tokens } = body;
  if (!Array.isArray(tokens) || !tokens.every((t) => Number.isSafeInteger(t) && (t as number) >= 0 && (t as number) < V)) {
    throw new ApiError(400, `'tokens' must be a list of token ids in [0, ${V}), got ${show(tokens)}`, "tokens");
  }
  return { prompt: s.tokenizer.decode(tokens as number[], { skipSpecialTokens: true }) };
}

/** Streams with events queued this turn: flushed together by one setImmediate, not one per stream. */
const toFlush: (() => void)[] = [];

function flushLater(flush: () => void): void {
  if (toFlush.length === 0) setImmediate(flushAll);
  toFlush.push(flush);
}

function flushAll(): void {
  for (const flush of toFlush.splice(0)) flush();
}

/**
 * `render(text)`'s JSON for any string `text`, from the JSON around the text rendered once: the text
 * is the only part that changes from one token's chunk to the next, so a chunk costs one
 * JSON.stringify of a string instead of one of a whole object. `render` must place `text` once.
 *
 * @example
 * const json = textTemplate((text) => ({ choices: [{ index: 0, text }] }));
 * json("hi"); // '{"choices":[{"index":0,"text":"hi"}]}', as JSON.stringify writes it
 */
export function textTemplate(render: (text: string) => unknown): (text: string) => string {
  const mark = "\u0000text\u0000";
  const whole = JSON.stringify(render(mark));
  const at = whole.indexOf(JSON.stringify(mark));
  if (at < 0 || whole.indexOf(JSON.stringify(mark), at + 1) >= 0) throw new Error("textTemplate: render must place its text exactly once");
  const [before, after] = [whole.slice(0, at), whole.slice(at + JSON.stringify(mark).length)];
  return (text) => before + JSON.stringify(text) + after;
}

/**
 * Writes `text` as one chunk of a chunked response body straight to the response's socket, once its
 * head has gone out (after a first `write`, or `flushHeaders`): one write, where `ServerResponse.write` corks the socket, queues the chunk's
 * size line, data and end, and uncorks on the next tick (a writev) — bookkeeping that cost more than
 * formatting the event, once per token and stream. The bytes on the wire are the same. Otherwise (no
 * chunked encoding, or the socket not this response's yet) through `write`.
 */
export function writeChunk(res: ServerResponse, text: string): void {
  const socket = res.socket;
  if (!res.chunkedEncoding || !res.headersSent || socket === null || !socket.writable || res.writableEnded) {
    res.write(text);
    return;
  }
  socket.write(`${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`);
}
