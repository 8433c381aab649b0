/**
 * attention: Lightning Attention forward and forward+backward over a sweep of T at a fixed number
 * of tokens per call (B·T), per backend and implementation, beside causal softmax attention — the
 * docs/PERFORMANCE.md shape, scaled down by options for the CPU. Each case is first checked against a
 * float64 oracle on its own inputs; a case that fails the check is reported as failed, not timed.
 * Writes the table, a JSON file and an SVG chart of tokens/s and memory vs T.
 */
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import type { Backend, DType, Tensor } from "@lightning-ts/tensor";
import type { ForwardVariant } from "@lightning-ts/webgpu";
import { SingleBar, Presets } from "cli-progress";
import { writeLineCharts } from "../chart.js";
import { outputPath } from "../report.js";
import { attentionImpls, type AttentionImpl, type AttentionInputs } from "../attention/impls.js";
import { checkLightning, checkSoftmax, type HostInputs } from "../attention/oracle.js";
import { beginTimed, intList, lastTimedSpan, result, setTimedSpan, summarise, type BenchResult, type Suite, type Timing, timeRound, warmUp, deviceTimer } from "../suite.js";

/** The WebGPU forward variants (kernelChoices.forward of @lightning-ts/webgpu). */
type Forward = ForwardVariant;

interface AttentionOptions {
  t: number[];
  tokens: number;
  heads: number;
  dim: number;
  dtype: DType;
  impls?: string[];
  maxQuadraticT?: number;
  backward: boolean;
  chart: string;
  webgpuForward?: string[];
}

/** Relative RMS error bounds against float64, by storage dtype (docs/PERFORMANCE.md: ≤ 5e-3 for bf16). */
const MAX_REL_ERR: Partial<Record<DType, number>> = { f32: 1e-4, f16: 5e-3, bf16: 5e-3 };

/**
 * Tokens per case the float64 oracle checks, per head: CHECKED_TOKENS · H (b, h, t) triples in all
 * at D = E = 64, fewer in proportion to D·E above (each triple's state update is D·E products: at
 * D = E = 128 the full budget took over a minute of the host per case, longer than the timed runs).
 */
const CHECKED_TOKENS = 16384;
const CHECKED_DE = 64 * 64;

/**
 * Sequences (b·H + h) the oracle checks: all of them when small, else evenly spaced ones, first and
 * last included. Sequences, not batch entries: at T = 65,536 one batch entry is already four times
 * the budget (checking all its heads took minutes on the host), while a few whole heads keep every
 * position of the long scan checked.
 */
function checkedSequences(B: number, H: number, T: number, DE: number): number[] {
  const n = Math.max(1, Math.min(B * H, Math.floor((CHECKED_TOKENS * H * Math.min(1, CHECKED_DE / DE)) / T)));
  if (n === B * H) return Array.from({ length: n }, (_, i) => i);
  if (n === 1) return [0];
  return [...new Set(Array.from({ length: n }, (_, i) => Math.round((i * (B * H - 1)) / (n - 1))))];
}

/** Sequences `picked` of `t` (B, H, T, ·), concatenated, as float64. */
async function host(t: Tensor, picked: readonly number[]): Promise<Float64Array> {
  const all = await t.data();
  const [B, H] = t.shape;
  const per = t.size / (B * H);
  const out = new Float64Array(per * picked.length);
  picked.forEach((s, i) => out.set(all.subarray(s * per, (s + 1) * per), i * per));
  return out;
}

interface Measured extends Timing {
  /** Peak bytes held during a call above what was live before it; null where the backend cannot say. */
  peakBytes: number | null;
}

/**
 * Times `fn` (which must leave no tensors alive) `reps` times after warm-up, waiting for the
 * device each time, and records the memory peak over the timed calls. On a GPU (WebGPU with
 * timestamp queries, CUDA with events) the times are the device's, between marks around the call.
 */
async function timeCase(backend: Backend, fn: () => void, warmup: number, reps: number): Promise<Measured> {
  const timer = deviceTimer(backend);
  await warmUp(backend, fn, warmup);
  const before = backend.memory().liveBytes;
  backend.resetPeakMemory?.();
  beginTimed();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) times.push(await timeRound(backend, fn, timer));
  const peakBytes = backend.resetPeakMemory ? backend.memory().peakBytes - before : null;
  return { ...summarise(times, timer ? "gpu-timestamp" : "host"), peakBytes };
}

type DispatchProfiler = (fn: () => void) => Promise<{ key: string; ms: number }[] | null>;

/**
 * Device time per kernel of one call, where the backend can say (WebGPU with timestamp queries:
 * every dispatch in a timed pass of its own): which of an implementation's kernels takes the time.
 */
async function kernelTimes(backend: Backend, fn: () => void): Promise<Record<string, number> | null> {
  const profile = (backend as { profileDispatches?: DispatchProfiler }).profileDispatches;
  if (typeof profile !== "function") return null;
  const rows = await profile.call(backend, fn);
  return rows && Object.fromEntries(rows.map((r) => [r.key, r.ms]));
}

/** The least device time per kernel over `runs` profiles. */
async function leastKernelTimes(backend: Backend, fn: () => void, runs: number): Promise<Record<string, number> | null> {
  let least: Record<string, number> | null = null;
  for (let i = 0; i < runs; i++) {
    const times = await kernelTimes(backend, fn);
    if (!times) return null;
    least ??= times;
    for (const [key, ms] of Object.entries(times)) least[key] = Math.min(least[key] ?? ms, ms);
  }
  return least;
}

/** The relative RMS and largest difference of `got` against `want` (another checked output). */
function compareOutputs(got: ArrayLike<number>, want: ArrayLike<number>): { relErr: number; maxErr: number } {
  let num = 0;
  let den = 0;
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    num += d * d;
    den += want[i] * want[i];
    maxDiff = Math.max(maxDiff, d);
    maxRef = Math.max(maxRef, Math.abs(want[i]));
  }
  const relErr = got.length === want.length ? Math.sqrt(num / den) : Infinity;
  // NaN never passes.
  return { relErr: Number.isNaN(relErr) ? Infinity : relErr, maxErr: Number.isNaN(maxDiff) ? Infinity : maxDiff / maxRef };
}

/** Seeded query rows to check for softmax: the first, the last, and a few in between. */
function sampleRows(t: number): number[] {
  return [...new Set([0, 1, Math.floor(t / 3), Math.floor(t / 2), t - 2, t - 1].filter((r) => r >= 0 && r < t))];
}

export const attentionSuite: Suite = {
  name: "attention",
  description: "Lightning Attention (chunked, recurrent, quadratic) and softmax attention, forward and forward+backward vs T at fixed B·T",
  configure(command) {
    command
      .option("--t <list>", "sequence lengths T, comma-separated", intList, [128, 256, 512, 1024, 2048])
      .option("--tokens <n>", "tokens per call B·T (each T must divide it)", (v) => Number.parseInt(v, 10), 2048)
      .option("--heads <n>", "heads H", (v) => Number.parseInt(v, 10), 4)
      .option("--dim <n>", "head dims D = E", (v) => Number.parseInt(v, 10), 64)
      .option("--dtype <dtype>", "storage dtype of q, k, v: f32, f16 or bf16", "f32")
      .option("--impls <list>", "implementations, comma-separated (default: all)", (v: string) => v.split(","))
      .option("--max-quadratic-t <n>", "run quadratic forms (quadratic, softmax) only up to this T (default: per implementation)", (v) => Number.parseInt(v, 10))
      .option("--no-backward", "time the forward only")
      .option("--webgpu-forward <list>", "WebGPU only: time the chunked forward once per kernel variant (FORWARD_VARIANTS of @lightning-ts/webgpu, e.g. walk-rows2, the default, or walk-rows; an unknown name lists them; impl chunked[VARIANT]; the first checked against float64, the others against the first)", (v: string) => v.split(","))
      .option("--chart <file>", "SVG chart of tokens/s and memory vs T", "runs/bench/attention.svg");
  },
  // Long sweeps on a 2-core CPU: one warm-up, three timed runs per case.
  defaults: { warmup: 1, reps: 3 },
  columns: [
    ["impl", "impl"],
    ["backend", "backend"],
    ["B", "B"],
    ["T", "T"],
    ["H", "H"],
    ["D=E", "D"],
    ["dtype", "dtype"],
    ["fwd ms", "fwd_ms"],
    ["fwd+bwd ms", "fwdbwd_ms"],
    ["tokens/s (fwd)", "tokens_per_s"],
    ["fwd MB", "fwd_mb"],
    ["rel_err", "rel_err"],
    ["spread %", "spread_pct"],
    ["clock", "clock"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const options = raw as unknown as AttentionOptions;
    const { heads: H, dim: D, tokens, dtype } = options;
    const E = D;
    const bad = options.t.find((t) => tokens % t !== 0);
    if (bad !== undefined) throw new Error(`--t: every T must divide --tokens ${tokens}; ${bad} does not`);
    const known = attentionImpls();
    const unknown = (options.impls ?? []).filter((n) => !known.some((i) => i.name === n));
    if (unknown.length) throw new Error(`--impls: unknown ${unknown.join(", ")}; known: ${known.map((i) => i.name).join(", ")}`);
    const impls = known.filter((i) => !options.impls || options.impls.includes(i.name));
    const maxT = (impl: AttentionImpl) => options.maxQuadraticT ?? impl.defaultMaxT ?? Infinity;
    const forwards = options.webgpuForward ?? [];
    const webgpu = forwards.length ? await import("@lightning-ts/webgpu") : null;
    const variants: readonly string[] = webgpu?.FORWARD_VARIANTS ?? [];
    const badForward = forwards.find((f) => !variants.includes(f));
    if (badForward !== undefined) throw new Error(`--webgpu-forward: expected one of ${variants.join(", ")}, got '${badForward}'`);
    const choices = webgpu?.kernelChoices ?? null;
    // The chunked forward on WebGPU once per variant; everything else once.
    const runsOf = (backend: string): { impl: AttentionImpl; forward: Forward | null }[] =>
      impls.flatMap((impl): { impl: AttentionImpl; forward: Forward | null }[] => (backend === "webgpu" && impl.name === "chunked" && forwards.length ? forwards.map((forward) => ({ impl, forward: forward as Forward })) : [{ impl, forward: null }]));
    const slopeValues = T.tnlSlopes(H, 0, 2);
    const results: BenchResult[] = [];
    const cases = backends.reduce((n, b) => n + options.t.length * runsOf(b).length, 0);
    const bar = new SingleBar({ format: "attention {bar} {value}/{total} {case}", stream: process.stderr, hideCursor: true }, Presets.shades_classic);
    bar.start(cases, 0, { case: "" });

    for (const name of backends) {
      const backend = await startBackend(name, {}, log);
      if (!backend) {
        bar.increment(options.t.length * runsOf(name).length);
        continue;
      }
      const device = backend.capabilities.device;
      for (const t of options.t) {
        const B = tokens / t;
        const x: AttentionInputs = {
          q: T.randomNormal([B, H, t, D], { seed: 1, std: 0.1, dtype }),
          k: T.randomNormal([B, H, t, D], { seed: 2, std: 0.1, dtype }),
          v: T.randomNormal([B, H, t, E], { seed: 3, std: 0.1, dtype }),
          slopes: T.slopesTensor(slopeValues),
        };
        const dO = T.randomNormal([B, H, t, E], { seed: 4, std: 0.1, dtype });
        // The oracle sees the checked sequences as the heads of one batch entry, each with its slope.
        const sequences = checkedSequences(B, H, t, D * E);
        const hostX: HostInputs = {
          B: 1, H: sequences.length, T: t, D, E,
          q: await host(x.q, sequences),
          k: await host(x.k, sequences),
          v: await host(x.v, sequences),
          dO: options.backward ? await host(dO, sequences) : new Float64Array(0),
          slopes: sequences.map((s) => Math.fround(slopeValues[s % H])),
        };
        let checkedVariant: { label: string; o: ArrayLike<number> } | undefined;
        for (const { impl, forward } of runsOf(name)) {
          const label = forward ? `${impl.name}[${forward}]` : impl.name;
          if (forward && choices) choices.forward = forward;
          bar.increment(0, { case: `${name} ${label} T=${t}` });
          const base = { suite: "attention", impl: label, backend: name, device, dtype, B, T: t, H, D, E };
          if (t > maxT(impl)) {
            log(`${impl.name} T=${t}: not run (above the quadratic-form limit ${maxT(impl)}; raise it with --max-quadratic-t)`);
            bar.increment();
            continue;
          }
          // Check first, on the very inputs that will be timed.
          const produced = T.scope(() => {
            const outs = options.backward ? impl.forwardBackward(x, dO) : [];
            const o = impl.forward(x);
            return { o, grads: options.backward ? outs : undefined };
          });
          const got = { o: await host(produced.o, sequences), grads: produced.grads ? await Promise.all(produced.grads.map((g) => host(g, sequences))) : undefined };
          for (const tt of [produced.o, ...(produced.grads ?? [])]) tt.dispose();
          // Further WebGPU forward variants of this T are checked against the first one's output,
          // itself checked against float64 (the float64 recurrence takes seconds per case).
          const first = forward ? checkedVariant : undefined;
          const check = first ? compareOutputs(got.o, first.o) : impl.family === "lightning" ? checkLightning(hostX, got) : checkSoftmax(hostX, got, sampleRows(t));
          const tol = MAX_REL_ERR[dtype] ?? 1e-4;
          // Relative RMS over everything, and no single element off by more than 10·tol of the largest.
          const ok = check.relErr <= tol && check.maxErr <= 10 * tol;
          if (!ok) {
            log(`${impl.name} T=${t}: FAILED the float64 check (rel_err ${check.relErr.toExponential(2)}, worst element ${check.maxErr.toExponential(2)} of max |ref|); not timed`);
            results.push(result({ ...base, ok: false, rel_err: check.relErr, max_err: check.maxErr }));
            bar.increment();
            continue;
          }
          if (forward && !first) checkedVariant = { label, o: got.o };
          if (first) log(`${label} T=${t}: checked against ${first.label} (rel_err ${check.relErr.toExponential(2)}), which was checked against float64`);
          const fwd = await timeCase(backend, () => T.scope(() => void impl.forward(x)), common.warmup, common.reps);
          const fwdSpan = lastTimedSpan();
          // The least of three profiles per kernel: a device shared with other work shows in the median only.
          const kernel_ms = await leastKernelTimes(backend, () => T.scope(() => void impl.forward(x)), forward ? 3 : 1);
          const fwdbwd = options.backward ? await timeCase(backend, () => T.scope(() => void impl.forwardBackward(x, dO)), common.warmup, common.reps) : null;
          const fwdbwd_kernel_ms = options.backward && kernel_ms ? await leastKernelTimes(backend, () => T.scope(() => void impl.forwardBackward(x, dO)), forward ? 3 : 1) : null;
          const ioBytes = B * H * t * (2 * D + 2 * E) * (dtype === "f32" ? 4 : 2);
          const row = result({
              ...base,
              ok: true,
              rel_err: check.relErr,
              max_err: check.maxErr,
              fwd_ms: fwd.median,
              fwdbwd_ms: fwdbwd?.median ?? null,
              tokens_per_s: (B * t) / (fwd.median / 1000),
              fwdbwd_tokens_per_s: fwdbwd ? (B * t) / (fwdbwd.median / 1000) : null,
              gbps: ioBytes / (fwd.median / 1000) / 1e9,
              pct_copy: null,
              spread_pct: Math.round(fwd.spread_pct),
              clock: fwd.clock,
              kernel_ms,
              fwdbwd_kernel_ms,
              fwd_mb: fwd.peakBytes === null ? null : fwd.peakBytes / 2 ** 20,
              fwdbwd_mb: fwdbwd?.peakBytes == null ? null : fwdbwd.peakBytes / 2 ** 20,
              reps: common.reps,
              warmup: common.warmup,
            });
          // The row's clocks (--gpu-clocks) are those of its forward's repetitions.
          setTimedSpan(row, fwdSpan);
          results.push(row);
          // One line per case as it is measured: a sweep stopped by a time limit still shows its rows.
          log(`${name} ${label} T=${t}: forward ${fwd.median.toFixed(3)} ms (least ${fwd.min.toFixed(3)}; ${fwd.clock} clock)${fwdbwd ? `, forward+backward ${fwdbwd.median.toFixed(3)} ms` : ""}`);
          const byKernel = (times: Record<string, number>) => Object.entries(times).map(([key, ms]) => `${key} ${ms.toFixed(3)} ms`).join(", ");
          if (kernel_ms) log(`  forward by kernel: ${byKernel(kernel_ms)}`);
          if (fwdbwd_kernel_ms) log(`  forward+backward by kernel: ${byKernel(fwdbwd_kernel_ms)}`);
          bar.increment();
        }
        for (const tt of [x.q, x.k, x.v, x.slopes, dO]) tt.dispose();
      }
    }
    bar.stop();

    for (const backend of new Set(results.map((r) => r.backend))) {
      for (const impl of [...new Set(results.map((r) => r.impl))].filter((i) => i.startsWith("chunked") || i === "recurrent")) {
        const rows = results.filter((r) => r.ok && r.backend === backend && r.impl === impl).sort((a, b) => a.T! - b.T!);
        if (rows.length < 2) continue;
        const [first, last] = [rows[0], rows[rows.length - 1]];
        log(`constant speed, ${impl} on ${backend}: tokens/s at T=${last.T} is ${((last.tokens_per_s! / first.tokens_per_s!) * 100).toFixed(0)}% of T=${first.T}`);
      }
    }
    const series = (r: BenchResult) => `${r.impl} (${r.backend})`;
    const ok = results.filter((r) => r.ok);
    const chart = outputPath(options.chart);
    await writeLineCharts(chart, `Attention at ${tokens} tokens per call, H=${H}, D=E=${D}, ${dtype}`, [
      { title: "forward tokens/s (higher is better)", xTitle: "sequence length T", yTitle: "tokens/s", logY: true, points: ok.map((r) => ({ series: series(r), x: r.T!, y: r.tokens_per_s })) },
      ...(options.backward
        ? [{ title: "forward+backward tokens/s", xTitle: "sequence length T", yTitle: "tokens/s", logY: true, points: ok.map((r) => ({ series: series(r), x: r.T!, y: r.fwdbwd_tokens_per_s as number | null })) }]
        : []),
      { title: "forward peak memory above inputs (MiB)", xTitle: "sequence length T", yTitle: "MiB", points: ok.map((r) => ({ series: series(r), x: r.T!, y: r.fwd_mb as number | null })) },
    ]);
    log(`chart written to ${chart}`);
    return results;
  },
};
