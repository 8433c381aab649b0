/**
 * One thread of the streaming load generator (started by load.ts, one per group of clients).
 *
 * Each client holds one keep-alive connection and POSTs streamed completions back to back; the SSE
 * answer is read with string searches, not a JSON parser per chunk, so that a few threads can keep
 * hundreds of streams fed. Besides the steady clients, a thread can start "disconnect" streams at
 * given times and abort them after a given number of token chunks (a client going away mid-stream).
 *
 * This file imports only node: modules and erasable TypeScript, so Node runs it as it is in the tests
 * (type stripping) and as tsup's second entry (dist/serve-load-worker.js) from the built bench.
 */
import { Agent, request } from "node:http";
import { isMainThread, parentPort, workerData } from "node:worker_threads";

export interface WorkerJob {
  /** The server's base URL, e.g. http://127.0.0.1:8000. */
  url: string;
  /** The JSON body of every steady request. */
  body: string;
  /** Tokens each request must yield (`max_tokens` with `ignore_eos`). */
  maxTokens: number;
  /** Steady clients in this thread. */
  clients: number;
  /** Seconds after "go" during which clients start new requests (each makes at least one). */
  seconds: number;
  /** One unmeasured request per client before reporting ready. */
  warmup: boolean;
  /** Disconnect streams: start times in ms after "go" and the token chunks each reads before aborting. */
  disconnects: { atMs: number; afterChunks: number }[];
}

/** What one thread measured, sent to the main thread when its clients are done. */
export interface WorkerStats {
  requests: number;
  errors: number;
  firstError: string | null;
  /** Generated tokens as the server counted them (usage.completion_tokens of each finished request). */
  tokens: number;
  /** SSE chunks that carried generated text. */
  chunks: number;
  /** Requests whose stream carried no usage chunk (then their chunks stand in for tokens). */
  withoutUsage: number;
  /** Time to first token chunk per request, ms. */
  ttftMs: Float64Array;
  /** Gaps between consecutive token chunks, ms. */
  itlMs: Float64Array;
  /** Per request: (tokens - 1) / (end - first token), tokens/s: what one stream sees once it runs. */
  streamRates: Float64Array;
  /** Tokens per finished request, for checking that each got exactly max_tokens. */
  tokensPerRequest: Int32Array;
  disconnectsStarted: number;
  /** Disconnect streams aborted after their chunks, as planned. */
  disconnectsAborted: number;
  /** performance.timeOrigin + performance.now() when the last client finished. */
  endedAt: number;
}

/** The outcome of one streamed request. */
export interface StreamResult {
  status: number;
  /** The stream ended with `data: [DONE]`. */
  done: boolean;
  /** The client aborted it (a planned disconnect). */
  aborted: boolean;
  error: string | null;
  /** Times (performance.now(), ms) of the chunks that carried generated text. */
  chunkTimes: number[];
  /** usage.completion_tokens, when the stream carried usage. */
  usageTokens: number | null;
  sentAt: number;
  endedAt: number;
}

/** What one SSE event is, read with string searches only. */
export type SseEvent = { kind: "done" } | { kind: "token" } | { kind: "usage"; completionTokens: number } | { kind: "error"; message: string } | { kind: "other" };

const USAGE = /"completion_tokens":(\d+)/;

/** Classifies one SSE event (the text between blank lines) of an OpenAI completions stream. */
export function classifyEvent(event: string): SseEvent {
  if (!event.startsWith("data: ")) return { kind: "other" };
  if (event.startsWith("data: [DONE]")) return { kind: "done" };
  if (event.startsWith('data: {"error"')) return { kind: "error", message: event.slice(6, 500) };
  if (event.includes('"usage":{')) {
    const m = USAGE.exec(event);
    return m ? { kind: "usage", completionTokens: Number(m[1]) } : { kind: "other" };
  }
  // A token chunk has text and no finish reason yet; the last choice chunk (finish_reason set) only
  // flushes held bytes, and a chunk with empty text carries nothing.
  const at = event.indexOf('"text":"');
  if (at < 0 || !event.includes('"finish_reason":null')) return { kind: "other" };
  return event.charCodeAt(at + 8) === 34 /* " */ ? { kind: "other" } : { kind: "token" };
}

/** Splits an SSE byte stream into events as chunks arrive (events end with a blank line). */
export class SseSplitter {
  private buffer = "";

  /** The complete events in `chunk` plus what was held; a partial event is kept for the next call. */
  push(chunk: string): string[] {
    this.buffer += chunk;
    const events: string[] = [];
    let start = 0;
    for (let end = this.buffer.indexOf("\n\n"); end >= 0; end = this.buffer.indexOf("\n\n", start)) {
      events.push(this.buffer.slice(start, end));
      start = end + 2;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }
}

/**
 * POSTs `body` to `url` + /v1/completions and reads the stream. With `abortAfterChunks`, the
 * request is aborted (its socket destroyed) once that many token chunks have arrived.
 */
export function streamCompletion(url: string, body: string, agent: Agent, abortAfterChunks?: number): Promise<StreamResult> {
  const target = new URL("/v1/completions", url);
  const controller = new AbortController();
  const r: StreamResult = { status: 0, done: false, aborted: false, error: null, chunkTimes: [], usageTokens: null, sentAt: performance.now(), endedAt: 0 };
  return new Promise((resolve) => {
    let settled = false;
    const finish = (error: string | null) => {
      if (settled) return;
      settled = true;
      r.endedAt = performance.now();
      if (error !== null && r.error === null && !r.aborted) r.error = error;
      resolve(r);
    };
    const req = request(
      { hostname: target.hostname, port: target.port, path: target.pathname, method: "POST", agent, signal: controller.signal, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
      (res) => {
        r.status = res.statusCode ?? 0;
        res.setEncoding("utf8");
        if (r.status !== 200) {
          let text = "";
          res.on("data", (d: string) => (text += d));
          res.on("end", () => finish(`HTTP ${r.status}: ${text.slice(0, 300)}`));
          res.on("error", (e) => finish(`HTTP ${r.status}: ${e.message}`));
          return;
        }
        const splitter = new SseSplitter();
        res.on("data", (d: string) => {
          const now = performance.now();
          for (const event of splitter.push(d)) {
            const e = classifyEvent(event);
            if (e.kind === "token") {
              r.chunkTimes.push(now);
              if (abortAfterChunks !== undefined && r.chunkTimes.length >= abortAfterChunks && !r.aborted) {
                r.aborted = true;
                controller.abort();
                finish(null);
                return;
              }
            } else if (e.kind === "usage") r.usageTokens = e.completionTokens;
            else if (e.kind === "error") r.error ??= `stream error: ${e.message}`;
            else if (e.kind === "done") r.done = true;
          }
        });
        res.on("end", () => finish(r.done ? null : "the stream ended without [DONE]"));
        res.on("error", (e) => finish(e.message));
      },
    );
    req.on("error", (e) => finish(e.message));
    req.end(body);
  });
}

/** Collects what the clients of one thread measured. */
class Recorder {
  requests = 0;
  errors = 0;
  firstError: string | null = null;
  tokens = 0;
  chunks = 0;
  withoutUsage = 0;
  ttft: number[] = [];
  itl: number[] = [];
  rates: number[] = [];
  perRequest: number[] = [];
  disconnectsStarted = 0;
  disconnectsAborted = 0;
  private readonly maxTokens: number;

  // A plain field, not a parameter property: type stripping runs this file and erases types only.
  constructor(maxTokens: number) {
    this.maxTokens = maxTokens;
  }

  error(message: string): void {
    this.errors++;
    this.firstError ??= message;
  }

  steady(r: StreamResult): void {
    this.requests++;
    if (r.error !== null || !r.done) return this.error(r.error ?? "the stream ended without [DONE]");
    const t = r.chunkTimes;
    const tokens = r.usageTokens ?? t.length;
    if (r.usageTokens === null) this.withoutUsage++;
    this.tokens += tokens;
    this.chunks += t.length;
    this.perRequest.push(tokens);
    if (tokens !== this.maxTokens) this.error(`a request yielded ${tokens} tokens, expected max_tokens = ${this.maxTokens}`);
    if (t.length === 0) return;
    this.ttft.push(t[0] - r.sentAt);
    for (let i = 1; i < t.length; i++) this.itl.push(t[i] - t[i - 1]);
    if (tokens > 1 && r.endedAt > t[0]) this.rates.push(((tokens - 1) * 1000) / (r.endedAt - t[0]));
  }

  disconnect(r: StreamResult): void {
    if (r.aborted) this.disconnectsAborted++;
    else this.error(r.error ?? `a disconnect stream ended after ${r.chunkTimes.length} token chunks, before its abort`);
  }

  stats(): WorkerStats {
    return {
      requests: this.requests,
      errors: this.errors,
      firstError: this.firstError,
      tokens: this.tokens,
      chunks: this.chunks,
      withoutUsage: this.withoutUsage,
      ttftMs: Float64Array.from(this.ttft),
      itlMs: Float64Array.from(this.itl),
      streamRates: Float64Array.from(this.rates),
      tokensPerRequest: Int32Array.from(this.perRequest),
      disconnectsStarted: this.disconnectsStarted,
      disconnectsAborted: this.disconnectsAborted,
      endedAt: performance.timeOrigin + performance.now(),
    };
  }
}

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

/** Runs one thread's job: warm-up, "ready", wait for "go", then the measured streams. */
async function runJob(job: WorkerJob, port: NonNullable<typeof parentPort>): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  // Disconnect streams get their own connections: an aborted request destroys its socket.
  const oneShot = new Agent({ keepAlive: false, maxSockets: Infinity });
  const warm = new Recorder(job.maxTokens);
  if (job.warmup) await Promise.all(Array.from({ length: job.clients }, () => streamCompletion(job.url, job.body, agent).then((r) => warm.steady(r))));
  const go = new Promise<void>((ok) => port.once("message", () => ok()));
  port.postMessage({ type: "ready", warmupErrors: warm.errors, warmupError: warm.firstError });
  await go;
  const start = performance.now();
  const deadline = start + job.seconds * 1000;
  const rec = new Recorder(job.maxTokens);
  const client = async () => {
    do rec.steady(await streamCompletion(job.url, job.body, agent));
    while (performance.now() < deadline);
  };
  const leaver = async (d: { atMs: number; afterChunks: number }) => {
    await sleep(Math.max(0, start + d.atMs - performance.now()));
    rec.disconnectsStarted++;
    rec.disconnect(await streamCompletion(job.url, job.body, oneShot, d.afterChunks));
  };
  await Promise.all([...Array.from({ length: job.clients }, client), ...job.disconnects.map(leaver)]);
  agent.destroy();
  oneShot.destroy();
  port.postMessage({ type: "done", stats: rec.stats() });
}

if (!isMainThread && parentPort && (workerData as { role?: string } | null)?.role === "serve-load") {
  const port = parentPort;
  runJob((workerData as { job: WorkerJob }).job, port).catch((err: unknown) => port.postMessage({ type: "failed", message: err instanceof Error ? err.stack ?? err.message : String(err) }));
}
