/**
 * OpenAI request bodies → checked generation parameters. Every refusal is an `ApiError` that names
 * the offending field in `param`, as OpenAI's own errors do, so a client can tell which one to fix.
 */
import type { ChatMessage } from "./chat.js";
import { compileSchemaCached, type SchemaNode, SchemaError } from "./json-schema.js";

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
  model?: string;
  /** Completions: the prompts (text or token ids), each answered by `n` choices. Chat: undefined. */
  prompts?: (string | number[])[];
  messages?: ChatMessage[];
  maxTokens: number;
  temperature: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  /** The sampling seed, folded into [0, 2^53) (a request without one gets a random seed). */
  seed: number;
  n: number;
  /** Token id → bias added to its logit before sampling. */
  logitBias: Map<number, number>;
  /** response_format json_object or json_schema: constrain every choice to one JSON object. */
  json: boolean;
  /** response_format json_schema: the compiled schema every choice must match. */
  jsonSchema?: SchemaNode;
  /** Completions: put the prompt's text before each choice's text. */
  echo: boolean;
  stop: string[];
  /** Token ids that end a choice (as vLLM's `stop_token_ids`), besides end-of-sequence. */
  stopTokenIds: number[];
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

/**
 * A bad value as it may appear in an error message: JSON, cut to its first 80 characters with the
 * size of the whole (a client may send a megabyte), and never a crash for a value JSON cannot
 * write, such as 100,000 nested arrays.
 */
export function show(v: unknown, max = 80): string {
  let text: string;
  try {
    text = typeof v === "bigint" ? v.toString() : (JSON.stringify(v) ?? String(v));
  } catch {
    return Array.isArray(v) ? "an array nested too deeply to show" : "a value too deeply nested to show";
  }
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters)`;
}

/**
 * The fields each endpoint understands. Anything else is refused by name: a client that sends
 * `tools` or a `response_format` schema keyword it cannot honour must learn that they were not
 * applied, never get an answer that silently ignored them.
 */
const COMMON = ["model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty", "seed", "n", "stop", "stream", "stream_options", "logprobs", "logit_bias", "user", "return_state", "state", "ignore_eos", "stop_token_ids", "response_format"];
const KNOWN = {
  completion: new Set([...COMMON, "prompt", "echo", "best_of", "suffix"]),
  chat: new Set([...COMMON, "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls", "store"]),
};

function refuseUnsupported(body: Body, kind: "completion" | "chat", n: number): void {
  for (const key of Object.keys(body)) {
    if (!KNOWN[kind].has(key)) throw new ApiError(400, `'${key}' is not supported by this server`, key, "invalid_request_error", "unsupported_parameter");
  }
  const absent = (v: unknown) => v === undefined || v === null || (Array.isArray(v) && v.length === 0);
  const refuse = (key: string, why: string) => {
    throw new ApiError(400, `'${key}' ${why}`, key, "invalid_request_error", "unsupported_parameter");
  };
  if (!absent(body.tools)) refuse("tools", "is not supported: this server has no tool calling");
  if (!absent(body.tool_choice) && body.tool_choice !== "none") refuse("tool_choice", "is not supported: this server has no tool calling");
  if (!absent(body.suffix) && body.suffix !== "") refuse("suffix", "is not supported: this server does not fill in the middle");
  if (body.store === true) refuse("store", "is not supported: this server stores no completions");
  if (!absent(body.best_of) && body.best_of !== n) refuse("best_of", `is not supported other than equal to n (${n}): this server does not rank candidates`);
}

/** A seed as JSON numbers can bring it (up to 2^64 - 1; see `parseJsonBody`), folded into the [0, 2^53) the sampler takes. */
function parseSeed(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  const big = typeof v === "bigint" ? v : typeof v === "number" && Number.isInteger(v) ? BigInt(v) : undefined;
  if (big === undefined || big < 0n || big >= 2n ** 64n) throw new ApiError(400, `'seed' must be an integer in [0, 2^64), got ${show(v)}`, "seed");
  return Number((big ^ (big >> 53n)) & (2n ** 53n - 1n));
}

function parseLogitBias(v: unknown): Map<number, number> {
  const bias = new Map<number, number>();
  if (v === undefined || v === null) return bias;
  if (typeof v !== "object" || Array.isArray(v)) throw new ApiError(400, `'logit_bias' must be an object of token id → bias, got ${show(v)}`, "logit_bias");
  for (const [k, b] of Object.entries(v as Body)) {
    if (!/^(0|[1-9]\d*)$/.test(k) || !Number.isSafeInteger(Number(k))) throw new ApiError(400, `'logit_bias' keys must be token ids, got ${show(k)}`, "logit_bias");
    if (typeof b !== "number" || !(b >= -100 && b <= 100)) throw new ApiError(400, `'logit_bias[${k}]' must be a number in [-100, 100], got ${show(b)}`, "logit_bias");
    bias.set(Number(k), b);
  }
  return bias;
}

function num(body: Body, key: string, check: (x: number) => boolean, what: string, integer = false): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || !check(v)) {
    throw new ApiError(400, `'${key}' must be ${what}, got ${show(v)}`, key);
  }
  return v;
}

function bool(body: Body, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new ApiError(400, `'${key}' must be true or false, got ${show(v)}`, key);
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

/**
 * `response_format`: text, json_object (json-mode.ts) or json_schema (json-schema.ts), both by
 * constrained decoding. A schema keyword the matcher does not support is refused by name.
 */
function parseResponseFormat(v: unknown): { json: boolean; jsonSchema?: SchemaNode } {
  if (v === undefined || v === null) return { json: false };
  const type = typeof v === "object" && !Array.isArray(v) ? (v as Body).type : undefined;
  if (type === "text") return { json: false };
  if (type === "json_object") return { json: true };
  if (type !== "json_schema") throw new ApiError(400, `'response_format' must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}}, got ${show(v)}`, "response_format");
  const spec = (v as Body).json_schema;
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) throw new ApiError(400, "'response_format.json_schema' must be an object {name, schema, strict?}", "response_format");
  const js = spec as Body;
  for (const k of Object.keys(js)) {
    if (!["name", "schema", "strict", "description"].includes(k)) throw new ApiError(400, `'response_format.json_schema.${k}' is not supported`, "response_format", "invalid_request_error", "unsupported_parameter");
  }
  if (typeof js.name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(js.name)) throw new ApiError(400, "'response_format.json_schema.name' must be 1 to 64 letters, digits, '_' or '-'", "response_format");
  if (js.strict !== undefined && js.strict !== null && typeof js.strict !== "boolean") throw new ApiError(400, "'response_format.json_schema.strict' must be a boolean", "response_format");
  try {
    return { json: true, jsonSchema: compileSchemaCached(js.schema) };
  } catch (err) {
    if (!(err instanceof SchemaError)) throw err;
    throw new ApiError(400, `'response_format.json_schema.schema': ${err.message}`, "response_format", "invalid_request_error", "unsupported_parameter");
  }
}

function parseStopTokenIds(v: unknown): number[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((t) => Number.isSafeInteger(t) && (t as number) >= 0)) {
    throw new ApiError(400, `'stop_token_ids' must be a list of token ids, got ${show(v)}`, "stop_token_ids");
  }
  return v as number[];
}

export function parseMessages(v: unknown): ChatMessage[] {
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

const isIds = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isSafeInteger(t) && (t as number) >= 0);

/** `prompt`: a string, a list of token ids, or a non-empty list of either (several prompts). */
function parsePrompts(prompt: unknown): (string | number[])[] {
  if (typeof prompt === "string" || isIds(prompt)) return [prompt];
  if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((x) => typeof x === "string" || isIds(x))) return prompt;
  throw new ApiError(400, `'prompt' must be a string, a list of token ids, or a list of strings or of token id lists; got ${show(prompt)}`, "prompt");
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
  if (body.model !== undefined && typeof body.model !== "string") throw new ApiError(400, `'model' must be a string, got ${show(body.model)}`, "model");
  const n = num(body, "n", (x) => x >= 1 && x <= limits.maxN, `an integer in [1, ${limits.maxN}]`, true) ?? 1;
  refuseUnsupported(body, kind, n);

  const maxKey = kind === "chat" && body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens";
  const maxTokens = num(body, maxKey, (x) => x >= 1, "a positive integer", true) ?? Math.min(kind === "chat" ? limits.maxTokens : 16, limits.maxTokens);
  if (maxTokens > limits.maxTokens) throw new ApiError(400, `'${maxKey}' is ${maxTokens}, more than this server's limit of ${limits.maxTokens}`, maxKey);

  const p: GenerationParams = {
    model: body.model,
    maxTokens,
    temperature: num(body, "temperature", (x) => x >= 0 && x <= 2, "a number in [0, 2]") ?? 1,
    topP: num(body, "top_p", (x) => x > 0 && x <= 1, "a number in (0, 1]"),
    topK: num(body, "top_k", (x) => x >= -1, "a positive integer (0 or -1: off)", true),
    minP: num(body, "min_p", (x) => x >= 0 && x <= 1, "a number in [0, 1]"),
    repetitionPenalty: num(body, "repetition_penalty", (x) => x > 0, "a positive number"),
    frequencyPenalty: num(body, "frequency_penalty", (x) => x >= -2 && x <= 2, "a number in [-2, 2]"),
    presencePenalty: num(body, "presence_penalty", (x) => x >= -2 && x <= 2, "a number in [-2, 2]"),
    seed: parseSeed(body.seed) ?? Math.floor(Math.random() * 2 ** 53),
    n,
    logitBias: parseLogitBias(body.logit_bias),
    echo: bool(body, "echo") ?? false,
    ...parseResponseFormat(body.response_format),
    stop: parseStop(body.stop),
    stopTokenIds: parseStopTokenIds(body.stop_token_ids),
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
    if (typeof body.state !== "string" || body.state.length === 0) throw new ApiError(400, `'state' must be a state handle string from an earlier response, got ${show(body.state)}`, "state");
    p.state = body.state;
  }

  if (kind === "completion") {
    p.prompts = parsePrompts(body.prompt);
    if (p.state !== undefined && p.prompts.length > 1) throw new ApiError(400, "'prompt' must be one prompt when continuing from a 'state'", "prompt");
    if (p.prompts.length * p.n > limits.maxN) throw new ApiError(400, `${p.prompts.length} prompts × n = ${p.n} is ${p.prompts.length * p.n} choices, more than this server's limit of ${limits.maxN}`, "prompt");
    const lp = num(body, "logprobs", (x) => x >= 0 && x <= 5, "an integer in [0, 5]", true);
    if (lp !== undefined) p.logprobs = lp;
    if (p.echo && lp !== undefined) throw new ApiError(400, "'echo' with 'logprobs' is not supported: this server does not score prompt tokens", "echo", "invalid_request_error", "unsupported_parameter");
  } else {
    p.messages = parseMessages(body.messages);
    if (bool(body, "logprobs")) p.logprobs = num(body, "top_logprobs", (x) => x >= 0 && x <= 20, "an integer in [0, 20]", true) ?? 0;
  }
  return p;
}
