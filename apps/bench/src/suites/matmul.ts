/**
 * matmul: GFLOP/s of C (m, n) = A (m, k) . B (k, n) per backend, thread count and size, each case
 * first checked against a float64 oracle on the same inputs, then timed beside NumPy/OpenBLAS on
 * the same number of threads (ratio = ours / OpenBLAS, measured in the same run). On a GPU each
 * timing waits for the device (kernels only enqueue there) and reads the device's clock.
 *
 * --webgpu-variants times WebGPU once more per variant ORDER:LAYOUT, each checked first (impl
 * `lightning-ts[ORDER:LAYOUT]`): ORDER is the tiled kernel's workgroup order (`grouped` tile rows,
 * `linear` row order, or `rotated`: grouped with each workgroup starting at its own k slice), LAYOUT `nn` (A stored (m, k), read as vectors along k: 64 bytes of each of
 * 128 rows per slice) or `tn` (A stored (k, m) and transposed by the kernel: whole 512-byte row
 * pieces, as B is read). They tell DRAM access patterns and L2 reuse apart at large sizes.
 *
 * --webgpu-operands N times the default kernel again on N further copies of A and B, all held at
 * once (impl `lightning-ts#i`, each checked first): other allocations of the same operands, to see
 * whether the speed of a size goes with the allocation its operands landed in (the 3,072³ case
 * ran at 5.4 or 30 TFLOP/s from one process to the next).
 */
import { startBackend } from "@lightning-ts/backends";
import { type Backend, copy, decode, type DType, encode, fromStorage, matmul, type Tensor } from "@lightning-ts/tensor";
import { cpus } from "node:os";
import { numpyMatmul, numpyUnavailable } from "../anchors/numpy.js";
import { type Clock, intList, result, summarise, type BenchResult, type Suite, time, timeQueued, deviceTimer } from "../suite.js";

/** f32 over k up to 2048 stays far below this; a wrong kernel lands far above. */
const MAX_REL_ERR = 1e-4;
/** Above this many rows the oracle checks a seeded sample of rows (a float64 2048³ loop takes ~10 s). */
const FULL_CHECK_ROWS = 512;
const SAMPLE_ROWS = 64;

interface MatmulOptions {
  sizes: number[];
  threads: number[];
  dtype: DType;
  anchor: boolean;
  rounds: number;
  webgpuVariants?: string[];
  webgpuOperands?: number;
}

interface Variant {
  order: "grouped" | "linear" | "rotated";
  layout: "nn" | "tn";
}

function parseVariants(list: string[] | undefined): Variant[] {
  return (list ?? []).map((v) => {
    const [order, layout] = v.split(":");
    if ((order !== "grouped" && order !== "linear" && order !== "rotated") || (layout !== "nn" && layout !== "tn")) {
      throw new Error(`--webgpu-variants: expected ORDER:LAYOUT with ORDER grouped, linear or rotated and LAYOUT nn or tn, got '${v}'`);
    }
    return { order, layout };
  });
}

/** A (rows × cols, row-major) transposed. */
function transpose(x: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = x[i * cols + j];
  return out;
}

/** Each WebGPU variant of one size: checked against float64, then timed (one row each). */
async function timeVariants(backend: Backend, variants: Variant[], a: { t: Tensor; values: Float64Array }, b: { t: Tensor; values: Float64Array }, base: Record<string, unknown> & { m: number; k: number; n: number }, common: { warmup: number; reps: number }, log: (line: string) => void): Promise<BenchResult[]> {
  const { kernelChoices } = await import("@lightning-ts/webgpu");
  const before = kernelChoices.matmulOrder;
  const { m, k, n } = base;
  const flops = 2 * m * k * n;
  const at = fromStorage(encode("f32", transpose(a.values, m, k)), [k, m], "f32", backend);
  const rows: BenchResult[] = [];
  try {
    for (const { order, layout } of variants) {
      kernelChoices.matmulOrder = order;
      const call = () => (layout === "tn" ? matmul(at, b.t, { transA: true }) : matmul(a.t, b.t));
      const c = call();
      const rel_err = relErr(a.values, b.values, await c.data(), m, k, n);
      c.dispose();
      const impl = `lightning-ts[${order}:${layout}]`;
      const row = { ...base, suite: "matmul", impl, backend: "webgpu", device: backend.capabilities.device, dtype: "f32", order, layout, rel_err };
      if (!(rel_err <= MAX_REL_ERR)) {
        log(`webgpu ${m}³ ${order}:${layout}: FAILED the oracle check (rel_err ${rel_err.toExponential(2)}), not timed`);
        rows.push(result({ ...row, ok: false, gflops: null }));
        continue;
      }
      const calls = Math.max(1, Math.min(64, Math.round(2e9 / flops)));
      const t = await timeQueued(backend, () => call().dispose(), calls, common.warmup, common.reps, deviceTimer(backend));
      const gflops = flops / t.median / 1e6;
      log(`webgpu ${m}³ ${order}:${layout}: ${gflops.toFixed(1)} GFLOP/s`);
      rows.push(result({ ...row, ok: true, fwd_ms: t.median, gflops, min_ms: t.min, max_ms: t.max, spread_pct: t.spread_pct, clock: t.clock }));
    }
  } finally {
    kernelChoices.matmulOrder = before;
    at.dispose();
  }
  return rows;
}

/** The default kernel on `count` further copies of A and B, all held at once: checked, then timed (one row each). */
async function timeOperandCopies(backend: Backend, count: number, a: { t: Tensor; values: Float64Array }, b: { t: Tensor; values: Float64Array }, base: Record<string, unknown> & { m: number; k: number; n: number }, common: { warmup: number; reps: number }, log: (line: string) => void): Promise<BenchResult[]> {
  const { m, k, n } = base;
  const flops = 2 * m * k * n;
  const copies = Array.from({ length: count }, () => [copy(a.t), copy(b.t)] as const);
  const rows: BenchResult[] = [];
  try {
    for (const [i, [ai, bi]] of copies.entries()) {
      const call = () => matmul(ai, bi);
      const c = call();
      const rel_err = relErr(a.values, b.values, await c.data(), m, k, n);
      c.dispose();
      const row = { ...base, suite: "matmul", impl: `lightning-ts#${i + 1}`, backend: "webgpu", device: backend.capabilities.device, dtype: base.dtype as DType, operands: i + 1, rel_err };
      if (!(rel_err <= MAX_REL_ERR)) {
        log(`webgpu ${m}³ operand copy ${i + 1}: FAILED the oracle check (rel_err ${rel_err.toExponential(2)}), not timed`);
        rows.push(result({ ...row, ok: false, gflops: null }));
        continue;
      }
      const calls = Math.max(1, Math.min(64, Math.round(2e9 / flops)));
      const t = await timeQueued(backend, () => call().dispose(), calls, common.warmup, common.reps, deviceTimer(backend));
      const gflops = flops / t.median / 1e6;
      log(`webgpu ${m}³ operand copy ${i + 1}: ${gflops.toFixed(1)} GFLOP/s`);
      rows.push(result({ ...row, ok: true, fwd_ms: t.median, gflops, min_ms: t.min, max_ms: t.max, spread_pct: t.spread_pct, clock: t.clock }));
    }
  } finally {
    for (const [ai, bi] of copies) {
      ai.dispose();
      bi.dispose();
    }
  }
  return rows;
}

/** mulberry32: seeded values in [-1, 1). */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  };
}

function randomTensor(rows: number, cols: number, dtype: DType, seed: number, backend: Backend): { t: Tensor; values: Float64Array } {
  const next = random(seed);
  const values = Float64Array.from({ length: rows * cols }, next);
  const stored = encode(dtype, values);
  // The oracle sees the values as stored (f16/bf16 rounded).
  return { t: fromStorage(stored, [rows, cols], dtype, backend), values: Float64Array.from(decode(dtype, stored)) };
}

/** Relative RMS error of C over the checked rows, against a float64 loop on the same inputs. */
function relErr(a: Float64Array, b: Float64Array, c: ArrayLike<number>, m: number, k: number, n: number): number {
  const rows = m <= FULL_CHECK_ROWS ? Array.from({ length: m }, (_, i) => i) : Array.from({ length: SAMPLE_ROWS }, (_, i) => Math.floor(((random(7 + i)() + 1) / 2) * m));
  let err = 0;
  let ref = 0;
  const want = new Float64Array(n);
  for (const i of rows) {
    want.fill(0);
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      for (let j = 0; j < n; j++) want[j] += x * b[p * n + j];
    }
    for (let j = 0; j < n; j++) {
      const d = c[i * n + j] - want[j];
      err += d * d;
      ref += want[j] * want[j];
    }
  }
  const e = Math.sqrt(err / ref);
  return Number.isFinite(e) ? e : Infinity;
}

export const matmulSuite: Suite = {
  name: "matmul",
  description: "square matmul GFLOP/s per backend, threads and size, beside NumPy/OpenBLAS",
  configure(command) {
    command
      .option("--sizes <list>", "square sizes m = k = n, comma-separated", intList, [256, 512, 1024, 2048])
      .option("--threads <list>", "CPU thread counts to run, comma-separated", intList, [cpus().length])
      .option("--dtype <dtype>", "storage dtype: f32, f16 or bf16 (the anchor is f32 only)", "f32")
      .option("--rounds <n>", "alternate ours and the anchor this many times per case (reps are split among them)", (v) => Number.parseInt(v, 10), 3)
      .option("--no-anchor", "skip the NumPy/OpenBLAS anchor")
      .option("--webgpu-variants <list>", "WebGPU only: also time these ORDER:LAYOUT variants (grouped|linear|rotated : nn|tn), comma-separated", (v: string) => v.split(","))
      .option("--webgpu-operands <n>", "WebGPU only: also time the default kernel on this many further copies of A and B, all held at once (impls lightning-ts#1 …)", (v) => Number.parseInt(v, 10));
  },
  columns: [
    ["impl", "impl"],
    ["backend", "backend"],
    ["threads", "threads"],
    ["m=k=n", "m"],
    ["dtype", "dtype"],
    ["median ms", "fwd_ms"],
    ["GFLOP/s", "gflops"],
    ["spread %", "spread_pct"],
    ["rel_err", "rel_err"],
    ["vs OpenBLAS", "ratio_vs_openblas"],
    ["clock", "clock"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const options = raw as unknown as MatmulOptions;
    const { warmup, reps } = common;
    const variants = parseVariants(options.webgpuVariants);
    if (variants.length && options.dtype !== "f32") throw new Error(`--webgpu-variants: the tiled kernel is f32 only, got --dtype ${options.dtype}`);
    const operandCopies = options.webgpuOperands ?? 0;
    if (!(Number.isInteger(operandCopies) && operandCopies >= 0)) throw new Error(`--webgpu-operands: expected a non-negative integer, got ${options.webgpuOperands}`);
    const anchorSkip = !options.anchor ? "disabled by --no-anchor" : options.dtype !== "f32" ? "f32 only" : numpyUnavailable();
    if (anchorSkip) log(`OpenBLAS anchor skipped: ${anchorSkip}`);
    const results: BenchResult[] = [];

    for (const name of backends) {
      for (const threads of options.threads) {
        const backend = await startBackend(name, { threads }, log);
        if (!backend) continue;
        const device = backend.capabilities.device;
        for (const size of options.sizes) {
          const [m, k, n] = [size, size, size];
          const flops = 2 * m * k * n;
          const shape = { m, k, n, threads, reps, warmup };
          const a = randomTensor(m, k, options.dtype, 1 + size, backend);
          const b = randomTensor(k, n, options.dtype, 2 + size, backend);
          const c = matmul(a.t, b.t);
          // data(), not dataSync(): a GPU backend reads back asynchronously only.
          const rel_err = relErr(a.values, b.values, await c.data(), m, k, n);
          c.dispose();
          const ok = rel_err <= MAX_REL_ERR;
          const base = { suite: "matmul", backend: name, device, dtype: options.dtype, ...shape };
          if (!ok) {
            log(`${name} ${size}³ x${threads}: FAILED the oracle check (rel_err ${rel_err.toExponential(2)}), not timed`);
            results.push(result({ ...base, impl: "lightning-ts", rel_err, ok, gflops: null }));
          } else {
            // Ours and the anchor alternate in rounds, so that load from other processes on a
            // shared machine hits both alike and their ratio stays meaningful.
            const rounds = anchorSkip ? 1 : options.rounds;
            const per = Math.max(1, Math.ceil(reps / rounds));
            const ourTimes: number[] = [];
            const anchorTimes: number[] = [];
            let anchorVersion = "";
            let clock: Clock = "host";
            for (let r = 0; r < rounds; r++) {
              const call = () => matmul(a.t, b.t).dispose();
              // About 2 GFLOP per wait on a GPU, so the submission and the wait are spread over the calls.
              const calls = Math.max(1, Math.min(64, Math.round(2e9 / flops)));
              const timing = name === "cpu" ? time(call, r === 0 ? warmup : 1, per) : await timeQueued(backend, call, calls, r === 0 ? warmup : 1, per, deviceTimer(backend));
              ourTimes.push(...timing.times);
              clock = timing.clock;
              if (anchorSkip) continue;
              const anchor = numpyMatmul([[m, k, n]], { warmup, reps: per, threads });
              anchorTimes.push(...anchor.times[0]);
              anchorVersion = anchor.version;
            }
            const t = summarise(ourTimes, clock);
            const ours = result({ ...base, reps: ourTimes.length, impl: "lightning-ts", rel_err, ok, fwd_ms: t.median, gflops: flops / t.median / 1e6, min_ms: t.min, max_ms: t.max, spread_pct: t.spread_pct, clock });
            results.push(ours);
            log(`${name} ${size}³ x${threads}: ${(ours.gflops as number).toFixed(1)} GFLOP/s`);
            if (!anchorSkip) {
              const at = summarise(anchorTimes);
              const gflops = flops / at.median / 1e6;
              ours.ratio_vs_openblas = (ours.gflops as number) / gflops;
              results.push(result({ ...shape, reps: anchorTimes.length, suite: "matmul", impl: "openblas", backend: "numpy", device, dtype: "f32", ok: true, fwd_ms: at.median, gflops, min_ms: at.min, max_ms: at.max, spread_pct: at.spread_pct, anchor: anchorVersion }));
              log(`numpy ${size}³ x${threads}: ${gflops.toFixed(1)} GFLOP/s (${anchorVersion})`);
            }
            if (name === "webgpu" && variants.length) results.push(...(await timeVariants(backend, variants, a, b, base, { warmup, reps }, log)));
            if (name === "webgpu" && operandCopies > 0) results.push(...(await timeOperandCopies(backend, operandCopies, a, b, base, { warmup, reps }, log)));
          }
          a.t.dispose();
          b.t.dispose();
        }
        backend.dispose();
      }
    }
    return results;
  },
};
