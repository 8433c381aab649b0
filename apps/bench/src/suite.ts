/**
 * What a benchmark suite is, what it returns, and the timing loop they share.
 *
 * A suite is one module with a `Suite` object, registered in suites/index.ts; it adds its own
 * command-line options and returns one `BenchResult` per measured case.
 */
import type { BackendName } from "@lightning-ts/backends";
import type { Backend, KernelTimer } from "@lightning-ts/tensor";
import type { Command } from "commander";

/** One measured case, with the field names of docs/PERFORMANCE.md "How to report". */
export interface BenchResult {
  suite: string;
  impl: string;
  backend: string;
  device: string;
  dtype: string;
  /** Attention shape fields; null where the suite has no such dimension. */
  B: number | null;
  T: number | null;
  H: number | null;
  D: number | null;
  E: number | null;
  /** Forward (here: the one op) median in ms; null when not measured (failed check, or n/a). */
  fwd_ms: number | null;
  fwdbwd_ms: number | null;
  tokens_per_s: number | null;
  gbps: number | null;
  pct_copy: number | null;
  rel_err: number | null;
  ok: boolean;
  /** Suite-specific fields (matmul: m, k, n, gflops, ratio to the native anchor…). */
  [extra: string]: unknown;
}

export interface CommonOptions {
  backends: string[];
  warmup: number;
  reps: number;
  json?: string;
}

export interface SuiteContext {
  /** Each is started in turn; one that cannot start here is reported as skipped. */
  backends: BackendName[];
  options: CommonOptions;
  /** Progress lines go to stderr, so stdout holds only the table. */
  log: (line: string) => void;
}

export interface Suite {
  name: string;
  description: string;
  /** Adds the suite's own options to its command. */
  configure(command: Command): void;
  run(context: SuiteContext, options: Record<string, unknown>): Promise<BenchResult[]>;
  /** Defaults of the common --warmup and --reps options, where a suite needs others. */
  defaults?: { warmup?: number; reps?: number };
  /** The table columns to print, as [header, field]. */
  columns: readonly (readonly [string, string])[];
}

/** Which clock a row was timed by: the device's (WebGPU timestamp queries, CUDA events) or the host's around a wait. */
export type Clock = "gpu-timestamp" | "host";

export interface Timing {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median, in percent. */
  spread_pct: number;
  times: number[];
  clock: Clock;
}

/** Least warm-up time: small cases need many calls before the JIT has compiled their hot paths. */
const WARMUP_MS = 300;

/**
 * Least warm-up time of the device-timed loops on a GPU backend (`timeQueued`, and suites that call
 * `warmUp`; CPU loops warm up by count and WARMUP_MS). An idle GPU's driver raises its clocks only
 * after a while under load: on the H200 a WebGPU forward timed after one untimed call ran at 345 MHz
 * (24.5 ms) and after 3 s of warm-up at 1,980 MHz (5.12 ms), docs/benchmarks/webgpu-h200-2026-11-30.md.
 * `--warmup-ms` sets it; `--gpu-clocks` shows the clocks each row ran at.
 */
export const DEFAULT_DEVICE_WARMUP_MS = 2000;
let deviceWarmupMs = DEFAULT_DEVICE_WARMUP_MS;

export function setDeviceWarmupMs(ms: number): void {
  if (!Number.isFinite(ms) || ms < 0) throw new Error(`--warmup-ms: expected a non-negative number of milliseconds, got ${String(ms)}`);
  deviceWarmupMs = ms;
}

/**
 * Runs `fn` and waits for the device, at least `count` times and, on a GPU backend (any but "cpu"),
 * for at least the device warm-up time. `fn` should keep the device busy between waits (several
 * calls where one is short), or the driver may lower the clocks again.
 */
export async function warmUp(backend: { name?: string; sync(): Promise<void> }, fn: () => void, count: number): Promise<void> {
  const start = performance.now();
  const least = backend.name === "cpu" ? 0 : deviceWarmupMs;
  for (let i = 0; i < count || performance.now() - start < least; i++) {
    fn();
    await backend.sync();
  }
}

/**
 * When each row's timed repetitions ran (epoch ms, Date.now's clock), for the GPU clocks of that
 * span (`--gpu-clocks`, main.ts). A span opens at `beginTimed` (the timing helpers call it after
 * their warm-up) and closes at `summarise`; a loop that does not open one gets the span its times
 * add up to, ending at `summarise`. `result` gives the last closed span to a row with a time.
 */
let openedAt: number | null = null;
let lastSpan: readonly [number, number] | null = null;
const spans = new WeakMap<BenchResult, readonly [number, number]>();

export function beginTimed(): void {
  openedAt = Date.now();
}

/** The span of a row's timed repetitions, if it has one. */
export function timedSpan(row: BenchResult): readonly [number, number] | undefined {
  return spans.get(row);
}

/** The span the last timing closed (for a row built after other timings than its own). */
export function lastTimedSpan(): readonly [number, number] | null {
  return lastSpan;
}

/** Gives `row` the span of its own timing (see lastTimedSpan). */
export function setTimedSpan(row: BenchResult, span: readonly [number, number] | null): void {
  if (span) spans.set(row, span);
}

/** Runs `fn` untimed at least `warmup` times and WARMUP_MS, then `reps` timed times; times in ms. */
export function time(fn: () => void, warmup: number, reps: number): Timing {
  const start = performance.now();
  for (let i = 0; i < warmup || performance.now() - start < WARMUP_MS; i++) fn();
  beginTimed();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return summarise(times);
}

/**
 * The device clock of a GPU backend: WebGPU's timestamp queries (where its adapter has them) or
 * CUDA's events. The CPU backend's timer is the host clock, which the callers use directly.
 */
export function deviceTimer(backend: Backend): KernelTimer | undefined {
  return backend.name === "cpu" ? undefined : backend.timer;
}

/**
 * Milliseconds of one round: `fn` enqueued, then a wait for the device. With a `timer`, the device
 * time between marks around `fn`; without one, the host clock around enqueueing and waiting.
 */
export async function timeRound(backend: { sync(): Promise<void> }, fn: () => void, timer?: KernelTimer): Promise<number> {
  const t0 = performance.now();
  const start = timer?.mark();
  fn();
  const end = timer?.mark();
  await backend.sync();
  const host = performance.now() - t0;
  if (!timer || start === undefined || end === undefined) return host;
  const ms = timer.elapsedMs(start, end);
  timer.release?.([start, end]);
  return ms;
}

/**
 * Times `fn` on a backend whose kernels only enqueue (a GPU): each timed rep enqueues `calls` calls,
 * waits for the device, and counts the mean per call. Times in ms: with a `timer`, the device time
 * between marks around the calls (host work before the GPU starts and the wait's latency are
 * left out); without one, the host clock around enqueueing and waiting.
 */
export async function timeQueued(backend: { name?: string; sync(): Promise<void> }, fn: () => void, calls: number, warmup: number, reps: number, timer?: KernelTimer): Promise<Timing> {
  const all = () => {
    for (let j = 0; j < calls; j++) fn();
  };
  // Warmed up as timed (`calls` a wait), so that the device is as busy as while timed.
  await warmUp(backend, all, warmup);
  beginTimed();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) times.push((await timeRound(backend, all, timer)) / calls);
  return summarise(times, timer ? "gpu-timestamp" : "host");
}

export function summarise(times: number[], clock: Clock = "host"): Timing {
  const sorted = [...times].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  const min = sorted[0];
  const max = sorted[sorted.length - 1];
  const now = Date.now();
  lastSpan = [openedAt ?? now - times.reduce((sum, t) => sum + t, 0), now];
  openedAt = null;
  return { median, min, max, spread_pct: ((max - min) / median) * 100, times, clock };
}

/** A result with every reporting field present (null where not applicable). */
export function result(fields: Partial<BenchResult> & Pick<BenchResult, "suite" | "impl" | "backend" | "device" | "dtype" | "ok">): BenchResult {
  const row: BenchResult = {
    B: null,
    T: null,
    H: null,
    D: null,
    E: null,
    fwd_ms: null,
    fwdbwd_ms: null,
    tokens_per_s: null,
    gbps: null,
    pct_copy: null,
    rel_err: null,
    ...fields,
  };
  const timed = row.fwd_ms != null || row.fwdbwd_ms != null || row.tokens_per_s != null;
  if (timed && lastSpan) spans.set(row, lastSpan);
  return row;
}

/** Comma-separated positive integers, for commander option parsing. */
export function intList(value: string): number[] {
  const list = value.split(",").map((s) => Number(s.trim()));
  if (list.some((x) => !Number.isInteger(x) || x <= 0)) throw new Error(`expected positive integers separated by commas, got "${value}"`);
  return list;
}
