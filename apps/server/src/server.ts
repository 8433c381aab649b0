/**
 * The HTTP server: fastify routes over one engine.
 *
 *   GET  /                     the playground (public/)
 *   GET  /web/                 the browser app (apps/web's built page, generating with WebGPU in the page), with `webDir`
 *   GET  /v1/models            the served model
 *   GET  /v1/models/{id}       the served model, or 404 model_not_found
 *   POST /v1/completions       OpenAI completions (+ extensions, see completions.ts)
 *   POST /v1/chat/completions  OpenAI chat completions
 *   POST /tokenize             text or chat messages → token ids (as vLLM's)
 *   POST /detokenize           token ids → text
 *   GET  /health               JSON: status, queue, active sequences, tokens/s, state memory
 *   GET  /metrics              Prometheus text format
 *
 * Every error is an OpenAI-style body `{ error: { message, type, param, code } }`. With `apiKey`,
 * the /v1/ routes and /tokenize, /detokenize want `Authorization: Bearer <key>` (401 otherwise);
 * the playground, /health and /metrics stay open.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { stateBytesPerSequence, type TnlModel } from "@lightning-ts/tnl";
import type { Tokenizer } from "@lightning-ts/tokenizer";
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import type { ChatFormat } from "./chat.js";
import { detokenizeRoute, handleGeneration, modelNotFound, type Served, tokenizeRoute } from "./completions.js";
import { Engine, type EngineOptions } from "./engine.js";
import { createMetrics } from "./metrics.js";
import { ApiError, DEFAULT_LIMITS, type Limits } from "./request.js";
import { StateLru } from "./state-cache.js";

export interface ServerOptions {
  model: TnlModel;
  tokenizer: Tokenizer;
  chat: ChatFormat;
  /** The id clients see in /v1/models and responses. */
  modelName: string;
  backendName?: string;
  engine?: Partial<EngineOptions>;
  limits?: Partial<Limits>;
  /** Largest request body in bytes (larger: 413). */
  bodyLimit?: number;
  requestTimeoutMs?: number;
  /** Memory for states behind handles, in bytes. */
  handleStoreBytes?: number;
  logger?: boolean;
  /** Require this bearer token on the API routes. */
  apiKey?: string;
  /** Answer cross-origin requests (CORS) from these origins ("*": any). */
  cors?: string;
  /** A built static page (apps/web/dist) to serve under /web/. */
  webDir?: string;
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".png": "image/png",
};

export interface LightningServer {
  app: FastifyInstance;
  engine: Engine;
  /** Graceful stop: new requests get 503, running ones finish, then the server closes. */
  shutdown(): Promise<void>;
}

// Resolved against this file, so it works from src/ (tests) and dist/ (the built command) alike.
const PUBLIC = new URL("../public/", import.meta.url);
const asset = (name: string) => readFileSync(new URL(name, PUBLIC));

/**
 * @example
 * const { app } = buildServer({ model, tokenizer, chat: loadChatFormat(tokPath, dir), modelName: "tnl" });
 * await app.listen({ host: "127.0.0.1", port: 8000 });
 */
export function buildServer(options: ServerOptions): LightningServer {
  const app = Fastify({ logger: options.logger ?? false, bodyLimit: options.bodyLimit ?? 1 << 20 });
  const engine = new Engine(options.model, options.engine);
  const handles = new StateLru<number[]>(options.handleStoreBytes ?? 256 * 2 ** 20);
  const metrics = createMetrics(engine, handles);
  const served: Served = {
    model: options.model,
    tokenizer: options.tokenizer,
    modelName: options.modelName,
    chat: options.chat,
    engine,
    handles,
    metrics,
    limits: { ...DEFAULT_LIMITS, ...options.limits },
    requestTimeoutMs: options.requestTimeoutMs ?? 120_000,
  };
  let draining = false;
  const api = (url: string) => url.startsWith("/v1/") || url.startsWith("/tokenize") || url.startsWith("/detokenize");

  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      done(Object.assign(new Error(`the body is not valid JSON: ${(err as Error).message}`), { statusCode: 400, code: "invalid_json" }), undefined);
    }
  });

  app.addHook("onRequest", (request, reply, done) => {
    if (options.cors) {
      reply.header("access-control-allow-origin", options.cors);
      if (options.cors !== "*") reply.header("vary", "Origin");
      if (request.method === "OPTIONS") {
        // A preflight: say what may be sent, and answer before auth (browsers send no credentials here).
        reply.header("access-control-allow-methods", "GET, POST, OPTIONS");
        reply.header("access-control-allow-headers", request.headers["access-control-request-headers"] ?? "authorization, content-type");
        reply.header("access-control-max-age", "600");
        reply.code(204).send();
        return;
      }
    }
    if (options.apiKey !== undefined && api(request.url) && request.headers.authorization !== `Bearer ${options.apiKey}`) {
      throw new ApiError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", null, "invalid_request_error", "invalid_api_key");
    }
    if (draining && api(request.url)) throw new ApiError(503, "the server is shutting down", null, "server_error", "shutting_down");
    done();
  });
  app.addHook("onResponse", async (request, reply) => {
    // Streamed responses are counted where they end (completions.ts), with the status they ended in.
    if (metrics.countedElsewhere.has(request)) return;
    metrics.requests.inc({ endpoint: request.routeOptions.url ?? "unknown", status: reply.statusCode });
  });
  app.setErrorHandler((err, _request, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).send(err.body());
    const e = err as { statusCode?: number; code?: string; message: string };
    // fastify's own refusals: a body over the limit, malformed JSON, a wrong content type.
    if (e.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      return reply.code(413).send(new ApiError(413, `the request body is larger than this server's limit of ${app.initialConfig.bodyLimit} bytes`, "body", "invalid_request_error", "request_too_large").body());
    }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(e.statusCode).send(new ApiError(e.statusCode, e.message, "body", "invalid_request_error", e.code ?? null).body());
    }
    app.log.error(err);
    return reply.code(500).send(new ApiError(500, "internal server error", null, "server_error").body());
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(new ApiError(404, `no route ${request.method} ${request.url}`, null, "invalid_request_error", "not_found").body());
  });

  app.get("/", (_req, reply) => reply.type("text/html; charset=utf-8").send(asset("index.html")));
  app.get("/playground.js", (_req, reply) => reply.type("text/javascript; charset=utf-8").send(asset("playground.js")));
  app.get("/playground.css", (_req, reply) => reply.type("text/css; charset=utf-8").send(asset("playground.css")));

  if (options.webDir !== undefined) serveStatic(app, "/web/", options.webDir);

  const modelCard = { id: options.modelName, object: "model", created: 0, owned_by: "lightning-ts" };
  app.get("/v1/models", () => ({ object: "list", data: [modelCard] }));
  app.get<{ Params: { id: string } }>("/v1/models/:id", (request) => {
    if (request.params.id !== options.modelName) throw modelNotFound(request.params.id);
    return modelCard;
  });
  app.post("/v1/completions", (request, reply) => handleGeneration(served, "completion", request, reply));
  app.post("/v1/chat/completions", (request, reply) => handleGeneration(served, "chat", request, reply));

  app.post("/tokenize", (request) => tokenizeRoute(served, request.body));
  app.post("/detokenize", (request) => detokenizeRoute(served, request.body));

  app.get("/health", () => ({
    status: draining ? "draining" : "ok",
    model: options.modelName,
    backend: options.backendName ?? "cpu",
    queued: engine.queueDepth,
    active: engine.activeCount,
    tokens_per_second: engine.tokensPerSecond(),
    state_bytes: {
      per_sequence: stateBytesPerSequence(options.model.config),
      active: engine.activeStateBytes,
      prefix_cache: engine.prefixCache.bytes,
      handles: handles.bytes,
    },
    rss_bytes: process.memoryUsage().rss,
    // The device's allocator: tensors, the decoder's state rows and recorded graphs (live), and cached free blocks (pooled).
    backend_memory: options.model.params.embed.backend.memory(),
    decode_graphs: engine.decoder.graphs,
  }));
  app.get("/metrics", async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

  let closing: Promise<void> | undefined;
  const shutdown = () =>
    (closing ??= (async () => {
      draining = true;
      await engine.drain();
      // Every answer is written by now; a connection still open after a short grace belongs to a
      // client that left without closing it, and would hold the exit for its keep-alive timeout.
      const force = setTimeout(() => app.server.closeAllConnections(), 500);
      await app.close();
      clearTimeout(force);
      await engine.close();
      handles.clear();
    })());
  return { app, engine, shutdown };
}

/**
 * JSON.parse, except that an integer too large for a double (a 64-bit seed) keeps its exact value
 * as a BigInt; request.ts refuses a BigInt anywhere but `seed`. The slower reviver runs only for
 * bodies that hold such a number.
 */
export function parseJsonBody(text: string): unknown {
  const value: unknown = JSON.parse(text);
  if (!/\d{16}/.test(text)) return value;
  return JSON.parse(text, (_key, v: unknown, context?: { source?: string }) =>
    typeof v === "number" && !Number.isSafeInteger(v) && context?.source !== undefined && /^\d+$/.test(context.source) ? BigInt(context.source) : v,
  );
}

/**
 * Serves the files at the top of `dir` (a built page: index.html and its modules) under `prefix`.
 * The names are listed once at start: a request can only name one of them, never a path outside.
 */
function serveStatic(app: FastifyInstance, prefix: string, dir: string): void {
  if (!existsSync(join(dir, "index.html"))) throw new Error(`the web page directory ${dir} has no index.html (build it: pnpm --filter @lightning-ts/web build)`);
  const files = new Set(readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isFile() && CONTENT_TYPES[extname(e.name)] ? [e.name] : [])));
  const send = (name: string, reply: FastifyReply) => {
    if (!files.has(name)) throw new ApiError(404, `no file ${prefix}${name}`, null, "invalid_request_error", "not_found");
    return reply.type(CONTENT_TYPES[extname(name)]).send(readFileSync(join(dir, name)));
  };
  app.get(prefix.slice(0, -1), (_req, reply) => reply.redirect(prefix));
  app.get(prefix, (_req, reply) => send("index.html", reply));
  app.get<{ Params: { file: string } }>(`${prefix}:file`, (request, reply) => send(request.params.file, reply));
}
