/**
 * serve: the HTTP server (apps/server) under load, in its own process on 127.0.0.1.
 *
 * 1. Throughput and latency, either way:
 *    - streamed (`--stream`, the default on CUDA): C clients spread over worker threads, each POSTing
 *      `stream: true` completions back to back on a keep-alive connection and reading the SSE answer
 *      (serve/load-worker.ts). Per level: generated tokens/s over the level's wall time, time to first
 *      token and inter-token latency p50/p99 as the clients saw them, requests, errors, and the load
 *      generator's own CPU time (so a reader can tell whether it kept up);
 *    - non-streamed (the default elsewhere): autocannon sends fixed-length completions at each
 *      concurrency; time to first token is the server's own histogram (mean over the level).
 *    Every request is `ignore_eos`, so it yields exactly `max_tokens` tokens, and the suite checks that.
 * 2. Memory vs conversation length: one conversation grows by --turn-tokens tokens per request,
 *    each request continuing from the previous one's state handle, so nothing is resent; at each
 *    length the server's state bytes and RSS are read from /health.
 * 3. Soak (`--soak MINUTES`): steady streamed load while --disconnects extra clients start streams and
 *    abort them mid-stream, spread over the time; the server's RSS and device memory, read idle after
 *    a warm-up and again idle at the end, must agree within 5%.
 *
 * Needs `pnpm build` (it runs apps/server/dist/main.js). The model: --model DIR, else --shape 436m (made
 * once under runs/bench/serve-436m), else runs/default/model, else a small bench model (runs/bench/serve-model).
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BACKEND_NAMES, isBackendName } from "@lightning-ts/backends";
import { type TnlConfig, readConfig, stateBytesPerSequence } from "@lightning-ts/tnl";
import autocannon from "autocannon";
import { writeLineCharts } from "../chart.js";
import { table } from "../report.js";
import { runLoad, percentile, type LoadResult } from "../serve/load.js";
import { SHAPES, type ShapeName, shapeModel } from "../serve/models.js";
import { deviceName, gpuProcessBytes, health, type Health, processCpuSeconds, type ServerProcess, startServer, stopServer, waitIdle } from "../serve/server.js";
import { intList, result, setTimedSpan, type BenchResult, type Suite } from "../suite.js";

/** The repository root: the nearest folder up from here with pnpm-workspace.yaml (this file runs from src/ and from dist/). */
function findRoot(from: string): string {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) if (existsSync(join(dir, "pnpm-workspace.yaml"))) return dir;
  throw new Error(`serve: no pnpm-workspace.yaml above ${from}`);
}
/** Looked up when the suite runs, so that every other suite of a bundle works outside a checkout. */
let root: string | undefined;
const repositoryRoot = (): string => (root ??= findRoot(dirname(fileURLToPath(import.meta.url))));
const here = (p: string) => resolve(process.env.INIT_CWD ?? process.cwd(), p);

export interface ServeOptions {
  model?: string;
  shape?: string;
  backend?: string;
  dtype?: string;
  maxBatch?: number;
  serverArgs?: string;
  serverMain?: string;
  concurrency?: number[];
  maxTokens?: number;
  stream?: boolean;
  levelSeconds: number;
  clientThreads: number;
  requestsPerConnection: number;
  levelTimeout: number;
  load: boolean;
  memory: boolean;
  lengths: number[];
  turnTokens: number;
  soak?: number;
  disconnects: number;
  soakConcurrency: number;
  soakWarmup: number;
  out?: string;
}

/** The options with every default filled in. */
interface Resolved extends ServeOptions {
  backend: string;
  concurrency: number[];
  maxTokens: number;
  stream: boolean;
  maxBatch: number;
}

// The same short prompt each time: shorter than a prefix-cache block, so the cache does not flatter the numbers.
const PROMPT = "Call me Ishmael. Some years ago, never mind how long";

const positive = (name: string, v: unknown, integer = true) => {
  if (typeof v !== "number" || !(v > 0) || (integer && !Number.isInteger(v))) throw new Error(`serve: ${name} must be a positive ${integer ? "integer" : "number"}, got ${String(v)}`);
};

function resolveOptions(o: ServeOptions, backends: readonly string[]): Resolved {
  const backend = o.backend ?? backends[0] ?? "cpu";
  if (!isBackendName(backend)) throw new Error(`serve: --backend must be one of ${BACKEND_NAMES.join(", ")}, got "${backend}"`);
  if (o.shape !== undefined && !(SHAPES as readonly string[]).includes(o.shape)) throw new Error(`serve: --shape must be one of ${SHAPES.join(", ")}, got "${o.shape}"`);
  if (o.shape !== undefined && o.model !== undefined) throw new Error("serve: give --model or --shape, not both");
  const stream = o.stream ?? backend === "cuda";
  const concurrency = o.concurrency ?? (backend === "cuda" ? [1, 2, 4, 8, 16, 32, 64, 128, 256] : [1, 2, 4, 8, 16, 32, 64]);
  const maxTokens = o.maxTokens ?? (stream ? 128 : 32);
  for (const [name, v] of [["--max-tokens", maxTokens], ["--client-threads", o.clientThreads], ["--soak-concurrency", o.soakConcurrency]] as const) positive(name, v);
  positive("--level-seconds", o.levelSeconds, false);
  positive("--soak-warmup", o.soakWarmup, false);
  if (!Number.isInteger(o.disconnects) || o.disconnects < 0) throw new Error(`serve: --disconnects must be an integer >= 0, got ${String(o.disconnects)}`);
  if (o.soak !== undefined) positive("--soak", o.soak, false);
  if (o.maxBatch !== undefined) positive("--max-batch", o.maxBatch);
  const maxBatch = o.maxBatch ?? Math.max(...concurrency, o.soak !== undefined ? o.soakConcurrency : 1);
  return { ...o, backend, stream, concurrency, maxTokens, maxBatch };
}

type Base = Pick<BenchResult, "suite" | "backend" | "device" | "dtype" | "ok">;

function streamBody(maxTokens: number): string {
  // include_usage: the last chunk carries the server's token count. A token whose text is not complete
  // yet (part of a UTF-8 character, a special token) sends no chunk, so chunks alone can undercount.
  return JSON.stringify({ prompt: PROMPT, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } });
}

/** The latency and throughput fields of a streamed load. */
function streamFields(r: LoadResult, maxTokens: number): Partial<BenchResult> {
  const exact = r.tokensPerRequest.every((n) => n === maxTokens);
  const round = (x: number | null) => (x === null ? null : Math.round(x * 1000) / 1000);
  return {
    concurrency: r.concurrency,
    tokens_per_s: r.tokens / r.seconds,
    ttft_p50_ms: round(percentile(r.ttftMs, 50)),
    ttft_p99_ms: round(percentile(r.ttftMs, 99)),
    itl_p50_ms: round(percentile(r.itlMs, 50)),
    itl_p99_ms: round(percentile(r.itlMs, 99)),
    requests: r.requests,
    errors: r.errors,
    max_tokens: maxTokens,
    tokens: r.tokens,
    chunks: r.chunks,
    tokens_exact: exact,
    stream_tokens_per_s: percentile(r.streamRates, 50),
    seconds: r.seconds,
    client_threads: r.threads,
    client_cpu_pct: r.clientCpuPct,
    // client_cpu_pct is in percent of one core: out of host_cores * 100 for the whole machine.
    host_cores: availableParallelism(),
    ...(r.withoutUsage > 0 ? { requests_without_usage: r.withoutUsage } : {}),
    ...(r.firstError !== null ? { error: r.firstError } : {}),
  };
}

/** Streamed load at each concurrency. */
async function streamPhase(s: ServerProcess, o: Resolved, base: Base, log: (l: string) => void): Promise<BenchResult[]> {
  const rows: BenchResult[] = [];
  const body = streamBody(o.maxTokens);
  for (const c of o.concurrency) {
    let cpu0: number | null = null;
    // The server's own time to first token (request arrival → first token, its /metrics) over the
    // timed part, beside the clients' (request sent → first chunk read): what the HTTP path adds;
    // and of it, the time queued before admission and the decode steps from admission to the token.
    const start: { totals?: Promise<ServerTotals>; at?: number } = {};
    try {
      const onStart = () => {
        cpu0 = processCpuSeconds(s.child.pid);
        start.totals = serverTotals(s.url);
        start.at = Date.now();
      };
      const r = await runLoad({ url: s.url, body, maxTokens: o.maxTokens, concurrency: c, seconds: o.levelSeconds, threads: o.clientThreads, warmup: true, onStart });
      const timed = [start.at ?? Date.now() - r.seconds * 1000, Date.now()] as const;
      const cpu1 = processCpuSeconds(s.child.pid);
      const [t0, t1] = await Promise.all([start.totals ?? Promise.resolve(null), serverTotals(s.url)]);
      const means = serverMeans(t0, t1);
      const f = streamFields(r, o.maxTokens);
      const ms = (x: unknown) => (typeof x === "number" ? `${x.toFixed(2)} ms` : "–");
      const serverCpu = cpu0 !== null && cpu1 !== null ? ((cpu1 - cpu0) / r.seconds) * 100 : null;
      log(
        `serve: stream, concurrency ${c}: ${r.requests} requests, ${(r.tokens / r.seconds).toFixed(0)} tokens/s, TTFT p50 ${ms(f.ttft_p50_ms)} ` +
          `(server mean ${ms(means.ttftMs)}: queued ${ms(means.queueMs)}, ${means.steps === null ? "–" : means.steps.toFixed(1)} steps), ITL p50 ${ms(f.itl_p50_ms)}, ` +
          `client CPU ${r.clientCpuPct.toFixed(0)}%, server CPU ${serverCpu === null ? "–" : serverCpu.toFixed(0)}%, ${r.errors} errors`,
      );
      const row = result({
        ...base,
        impl: "http stream",
        ...f,
        server_cpu_pct: serverCpu,
        server_ttft_mean_ms: means.ttftMs,
        server_queue_mean_ms: means.queueMs,
        server_steps_to_first_token: means.steps,
        ok: r.errors === 0 && f.tokens_exact === true && r.requests > 0,
      });
      // The GPU's clocks (--gpu-clocks) over the timed part of the level.
      setTimedSpan(row, timed);
      rows.push(row);
    } catch (err) {
      log(`serve: stream, concurrency ${c}: ${(err as Error).message}`);
      rows.push(result({ ...base, impl: "http stream", concurrency: c, ok: false, error: (err as Error).message }));
    }
  }
  return rows;
}

/** Device bytes the server's allocator holds (live + pooled), where /health reports them. */
const deviceBytes = (h: Health) => (h.backend_memory ? h.backend_memory.liveBytes + h.backend_memory.pooledBytes : null);
const mib = (b: number | null) => (b === null ? null : b / 2 ** 20);
const ratio = (end: number | null, warm: number | null) => (end === null || warm === null || warm === 0 ? null : end / warm);
const within5 = (r: number | null) => r !== null && Math.abs(r - 1) <= 0.05;

/** Evenly spread disconnects, each aborting after a seeded number of token chunks in [1, max(1, N/4)]. */
export function disconnectPlan(n: number, seconds: number, maxTokens: number, seed = 1): { atMs: number; afterChunks: number }[] {
  let x = seed >>> 0 || 1;
  const next = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>> 0) / 2 ** 32);
  const most = Math.max(1, Math.floor(maxTokens / 4));
  return Array.from({ length: n }, (_, i) => ({ atMs: ((i + 0.5) * seconds * 1000) / n, afterChunks: 1 + Math.floor(next() * most) }));
}

/** Steady streamed load with clients leaving mid-stream; memory read idle after warm-up and idle at the end. */
async function soakPhase(s: ServerProcess, o: Resolved, base: Base, log: (l: string) => void): Promise<BenchResult> {
  const body = streamBody(o.maxTokens);
  const c = o.soakConcurrency;
  const seconds = o.soak! * 60;
  log(`serve: soak: warm-up, ${c} streams for ${o.soakWarmup} s`);
  const warm = await runLoad({ url: s.url, body, maxTokens: o.maxTokens, concurrency: c, seconds: o.soakWarmup, threads: o.clientThreads, warmup: true });
  const idle0 = await waitIdle(s.url, 60_000);
  const h0 = await health(s.url);
  const smi0 = gpuProcessBytes(s.child.pid);
  log(`serve: soak: after warm-up RSS ${mib(h0.rss_bytes)!.toFixed(0)} MiB, device ${mib(deviceBytes(h0))?.toFixed(0) ?? "not reported"} MiB; ${o.soak} min with ${o.disconnects} disconnects`);
  let rssMax = h0.rss_bytes;
  let deviceMax = deviceBytes(h0);
  // RSS at the end of each minute under load: a plateau and a leak end alike in one ratio, not in this.
  const rssByMinute: number[] = [];
  const start = Date.now();
  let polling = true;
  const poll = (async () => {
    while (polling) {
      await new Promise((ok) => setTimeout(ok, 2000));
      const h = await health(s.url).catch(() => undefined);
      if (!h) continue;
      rssMax = Math.max(rssMax, h.rss_bytes);
      if (Date.now() - start >= (rssByMinute.length + 1) * 60_000) rssByMinute.push(Math.round(mib(h.rss_bytes)!));
      const d = deviceBytes(h);
      if (d !== null) deviceMax = Math.max(deviceMax ?? 0, d);
    }
  })();
  let r: LoadResult;
  try {
    r = await runLoad({ url: s.url, body, maxTokens: o.maxTokens, concurrency: c, seconds, threads: o.clientThreads, warmup: false, disconnects: disconnectPlan(o.disconnects, seconds, o.maxTokens) });
  } finally {
    polling = false;
    await poll;
  }
  const drained = await waitIdle(s.url, 60_000);
  const h1 = await health(s.url);
  const smi1 = gpuProcessBytes(s.child.pid);
  const f = streamFields(r, o.maxTokens);
  const rssRatio = ratio(h1.rss_bytes, h0.rss_bytes);
  const deviceRatio = ratio(deviceBytes(h1), deviceBytes(h0));
  const memoryOk = within5(rssRatio) && (h0.backend_memory === undefined || within5(deviceRatio));
  const ok = warm.errors === 0 && r.errors === 0 && f.tokens_exact === true && r.disconnectsAborted === o.disconnects && idle0 && drained && memoryOk;
  log(`serve: soak: ${r.requests} requests, ${r.disconnectsAborted}/${o.disconnects} disconnects, RSS end/warm ${rssRatio?.toFixed(3)}, device end/warm ${deviceRatio?.toFixed(3) ?? "not reported"}`);
  log(`serve: soak: RSS under load at the end of each minute, MiB: ${rssByMinute.join(", ")}`);
  return result({
    ...base,
    impl: "soak",
    ...f,
    minutes: o.soak,
    disconnects: o.disconnects,
    disconnects_aborted: r.disconnectsAborted,
    warmup_errors: warm.errors,
    drained,
    active_end: h1.active,
    rss_warm_mib: mib(h0.rss_bytes),
    rss_end_mib: mib(h1.rss_bytes),
    rss_max_mib: mib(rssMax),
    rss_by_minute_mib: rssByMinute,
    rss_ratio: rssRatio,
    gpu_warm_mib: mib(deviceBytes(h0)),
    gpu_end_mib: mib(deviceBytes(h1)),
    gpu_max_mib: mib(deviceMax),
    gpu_ratio: deviceRatio,
    gpu_live_warm_mib: mib(h0.backend_memory?.liveBytes ?? null),
    gpu_live_end_mib: mib(h1.backend_memory?.liveBytes ?? null),
    gpu_smi_warm_mib: mib(smi0),
    gpu_smi_end_mib: mib(smi1),
    ...(h0.backend_memory === undefined ? { note: "/health reports no backend_memory: device memory not judged" } : {}),
    ok,
  });
}

/** Sum and count of the server's time-to-first-token histogram. */
async function ttftTotals(url: string): Promise<{ sum: number; count: number }> {
  const t = await serverTotals(url);
  return { sum: t.ttftSum, count: t.ttftCount };
}

/** The server's running totals behind a time to first token (its /metrics). */
interface ServerTotals {
  ttftSum: number;
  ttftCount: number;
  admitted: number;
  queueSeconds: number;
  firstTokens: number;
  stepsToFirstToken: number;
}

async function serverTotals(url: string): Promise<ServerTotals> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (name: string) => Number(/^(\S+) (\S+)$/m.exec(text.split("\n").find((l) => l.startsWith(name + " ")) ?? "x 0")![2]);
  return {
    ttftSum: value("lightning_time_to_first_token_seconds_sum"),
    ttftCount: value("lightning_time_to_first_token_seconds_count"),
    admitted: value("lightning_admitted_sequences_total"),
    queueSeconds: value("lightning_queue_seconds_total"),
    firstTokens: value("lightning_first_tokens_total"),
    stepsToFirstToken: value("lightning_steps_to_first_token_total"),
  };
}

/** Means over what happened between two readings: time to first token and time queued (ms), decode steps to the first token. */
function serverMeans(a: ServerTotals | null, b: ServerTotals): { ttftMs: number | null; queueMs: number | null; steps: number | null } {
  const per = (sum: (t: ServerTotals) => number, count: (t: ServerTotals) => number, scale: number) =>
    a && count(b) > count(a) ? ((sum(b) - sum(a)) / (count(b) - count(a))) * scale : null;
  return {
    ttftMs: per((t) => t.ttftSum, (t) => t.ttftCount, 1000),
    queueMs: per((t) => t.queueSeconds, (t) => t.admitted, 1000),
    steps: per((t) => t.stepsToFirstToken, (t) => t.firstTokens, 1),
  };
}

/** The fields of a completion response that this suite reads. */
interface Completion {
  choices: { state: string }[];
  usage: { prompt_tokens: number };
}

async function post(url: string, body: unknown): Promise<Completion> {
  const res = await fetch(`${url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = (await res.json()) as Completion;
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

/** One autocannon level, stopped after `timeoutS` seconds whatever the count. */
function load(url: string, connections: number, amount: number, body: string, timeoutS: number): Promise<autocannon.Result> {
  return new Promise((ok, fail) => {
    const instance = autocannon(
      { url: `${url}/v1/completions`, method: "POST", headers: { "content-type": "application/json" }, body, connections, amount, timeout: timeoutS },
      (err, res) => (err ? fail(err instanceof Error ? err : new Error(String(err))) : ok(res)),
    );
    const timer = setTimeout(() => instance.stop(), timeoutS * 1000);
    instance.on("done", () => clearTimeout(timer));
  });
}

function describeConfig(c: TnlConfig): string {
  return `vocab ${c.vocabSize}, d_model ${c.dModel}, ${c.numLayers} layers, ${c.numHeads} heads, glu ${c.gluDim}, LRPE on layer(s) ${c.lrpe.flatMap((on, l) => (on ? [l] : [])).join(", ")}`;
}

/** Throughput and latency at each concurrency, on one fixed-length request. */
async function loadPhase(url: string, o: Resolved, base: Base, log: (l: string) => void): Promise<BenchResult[]> {
  const body = JSON.stringify({ prompt: PROMPT, max_tokens: o.maxTokens, temperature: 0, ignore_eos: true });
  await load(url, 1, 2, body, o.levelTimeout); // warm-up: JIT
  const rows: BenchResult[] = [];
  for (const c of o.concurrency) {
    const before = await ttftTotals(url);
    const r = await load(url, c, Math.max(16, c * o.requestsPerConnection), body, o.levelTimeout);
    const after = await ttftTotals(url);
    const served = r["2xx"];
    log(`serve: concurrency ${c}: ${served} requests in ${r.duration.toFixed(1)} s`);
    rows.push(
      result({
        ...base,
        ok: r.non2xx === 0 && r.errors === 0,
        impl: "http load",
        concurrency: c,
        requests: served,
        tokens_per_s: (served * o.maxTokens) / r.duration,
        ttft_ms: after.count > before.count ? ((after.sum - before.sum) / (after.count - before.count)) * 1000 : null,
        p50_ms: r.latency.p50,
        p99_ms: r.latency.p99,
      }),
    );
  }
  return rows;
}

/** One conversation grown through state handles; memory read at each target length. */
async function memoryPhase(url: string, o: ServeOptions, base: Base, config: TnlConfig, impl: string, log: (l: string) => void): Promise<BenchResult[]> {
  const rows: BenchResult[] = [];
  const ids = (n: number, turn: number) => Array.from({ length: n }, (_, i) => 3 + ((turn * 7919 + i * 31) % (config.vocabSize - 3)));
  let handle: string | undefined;
  let length = 0;
  const targets = [...o.lengths].sort((a, b) => a - b);
  for (let turn = 0; length < targets[targets.length - 1]; turn++) {
    // A continued turn also feeds the previous turn's one generated token, so it sends one token less.
    const prompt = ids(handle ? o.turnTokens - 1 : o.turnTokens, turn);
    const t0 = performance.now();
    const r = await post(url, { prompt, max_tokens: 1, temperature: 0, ignore_eos: true, return_state: true, ...(handle ? { state: handle } : {}) });
    const ms = performance.now() - t0;
    handle = r.choices[0].state;
    const fed = r.usage.prompt_tokens;
    length += fed;
    if (!targets.some((t) => t <= length && t > length - fed)) continue;
    const h = await health(url);
    log(`serve: ${impl} at ${length} tokens: RSS ${(h.rss_bytes / 2 ** 20).toFixed(0)} MiB`);
    rows.push(
      result({
        ...base,
        impl,
        T: length,
        state_bytes: h.state_bytes.handles,
        rss_mib: h.rss_bytes / 2 ** 20,
        turn_ms: ms,
        // What a softmax Transformer of the same width and depth would cache at this length (f32 K and V).
        kv_cache_bytes: 2 * config.numLayers * length * config.dModel * 4,
      }),
    );
  }
  // The state must not grow with the conversation.
  if (new Set(rows.map((r) => r.state_bytes)).size !== 1) rows.forEach((r) => (r.ok = false));
  return rows;
}

const num = (v: string) => Number(v);

export const serveSuite: Suite = {
  name: "serve",
  description: "the HTTP server under load on loopback: tokens/s, time to first token, inter-token latency by concurrency (streamed or not); memory vs conversation length; a soak with client disconnects",
  defaults: { warmup: 1, reps: 1 },
  configure(command) {
    command
      .option("--model <dir>", "TNL model directory (default: runs/default/model, else a small bench model)")
      .option("--shape <name>", `bench model to create once and serve, instead of --model (${SHAPES.join(", ")}; 436m: docs/PERFORMANCE.md §3, bf16, GPT-2 tokenizer)`)
      .option("--backend <name>", `the server's backend (${BACKEND_NAMES.join(", ")}; default: the first of --backends, cpu)`)
      .option("--dtype <dtype>", "the server's weights and compute dtype (default: the server's for the backend)")
      .option("--max-batch <n>", "the server's --max-batch (default: the largest concurrency)", num)
      .option("--server-args <args>", 'more server options, space-separated (e.g. "--decode-prefill 0")')
      .option("--server-main <file>", "the server's entry point (default: apps/server/dist/main.js)")
      .option("--concurrency <list>", "concurrent clients, comma-separated (default 1,…,64; on cuda 1,…,256)", intList)
      .option("--max-tokens <n>", "tokens generated per request (default: 128 streamed, 32 otherwise)", num)
      .option("--stream", "streamed completions read by SSE clients in worker threads (the default on cuda)")
      .option("--no-stream", "non-streamed completions through autocannon (the default elsewhere)")
      .option("--level-seconds <s>", "streamed: seconds each concurrency level runs (clients finish the request they are in)", num, 15)
      .option("--client-threads <n>", "streamed: most worker threads for the clients (min with the concurrency)", num, 8)
      .option("--requests-per-connection <n>", "autocannon: requests per connection at each level", num, 4)
      .option("--level-timeout <s>", "autocannon: time limit of one concurrency level in seconds", num, 120)
      .option("--no-load", "skip the throughput and latency levels (e.g. for a soak alone)")
      .option("--no-memory", "skip the memory vs conversation length phase")
      .option("--lengths <list>", "conversation lengths in tokens at which memory is read", intList, [1024, 2048, 4096, 8192, 16384, 32768])
      .option("--turn-tokens <n>", "new tokens sent per conversation turn", num, 1024)
      .option("--soak <minutes>", "soak: minutes of steady streamed load with client disconnects", num)
      .option("--disconnects <n>", "soak: clients that start a stream and abort it mid-stream, spread over the soak", num, 1000)
      .option("--soak-concurrency <n>", "soak: steady streams", num, 64)
      .option("--soak-warmup <s>", "soak: seconds of load before memory is first read", num, 30)
      .option("--out <prefix>", "write <prefix>.md, <prefix>.json and <prefix>.svg (e.g. docs/benchmarks/serve)");
  },
  async run(ctx, raw) {
    const o = resolveOptions(raw as unknown as ServeOptions, ctx.backends);
    const ROOT = repositoryRoot();
    const trained = join(ROOT, "runs/default/model");
    const model = o.model ? here(o.model) : o.shape ? await shapeModel(o.shape as ShapeName, ROOT, ctx.log) : existsSync(join(trained, "config.json")) ? trained : await shapeModel("small", ROOT, ctx.log);
    const config = await readConfig(model);
    const extraArgs = o.serverArgs?.split(/\s+/).filter(Boolean);
    ctx.log(`serve: starting the server (${o.backend}${o.dtype ? `, ${o.dtype}` : ""}, --max-batch ${o.maxBatch}) on ${model}`);
    const server = await startServer(ROOT, { main: o.serverMain ? here(o.serverMain) : undefined, model, backend: o.backend, dtype: o.dtype, maxBatch: o.maxBatch, extraArgs, log: ctx.log });
    const results: BenchResult[] = [];
    try {
      const base = { suite: "serve", backend: o.backend, device: deviceName(o.backend, await health(server.url)), dtype: server.dtype, ok: true };
      if (o.load) results.push(...(o.stream ? await streamPhase(server, o, base, ctx.log) : await loadPhase(server.url, o, base, ctx.log)));
      if (o.memory) results.push(...(await memoryPhase(server.url, o, base, config, "conversation", ctx.log)));
      if (o.soak !== undefined) results.push(await soakPhase(server, o, base, ctx.log));
    } finally {
      await stopServer(server);
    }
    if (o.out) await writeReport(here(o.out), results, model, config, o);
    return results;
  },
  columns: [
    ["case", "impl"],
    ["concurrency", "concurrency"],
    ["tokens/s", "tokens_per_s"],
    ["TTFT p50 ms", "ttft_p50_ms"],
    ["TTFT p99 ms", "ttft_p99_ms"],
    ["ITL p50 ms", "itl_p50_ms"],
    ["ITL p99 ms", "itl_p99_ms"],
    ["requests", "requests"],
    ["errors", "errors"],
    ["client CPU %", "client_cpu_pct"],
    ["TTFT mean ms", "ttft_ms"],
    ["p50 ms", "p50_ms"],
    ["p99 ms", "p99_ms"],
    ["length", "T"],
    ["state bytes", "state_bytes"],
    ["RSS MiB", "rss_mib"],
    ["RSS end/warm", "rss_ratio"],
    ["device end/warm", "gpu_ratio"],
    ["ok", "ok"],
  ],
};

const STREAM_COLUMNS = [
  ["concurrency", "concurrency"],
  ["tokens/s", "tokens_per_s"],
  ["per stream tokens/s (p50)", "stream_tokens_per_s"],
  ["TTFT p50 ms", "ttft_p50_ms"],
  ["TTFT p99 ms", "ttft_p99_ms"],
  ["server TTFT mean ms", "server_ttft_mean_ms"],
  ["of it queued, ms", "server_queue_mean_ms"],
  ["decode steps to first token", "server_steps_to_first_token"],
  ["ITL p50 ms", "itl_p50_ms"],
  ["ITL p99 ms", "itl_p99_ms"],
  ["requests", "requests"],
  ["errors", "errors"],
  ["client threads", "client_threads"],
  ["client CPU %", "client_cpu_pct"],
  ["server CPU %", "server_cpu_pct"],
  ["ok", "ok"],
] as const;

const SOAK_COLUMNS = [
  ["minutes", "minutes"],
  ["concurrency", "concurrency"],
  ["tokens/s", "tokens_per_s"],
  ["requests", "requests"],
  ["disconnects", "disconnects_aborted"],
  ["errors", "errors"],
  ["RSS warm MiB", "rss_warm_mib"],
  ["RSS end MiB", "rss_end_mib"],
  ["RSS max MiB", "rss_max_mib"],
  ["RSS end/warm", "rss_ratio"],
  ["device warm MiB", "gpu_warm_mib"],
  ["device end MiB", "gpu_end_mib"],
  ["device end/warm", "gpu_ratio"],
  ["nvidia-smi warm MiB", "gpu_smi_warm_mib"],
  ["nvidia-smi end MiB", "gpu_smi_end_mib"],
  ["ok", "ok"],
] as const;

const LOAD_COLUMNS = [
  ["concurrency", "concurrency"],
  ["tokens/s", "tokens_per_s"],
  ["TTFT mean ms", "ttft_ms"],
  ["p50 ms", "p50_ms"],
  ["p99 ms", "p99_ms"],
  ["requests", "requests"],
  ["ok", "ok"],
] as const;

const MEMORY_COLUMNS = [
  ["length", "T"],
  ["state bytes", "state_bytes"],
  ["RSS MiB", "rss_mib"],
  ["turn ms", "turn_ms"],
  ["softmax KV bytes", "kv_cache_bytes"],
  ["ok", "ok"],
] as const;

async function writeReport(prefix: string, results: BenchResult[], model: string, config: TnlConfig, o: Resolved): Promise<void> {
  mkdirSync(dirname(prefix), { recursive: true });
  writeFileSync(`${prefix}.json`, `${JSON.stringify(results, null, 2)}\n`);
  const load = results.filter((r) => r.impl === "http load");
  const stream = results.filter((r) => r.impl === "http stream");
  const soak = results.filter((r) => r.impl === "soak");
  const conv = results.filter((r) => String(r.impl).startsWith("conversation"));
  const pts = (rows: BenchResult[], x: string, series: string, y: string, scale = 1) => rows.map((r) => ({ series, x: r[x] as number, y: r[y] === null || r[y] === undefined ? null : (r[y] as number) * scale }));
  const panels = [];
  if (load.length) {
    panels.push({ title: "Throughput", xTitle: "concurrent connections", yTitle: "generated tokens/s", points: pts(load, "concurrency", "tokens/s", "tokens_per_s") });
    panels.push({ title: "Latency", xTitle: "concurrent connections", yTitle: "ms", points: [...pts(load, "concurrency", "p50", "p50_ms"), ...pts(load, "concurrency", "p99", "p99_ms"), ...pts(load, "concurrency", "TTFT (mean)", "ttft_ms")] });
  }
  if (stream.length) {
    panels.push({ title: "Streamed throughput", xTitle: "concurrent streams", yTitle: "generated tokens/s", points: pts(stream, "concurrency", "tokens/s", "tokens_per_s") });
    panels.push({
      title: "Streamed latency",
      xTitle: "concurrent streams",
      yTitle: "ms",
      points: [...pts(stream, "concurrency", "TTFT p50", "ttft_p50_ms"), ...pts(stream, "concurrency", "TTFT p99", "ttft_p99_ms"), ...pts(stream, "concurrency", "ITL p50", "itl_p50_ms"), ...pts(stream, "concurrency", "ITL p99", "itl_p99_ms")],
    });
  }
  if (conv.length) {
    panels.push({
      title: "Memory vs conversation length",
      xTitle: "tokens in the conversation",
      yTitle: "MiB",
      points: [
        ...pts(conv, "T", "server RSS", "rss_mib"),
        ...pts(conv, "T", "TNL state", "state_bytes", 2 ** -20),
        ...pts(conv, "T", "softmax KV cache (same size model)", "kv_cache_bytes", 2 ** -20),
      ],
    });
  }
  const name = prefix.split("/").pop()!;
  if (panels.length) await writeLineCharts(`${prefix}.svg`, "lightning-ts server on loopback", panels);
  const section = (title: string, rows: BenchResult[], columns: readonly (readonly [string, string])[], text: string[]) => (rows.length ? [`## ${title}`, "", ...text, "", table(rows, columns), ""] : []);
  const errors = results.filter((r) => typeof r.error === "string").map((r) => `- ${r.impl}${typeof r.concurrency === "number" ? ` at concurrency ${r.concurrency}` : ""}: ${String(r.error)}`);
  const md = [
    "# Serving: throughput, latency and memory (apps/server)",
    "",
    `- Date: ${new Date().toISOString().slice(0, 10)}`,
    `- Device: ${results[0]?.device ?? "?"} (${o.backend} backend, ${results[0]?.dtype ?? "?"}), Node ${process.version}; server and load generator share the machine`,
    `- Model: \`${model.startsWith(repositoryRoot()) ? model.slice(repositoryRoot().length + 1) : model}\`: ${describeConfig(config)}; recurrent state ${stateBytesPerSequence(config)} bytes per sequence`,
    "- Command, from the repository root (after `pnpm build`):",
    "",
    "```",
    `pnpm bench serve ${process.argv.slice(3).join(" ")}`.trim(),
    "```",
    "",
    ...section("Streamed load", stream, STREAM_COLUMNS, [
      `Each client POSTs /v1/completions with a one-sentence prompt, \`max_tokens: ${o.maxTokens}\`, \`ignore_eos: true\` (every request generates exactly ${o.maxTokens} tokens,`,
      "checked against the server's usage count), greedy, `stream: true`, back to back on a keep-alive connection, for the level's seconds after one",
      "unmeasured request per client. tokens/s counts generated tokens over the level's wall time; TTFT is from sending the request to the first chunk",
      "with text; ITL is the gap between consecutive such chunks; per-stream tokens/s is (tokens - 1) / (end - first token), the median over requests.",
      "Client CPU is the load generator's (all its threads) in percent of one core; server CPU the server process's.",
    ]),
    ...section("Non-streamed load (autocannon)", load, LOAD_COLUMNS, [
      `autocannon on 127.0.0.1, POST /v1/completions with a one-sentence prompt and \`max_tokens: ${o.maxTokens}\`, \`ignore_eos: true\`, greedy;`,
      `${o.requestsPerConnection} requests per connection (at least 16) per level. tokens/s counts generated tokens over the level's wall time; p50/p99 are`,
      "whole-request latencies from autocannon; TTFT is the server's mean time from request to first token.",
    ]),
    ...section("Memory vs conversation length", conv, MEMORY_COLUMNS, [
      `One conversation grown ${o.turnTokens} tokens per request, each request continuing from the previous one's \`state\` handle (nothing`,
      "is resent). `state bytes` is what the server holds for the conversation; RSS is the server process's resident memory. `softmax KV bytes` is, for",
      "comparison, the f32 key/value cache a softmax Transformer of the same width and depth would hold at that length.",
    ]),
    ...section("Soak", soak, SOAK_COLUMNS, [
      `${o.soakConcurrency} steady streams for ${o.soak ?? 0} minutes while ${o.disconnects} more clients each start a stream and abort it after a few chunks,`,
      `spread evenly over the time. Memory is read from /health with the server idle: after ${o.soakWarmup} s of warm-up load and after the soak.`,
      "`device` is the backend allocator's live + pooled bytes (/health `backend_memory`); ok needs RSS and device within 5%, no errors, every",
      "disconnect made and the server idle again at the end.",
      ...soak.filter((r) => typeof r.note === "string").map((r) => `Note: ${String(r.note)}.`),
    ]),
    ...(errors.length ? ["## Errors", "", ...errors, ""] : []),
    ...(panels.length ? [`![throughput, latency and memory](${name}.svg)`, ""] : []),
    `Results as JSON in [${name}.json](${name}.json).`,
    "",
  ].join("\n");
  writeFileSync(`${prefix}.md`, md);
}
