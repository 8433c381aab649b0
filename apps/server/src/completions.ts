/**
 * POST /v1/completions and /v1/chat/completions: a checked request becomes one engine sequence
 * per choice; tokens come back as one JSON body or as server-sent events ending in `[DONE]`.
 *
 * Extensions beyond the OpenAI API: `top_k`, `min_p`, `repetition_penalty`, `ignore_eos`, and
 * `return_state` / `state`. With `return_state: true` every choice carries `state`, an opaque
 * handle to the recurrent state after the whole exchange; sending it as `state` in a later request
 * continues from there, so that request holds only the new text. A handle is single-use (it is
 * consumed when continued from) and is dropped when the handle store runs out of memory.
 */
import { cloneState, disposeState, samplerFromOptions, type TnlModel, type TnlState } from "@lightning-ts/tnl";
import type { Tokenizer } from "@lightning-ts/tokenizer";
import type { FastifyReply, FastifyRequest } from "fastify";
import { type ChatFormat, renderChat } from "./chat.js";
import { type Engine, QueueFullError, type SequenceResult, ShuttingDownError, type TokenInfo } from "./engine.js";
import type { ServerMetrics } from "./metrics.js";
import { ApiError, type GenerationParams, type Limits, parseRequest } from "./request.js";
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
  out: TextStream;
  logprobs: TokenInfo[];
  result?: SequenceResult;
  handle?: string;
}

/** The prompt as token ids, and the state it continues from (taken out of the handle store). */
function buildPrompt(s: Served, p: GenerationParams, kind: Kind): { tokens: number[]; state?: TnlState } {
  const { config } = s.model;
  const field = kind === "chat" ? "messages" : "prompt";
  let ids: number[];
  if (kind === "chat") ids = s.tokenizer.encode(renderChat(s.chat, p.messages!));
  else if (typeof p.prompt === "string") ids = s.tokenizer.encode(p.prompt);
  else {
    ids = p.prompt!;
    const bad = ids.find((id) => id >= config.vocabSize);
    if (bad !== undefined) throw new ApiError(400, `'prompt' holds token id ${bad}, outside the vocabulary [0, ${config.vocabSize})`, "prompt");
  }
  if (ids.length + 1 > s.limits.maxPromptTokens) {
    throw new ApiError(400, `'${field}' is ${ids.length} tokens, more than this server's limit of ${s.limits.maxPromptTokens}`, field, "invalid_request_error", "context_length_exceeded");
  }
  if (p.state === undefined) {
    const tokens = config.addBosToken || ids.length === 0 ? [config.bosTokenId, ...ids] : ids;
    return { tokens };
  }
  const hit = s.handles.get(p.state);
  if (!hit) throw new ApiError(400, `'state' ${JSON.stringify(p.state)} is not a live state handle (unknown, already used, or evicted)`, "state");
  s.handles.delete(p.state);
  const tokens = [...hit.value, ...ids];
  if (tokens.length === 0) {
    disposeState(hit.state);
    throw new ApiError(400, `'${field}' is empty and the state has nothing pending to continue from`, field);
  }
  return { tokens, state: hit.state };
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
  const { tokens, state } = buildPrompt(s, p, kind);
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${newHandle().slice(6)}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? (p.stream ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  const stops = [...p.stop, ...(kind === "chat" ? s.chat.stops : [])];
  const stopIds = new Set(p.ignoreEos ? [] : [s.model.config.eosTokenId]);

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new ApiError(504, `generation ran past this server's limit of ${s.requestTimeoutMs} ms`, null, "timeout", "request_timeout")), s.requestTimeoutMs);
  // The response's socket closing before we finished means the client went away: stop its sequences.
  reply.raw.on("close", () => {
    if (!reply.raw.writableFinished) controller.abort(new Error("client disconnected"));
  });

  let firstToken = true;
  const send = (data: unknown) => reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
  const chunk = (c: Choice, text: string, infos: TokenInfo[], finish: string | null, extra: Record<string, unknown> = {}) => {
    const lp = p.logprobs === undefined || infos.length === 0 ? null : kind === "chat" ? chatLogprobs(s, infos) : completionLogprobs(s, infos);
    const body = kind === "chat" ? { index: c.index, delta: finish && !text ? {} : { content: text }, logprobs: lp, finish_reason: finish } : { index: c.index, text, logprobs: lp, finish_reason: finish };
    send({ id, object, created, model: s.modelName, choices: [{ ...body, ...extra }] });
  };

  const choices: Choice[] = Array.from({ length: p.n }, (_, index) => ({ index, out: new TextStream(s.tokenizer, stops), logprobs: [] }));
  const sampler = samplerFromOptions({
    temperature: p.temperature,
    topK: p.topK,
    topP: p.topP,
    minP: p.minP,
    repetitionPenalty: p.repetitionPenalty,
    frequencyPenalty: p.frequencyPenalty,
    presencePenalty: p.presencePenalty,
  });
  const runs: Promise<SequenceResult>[] = [];
  try {
    for (const c of choices) {
      const onToken = (info: TokenInfo): boolean => {
        if (firstToken) {
          firstToken = false;
          s.metrics.timeToFirstToken.observe((performance.now() - started) / 1000);
        }
        const { text, stopped } = c.out.push(info.token);
        if (p.logprobs !== undefined) c.logprobs.push(info);
        if (p.stream && (text || p.logprobs !== undefined)) chunk(c, text, p.logprobs !== undefined ? [info] : [], null);
        return stopped;
      };
      runs.push(
        s.engine.submit({
          prompt: tokens,
          state: state && (c.index === p.n - 1 ? state : cloneState(state)),
          maxTokens: p.maxTokens,
          sampler,
          seed: p.seed,
          stream: c.index,
          stopIds,
          logprobs: p.logprobs,
          keepState: p.returnState,
          signal: controller.signal,
          onToken,
        }),
      );
    }
  } catch (err) {
    controller.abort(err);
    clearTimeout(timer);
    if (state && runs.length < p.n) disposeState(state);
    if (err instanceof QueueFullError) throw new ApiError(429, err.message, null, "rate_limit_error", "queue_full");
    if (err instanceof ShuttingDownError) throw new ApiError(503, err.message, null, "server_error", "shutting_down");
    throw err;
  }

  if (p.stream) {
    reply.hijack();
    reply.raw.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive" });
    if (kind === "chat") for (const c of choices) send({ id, object, created, model: s.modelName, choices: [{ index: c.index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] });
  }

  const settled = await Promise.allSettled(runs);
  clearTimeout(timer);
  const failure = settled.find((r) => r.status === "rejected");
  settled.forEach((r, i) => r.status === "fulfilled" && (choices[i].result = r.value));
  for (const c of choices) {
    if (c.result?.state) {
      c.handle = newHandle();
      s.handles.put(c.handle, c.result.state, c.result.pending ?? []);
    }
  }
  s.metrics.requestSeconds.observe({ endpoint: kind }, (performance.now() - started) / 1000);
  const cached = choices[0]?.result?.cachedTokens ?? 0;
  const reason: unknown = controller.signal.reason;
  const error = failure ? new ApiError(500, `generation failed: ${(failure.reason as Error).message}`, null, "server_error") : reason instanceof ApiError ? reason : undefined;

  if (p.stream) {
    s.metrics.requests.inc({ endpoint: request.routeOptions.url ?? kind, status: error ? error.status : 200 });
    if (!reply.raw.writable) return; // the client left
    if (error) send(error.body());
    else {
      for (const c of choices) {
        const tail = c.out.end();
        chunk(c, tail, [], c.result!.finishReason, c.handle ? { state: c.handle } : {});
      }
      if (p.includeUsage) send({ id, object, created, model: s.modelName, choices: [], usage: usage(tokens.length, choices, cached) });
    }
    reply.raw.end("data: [DONE]\n\n");
    return;
  }

  if (error) throw error;
  if (controller.signal.aborted) {
    reply.hijack(); // the client left; nobody to answer
    return;
  }
  const body = choices.map((c) => {
    const text = c.out.text + c.out.end();
    const lp = p.logprobs === undefined ? null : kind === "chat" ? chatLogprobs(s, c.logprobs) : completionLogprobs(s, c.logprobs);
    const main = kind === "chat" ? { index: c.index, message: { role: "assistant", content: text }, logprobs: lp } : { index: c.index, text, logprobs: lp };
    return { ...main, finish_reason: c.result!.finishReason, ...(c.handle ? { state: c.handle } : {}) };
  });
  await reply.send({ id, object, created, model: s.modelName, choices: body, usage: usage(tokens.length, choices, cached) });
}
