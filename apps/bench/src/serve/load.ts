/**
 * The streaming load generator's main side: spreads C clients over worker threads (load-worker.ts),
 * starts them together once every client has made its warm-up request, and merges what they
 * measured. The bench process's own CPU time over the level is reported, so a reader can tell
 * whether the generator kept up.
 */
import { Worker } from "node:worker_threads";
import type { WorkerJob, WorkerStats } from "./load-worker.js";

export interface LoadOptions {
  url: string;
  body: string;
  maxTokens: number;
  /** Steady concurrent streams. */
  concurrency: number;
  seconds: number;
  /** At most this many threads (default min(8, concurrency)). */
  threads?: number;
  warmup: boolean;
  /** Disconnect streams spread over the level: start times in ms after the start, chunks read before aborting. */
  disconnects?: { atMs: number; afterChunks: number }[];
  /** Called once every client is ready, just before they start (e.g. to read the server's CPU time). */
  onStart?: () => void;
}

export interface LoadResult {
  concurrency: number;
  threads: number;
  /** From "go" to the last client's end, seconds. */
  seconds: number;
  requests: number;
  errors: number;
  firstError: string | null;
  tokens: number;
  chunks: number;
  withoutUsage: number;
  tokensPerRequest: Int32Array;
  ttftMs: Float64Array;
  itlMs: Float64Array;
  streamRates: Float64Array;
  disconnectsStarted: number;
  disconnectsAborted: number;
  /** CPU time of the whole bench process (every thread) over the level, in percent of one core. */
  clientCpuPct: number;
}

/** The worker's file: the TypeScript source under the tests, tsup's second entry beside dist/main.js otherwise. */
function workerUrl(): URL {
  return import.meta.url.endsWith(".ts") ? new URL("./load-worker.ts", import.meta.url) : new URL("./serve-load-worker.js", import.meta.url);
}

type FromWorker = { type: "ready"; warmupErrors: number; warmupError: string | null } | { type: "done"; stats: WorkerStats } | { type: "failed"; message: string };

/** Nearest-rank percentile of `values` (p in 0..100); null when empty. */
export function percentile(values: ArrayLike<number>, p: number): number | null {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((ok, fail) => ((resolve = ok), (reject = fail)));
  return { promise, resolve, reject };
}

function concat<T extends Float64Array | Int32Array>(parts: T[], make: (n: number) => T): T {
  const out = make(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Runs one level: `concurrency` streams for `seconds` (plus the disconnect streams), then merges the threads' numbers. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1) throw new Error(`runLoad: concurrency must be a positive integer, got ${o.concurrency}`);
  const threads = Math.max(1, Math.min(o.threads ?? 8, o.concurrency));
  const disconnects = o.disconnects ?? [];
  const workers: Worker[] = [];
  const ready: Promise<void>[] = [];
  const done: Promise<WorkerStats>[] = [];
  for (let w = 0; w < threads; w++) {
    const job: WorkerJob = {
      url: o.url,
      body: o.body,
      maxTokens: o.maxTokens,
      // Clients dealt out as evenly as threads allow.
      clients: Math.floor(o.concurrency / threads) + (w < o.concurrency % threads ? 1 : 0),
      seconds: o.seconds,
      warmup: o.warmup,
      disconnects: disconnects.filter((_, i) => i % threads === w),
    };
    const worker = new Worker(workerUrl(), { workerData: { role: "serve-load", job } });
    workers.push(worker);
    const r = deferred<void>();
    const d = deferred<WorkerStats>();
    // A failure rejects both: before "go" the caller waits on `ready`, after it on `done`.
    const onFail = (e: Error) => (r.reject(e), d.reject(e));
    const onReady = r.resolve;
    const onDone = d.resolve;
    ready.push(r.promise);
    done.push(d.promise);
    worker.on("message", (m: FromWorker) => {
      if (m.type === "ready") {
        if (m.warmupErrors > 0) onFail(new Error(`the warm-up request failed: ${m.warmupError}`));
        else onReady();
      } else if (m.type === "done") onDone(m.stats);
      else onFail(new Error(`a load thread failed: ${m.message}`));
    });
    worker.on("error", (e: Error) => onFail(e));
    worker.on("exit", (code) => code !== 0 && onFail(new Error(`a load thread exited with code ${code}`)));
  }
  // Before "go" nobody waits on `done` yet: a rejection there must not count as unhandled.
  for (const d of done) d.catch(() => {});
  try {
    await Promise.all(ready);
    o.onStart?.();
    const cpu0 = process.cpuUsage();
    const goAt = performance.timeOrigin + performance.now();
    for (const w of workers) w.postMessage("go");
    const stats = await Promise.all(done);
    const cpu = process.cpuUsage(cpu0);
    const seconds = (Math.max(...stats.map((s) => s.endedAt)) - goAt) / 1000;
    const sum = (f: (s: WorkerStats) => number) => stats.reduce((n, s) => n + f(s), 0);
    return {
      concurrency: o.concurrency,
      threads,
      seconds,
      requests: sum((s) => s.requests),
      errors: sum((s) => s.errors),
      firstError: stats.find((s) => s.firstError !== null)?.firstError ?? null,
      tokens: sum((s) => s.tokens),
      chunks: sum((s) => s.chunks),
      withoutUsage: sum((s) => s.withoutUsage),
      tokensPerRequest: concat(stats.map((s) => s.tokensPerRequest), (n) => new Int32Array(n)),
      ttftMs: concat(stats.map((s) => s.ttftMs), (n) => new Float64Array(n)),
      itlMs: concat(stats.map((s) => s.itlMs), (n) => new Float64Array(n)),
      streamRates: concat(stats.map((s) => s.streamRates), (n) => new Float64Array(n)),
      disconnectsStarted: sum((s) => s.disconnectsStarted),
      disconnectsAborted: sum((s) => s.disconnectsAborted),
      clientCpuPct: ((cpu.user + cpu.system) / 1e6 / seconds) * 100,
    };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
