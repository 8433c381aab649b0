/**
 * OpenAI request bodies → checked generation parameters. Every refusal is an `ApiError` that names
 * the offending field in `param`, as OpenAI's own errors do, so a client can tell which one to fix.
 */
import type { ChatMessage } from "./chat.js";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = status === 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error",
    readonly code: string | null = null,
  ) {
    super(message);
  }

  /** The OpenAI error body. */
  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface Limits {
  /** Largest max_tokens a request may ask for. */
  maxTokens: number;
  /** Largest prompt, in tokens. */
  maxPromptTokens: number;
  /** Largest n (choices per request). */
  maxN: number;
}

export const DEFAULT_LIMITS: Limits = { maxTokens: 4096, maxPromptTokens: 65536, maxN: 8 };

export interface GenerationParams {
  /** Completions: text or token ids. Chat: undefined. */
  prompt?: string | number[];
  messages?: ChatMessage[];
  maxTokens: number;
  temperature: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  seed: number;
  n: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** Alternatives per token, or undefined for no logprobs. */
  logprobs?: number;
  /** Extensions: hand back the final state as a handle; continue from a handle; ignore eos. */
  returnState: boolean;
  state?: string;
  ignoreEos: boolean;
}

type Body = Record<string, unknown>;

function num(body: Body, key: string, check: (x: number) => boolean, what: string, integer = false): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || !check(v)) {
    throw new ApiError(400, `'${key}' must be ${what}, got ${JSON.stringify(v)}`, key);
  }
  return v;
}

function bool(body: Body, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new ApiError(400, `'${key}' must be true or false, got ${JSON.stringify(v)}`, key);
  return v;
}

function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.length > 4 || list.some((s) => typeof s !== "string" || s.length === 0)) {
    throw new ApiError(400, "'stop' must be a non-empty string or a list of at most 4 non-empty strings", "stop");
  }
  return list as string[];
}

function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new ApiError(400, "'messages' must be a non-empty list of {role, content}", "messages");
  return v.map((m, i) => {
    if (typeof m !== "object" || m === null || typeof (m as Body).role !== "string") {
      throw new ApiError(400, `'messages[${i}]' must be an object with a string 'role'`, `messages[${i}]`);
    }
    const { role, content } = m as Body;
    // Content may be a string or a list of text parts, as in the OpenAI API.
    if (typeof content === "string") return { role: role as string, content };
    if (Array.isArray(content) && content.every((p) => p && (p as Body).type === "text" && typeof (p as Body).text === "string")) {
      return { role: role as string, content: content.map((p) => (p as Body).text as string).join("") };
    }
    throw new ApiError(400, `'messages[${i}].content' must be a string or a list of text parts`, `messages[${i}].content`);
  });
}

/**
 * Checks a /v1/completions ("completion") or /v1/chat/completions ("chat") body.
 *
 * @example
 * const p = parseRequest({ prompt: "Call me", max_tokens: 8 }, "completion", DEFAULT_LIMITS);
 */
export function parseRequest(raw: unknown, kind: "completion" | "chat", limits: Limits): GenerationParams {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ApiError(400, "the request body must be a JSON object", null);
  const body = raw as Body;
  if (body.model !== undefined && typeof body.model !== "string") throw new ApiError(400, "'model' must be a string", "model");

  const maxKey = kind === "chat" && body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens";
  const maxTokens = num(body, maxKey, (x) => x >= 1, "a positive integer", true) ?? Math.min(kind === "chat" ? limits.maxTokens : 16, limits.maxTokens);
  if (maxTokens > limits.maxTokens) throw new ApiError(400, `'${maxKey}' is ${maxTokens}, more than this server's limit of ${limits.maxTokens}`, maxKey);

  const p: GenerationParams = {
    maxTokens,
    temperature: num(body, "temperature", (x) => x >= 0 && x <= 2, "a number in [0, 2]") ?? 1,
    topP: num(body, "top_p", (x) => x > 0 && x <= 1, "a number in (0, 1]"),
    topK: num(body, "top_k", (x) => x >= -1, "a positive integer (0 or -1: off)", true),
    minP: num(body, "min_p", (x) => x >= 0 && x <= 1, "a number in [0, 1]"),
    repetitionPenalty: num(body, "repetition_penalty", (x) => x > 0, "a positive number"),
    frequencyPenalty: num(body, "frequency_penalty", (x) => x >= -2 && x <= 2, "a number in [-2, 2]"),
    presencePenalty: num(body, "presence_penalty", (x) => x >= -2 && x <= 2, "a number in [-2, 2]"),
    seed: num(body, "seed", (x) => x >= 0 && Number.isSafeInteger(x), "a non-negative integer", true) ?? 0,
    n: num(body, "n", (x) => x >= 1 && x <= limits.maxN, `an integer in [1, ${limits.maxN}]`, true) ?? 1,
    stop: parseStop(body.stop),
    stream: bool(body, "stream") ?? false,
    includeUsage: false,
    returnState: bool(body, "return_state") ?? false,
    ignoreEos: bool(body, "ignore_eos") ?? false,
  };
  if (p.topK !== undefined && p.topK <= 0) p.topK = undefined;

  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (typeof so !== "object" || Array.isArray(so)) throw new ApiError(400, "'stream_options' must be an object", "stream_options");
    p.includeUsage = bool(so as Body, "include_usage") ?? false;
  }

  if (body.state !== undefined && body.state !== null) {
    if (typeof body.state !== "string" || body.state.length === 0) throw new ApiError(400, "'state' must be a state handle string from an earlier response", "state");
    p.state = body.state;
  }

  if (kind === "completion") {
    const prompt = body.prompt;
    const flat = Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === "string" ? prompt[0] : prompt;
    if (typeof flat === "string") p.prompt = flat;
    else if (Array.isArray(flat) && flat.every((x) => Number.isInteger(x) && x >= 0)) p.prompt = flat as number[];
    else throw new ApiError(400, "'prompt' must be a string, a list of one string, or a list of token ids", "prompt");
    const lp = num(body, "logprobs", (x) => x >= 0 && x <= 5, "an integer in [0, 5]", true);
    if (lp !== undefined) p.logprobs = lp;
  } else {
    p.messages = parseMessages(body.messages);
    if (bool(body, "logprobs")) p.logprobs = num(body, "top_logprobs", (x) => x >= 0 && x <= 20, "an integer in [0, 20]", true) ?? 0;
  }
  return p;
}
