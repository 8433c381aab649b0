/**
 * The GPU's clocks while a benchmark runs (`--gpu-clocks [index]`): nvidia-smi samples the SM and
 * memory clocks and the performance state in the background, and each timed row gets what they were
 * over its timed repetitions (suite.ts). A kernel timed by the device's own clock still runs slower
 * when the driver has not raised the SM clock, so two rows of one kernel are only comparable at
 * the same clocks.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { type BenchResult, timedSpan } from "./suite.js";

/** One nvidia-smi sample. `at`: epoch milliseconds (Date.now's clock). */
export interface ClockSample {
  at: number;
  pstate: string;
  smMhz: number;
  memMhz: number;
}

/** The clocks over a window: what a row reports (field names of its JSON). */
export interface ClockStats {
  gpu_sm_mhz: number;
  gpu_sm_mhz_min: number;
  gpu_sm_mhz_max: number;
  gpu_mem_mhz: number;
  gpu_pstate: string;
  gpu_clock_samples: number;
}

/** Milliseconds between samples. */
export const SAMPLE_MS = 100;

const QUERY = "timestamp,pstate,clocks.sm,clocks.mem";

/** coreutils' stdbuf, which makes nvidia-smi write each sample as it takes it instead of in 4 KB blocks. */
const STDBUF = "/usr/bin/stdbuf";

/**
 * One line of `nvidia-smi --query-gpu=timestamp,pstate,clocks.sm,clocks.mem --format=csv,noheader,nounits`,
 * e.g. "2026/12/03 06:10:11.123, P0, 1980, 3201"; null for a line that is not one (a warning,
 * "[N/A]" clocks). nvidia-smi writes the time in local time, as Date's constructor reads it.
 */
export function parseSample(line: string): ClockSample | null {
  const m = /^\s*(\d{4})\/(\d{2})\/(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{1,3})\s*,\s*(P\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*$/.exec(line);
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number);
  const ms = Number(m[7].padEnd(3, "0"));
  return { at: new Date(y, mo - 1, d, h, mi, s, ms).getTime(), pstate: m[8], smMhz: Number(m[9]), memMhz: Number(m[10]) };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

/**
 * The clocks of the samples taken within [from, to] (epoch ms); where none was (a window shorter
 * than a sample period), the sample just before `to`. Null when there is none at all.
 */
export function clockStats(samples: readonly ClockSample[], from: number, to: number): ClockStats | null {
  let inside = samples.filter((s) => s.at >= from && s.at <= to);
  if (inside.length === 0) {
    const before = samples.filter((s) => s.at <= to);
    if (before.length === 0) return null;
    inside = [before[before.length - 1]];
  }
  const sm = inside.map((s) => s.smMhz);
  const states = [...new Set(inside.map((s) => s.pstate))];
  return {
    gpu_sm_mhz: median(sm),
    gpu_sm_mhz_min: Math.min(...sm),
    gpu_sm_mhz_max: Math.max(...sm),
    gpu_mem_mhz: median(inside.map((s) => s.memMhz)),
    gpu_pstate: states.join("/"),
    gpu_clock_samples: inside.length,
  };
}

/** nvidia-smi running in the background, its samples kept in memory. */
export class ClockSampler {
  readonly gpu: number;
  readonly #child: ChildProcess;
  readonly #samples: ClockSample[] = [];
  readonly #closed: Promise<void>;
  #failure: string | null = null;
  #stopped = false;

  /** `command`: the nvidia-smi to run (tests pass a stand-in). */
  constructor(gpu: number, command = "nvidia-smi") {
    if (!Number.isInteger(gpu) || gpu < 0) throw new Error(`--gpu-clocks: expected a GPU index (a non-negative integer), got ${String(gpu)}`);
    this.gpu = gpu;
    const args = [`--query-gpu=${QUERY}`, "--format=csv,noheader,nounits", "-i", String(gpu), "-lms", String(SAMPLE_MS)];
    const lineBuffered = existsSync(STDBUF);
    this.#child = spawn(lineBuffered ? STDBUF : command, lineBuffered ? ["-oL", command, ...args] : args, { stdio: ["ignore", "pipe", "pipe"] });
    this.#closed = new Promise((resolve) => this.#child.on("close", () => resolve()));
    this.#child.on("error", (err) => {
      this.#failure ??= `${command} could not run (${err.message})`;
    });
    let errors = "";
    let exit = "";
    this.#child.stderr!.on("data", (chunk: Buffer) => {
      errors = (errors + chunk.toString()).slice(-500);
    });
    this.#child.on("exit", (code, signal) => {
      exit = signal ?? `code ${code}`;
    });
    createInterface({ input: this.#child.stdout! }).on("line", (line) => {
      const sample = parseSample(line);
      if (sample) this.#samples.push(sample);
      else if (line.trim()) this.#failure ??= `${command} printed "${line.trim().slice(0, 200)}" instead of a sample`;
    });
    void this.#closed.then(() => {
      if (this.#stopped) return;
      const said = errors.trim().split("\n")[0];
      this.#failure ??= `${command} exited (${exit || "closed its output"}) before the benchmark ended${said ? `: ${said}` : ""}`;
    });
  }

  /** Resolves once the first sample has come, or with why none came within `timeoutMs`. */
  async ready(timeoutMs = 5_000): Promise<string | null> {
    const start = Date.now();
    while (this.#samples.length === 0 && this.#failure === null && Date.now() - start < timeoutMs) await new Promise((r) => setTimeout(r, 20));
    if (this.#samples.length > 0) return null;
    return this.#failure ?? `nvidia-smi gave no sample of GPU ${this.gpu} within ${timeoutMs} ms`;
  }

  /** The clocks over [from, to] (epoch ms) from the samples so far. */
  stats(from: number, to: number): ClockStats | null {
    return clockStats(this.#samples, from, to);
  }

  /** Why sampling stopped early, if it did. */
  get failure(): string | null {
    return this.#failure;
  }

  /** Ends nvidia-smi and waits (at most 2 s) for the samples it had written. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#child.kill();
    await Promise.race([this.#closed, new Promise((r) => setTimeout(r, 2_000))]);
  }
}

/** Columns added to a suite's table when --gpu-clocks samples the clocks. */
export const CLOCK_COLUMNS = [
  ["SM MHz", "gpu_sm_mhz"],
  ["SM min", "gpu_sm_mhz_min"],
  ["mem MHz", "gpu_mem_mhz"],
  ["pstate", "gpu_pstate"],
] as const;

/**
 * nvidia-smi's sampler of GPU `value` (true: GPU 0), started and answering; null, with the reason
 * logged, where it cannot run (no nvidia-smi, no such GPU): the benchmark runs without clocks.
 */
export async function startClocks(value: unknown, log: (line: string) => void, command = "nvidia-smi"): Promise<ClockSampler | null> {
  if (value === undefined || value === false) return null;
  const gpu = value === true ? 0 : Number(value);
  const sampler = new ClockSampler(gpu, command);
  const why = await sampler.ready();
  if (why === null) return sampler;
  log(`--gpu-clocks: ${why}; the rows carry no clocks`);
  await sampler.stop();
  return null;
}

/** Each timed row gets the clocks over its timed repetitions. */
export function addClocks(results: readonly BenchResult[], sampler: ClockSampler, log: (line: string) => void): void {
  for (const row of results) {
    const span = timedSpan(row);
    const stats = span && sampler.stats(span[0], span[1]);
    if (stats) Object.assign(row, stats);
  }
  if (sampler.failure) log(`--gpu-clocks: ${sampler.failure}; rows timed after that carry the last clocks seen`);
}
