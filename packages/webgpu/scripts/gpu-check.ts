/**
 * A self-contained GPU check for machines with a GPU but no npm: the conformance suite on the WebGPU
 * backend (through a small vitest stand-in) and the docs/PERFORMANCE.md Lightning Attention shape, written
 * as JSON. Bundled by `pnpm --filter @lightning-ts/webgpu build:gpu-check` into dist-gpu/gpu-check.js,
 * which needs only Node and the `webgpu` package beside it.
 *
 *   node dist-gpu/gpu-check.js --out results.json [--skip-conformance] [--t 1024,8192,65536] [--tokens 65536]
 *     [--dtype f32|bf16] [--matmul 1024,2048,4096]
 *
 * Benchmark shape: B·T = 65,536 tokens, H = 16, D = E = 128, f32 inputs (bf16 with --dtype; the
 * blocked forward runs f32 only, bf16 takes the plain scan), decay slopes s_h = 2^(−8(h+1)/H).
 * Times are medians of device time from timestamp queries where the adapter has `timestamp-query`
 * (from the first kernel's start to the last one's end), else of wall-clock time from enqueue to
 * `sync()`; every row says which (`clock`). Copy, matmul and the decode step queue several calls
 * per wait and report the mean per call. Attention rows also give each kernel's device time
 * (`kernel_ms`, from `profileDispatches`). LIGHTNING_WEBGPU_PLAIN=1 measures the plain kernels.
 */
import { writeFileSync } from "node:fs";
import * as T from "@lightning-ts/tensor";
import { conformanceSuite, registerTestBackend } from "@lightning-ts/testing";
import { createWebGpuBackend, type WebGpuBackend } from "../src/index.js";
import { runCollected } from "./vitest-shim.js";

const args = process.argv.slice(2);
const arg = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const outFile = arg("--out") ?? "webgpu-gpu-check.json";
const Ts = (arg("--t") ?? "1024,8192,65536").split(",").map(Number);
const TOKENS = Number(arg("--tokens") ?? 65536);
const DTYPE = (arg("--dtype") ?? "f32") as T.DType;
const MATMUL = (arg("--matmul") ?? "1024,2048,4096").split(",").map(Number);
const H = 16;
const D = 128;
const E = 128;

/**
 * Median ms per call of `fn`, `calls` calls enqueued per wait for the device: device time between
 * two timer marks around the calls where the backend has a timer, else host time to the wait's end.
 */
async function medianQueued(be: WebGpuBackend, reps: number, calls: number, fn: () => void): Promise<number> {
  fn();
  await be.sync();
  const timer = be.timer;
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    const start = timer?.mark();
    for (let j = 0; j < calls; j++) fn();
    const end = timer?.mark();
    await be.sync();
    const host = performance.now() - t0;
    if (timer && start !== undefined && end !== undefined) {
      times.push(timer.elapsedMs(start, end));
      timer.release?.([start, end]);
    } else {
      times.push(host);
    }
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] / calls;
}

/** Float64 recurrence for one head: o_t = q_t S_t, S_t = λ S_{t−1} + k_tᵀ v_t. */
function oracleHead(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, T_: number, slope: number): Float64Array {
  const lambda = Math.exp(-Math.fround(slope));
  const S = new Float64Array(D * E);
  const o = new Float64Array(T_ * E);
  for (let t = 0; t < T_; t++) {
    for (let d = 0; d < D; d++) {
      const kd = k[t * D + d];
      const qd = q[t * D + d];
      for (let e = 0; e < E; e++) {
        const s = lambda * S[d * E + e] + kd * v[t * E + e];
        S[d * E + e] = s;
        o[t * E + e] += qd * s;
      }
    }
  }
  return o;
}

function relRms(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

async function copyBandwidth(be: WebGpuBackend): Promise<number> {
  // 1 GiB of f32, or the largest buffer the device binds.
  const n = Math.min(2 ** 28, Math.floor(be.capabilities.limits.maxStorageBindingBytes / 4));
  const x = T.full([n], 1, { backend: be });
  const y = T.copy(x);
  const bad = (await y.data()).findIndex((value) => value !== 1);
  y.dispose();
  if (bad >= 0) throw new Error(`copy: element ${bad} of the copy is wrong`);
  const ms = await medianQueued(be, 5, 4, () => T.copy(x).dispose());
  x.dispose();
  return (2 * n * 4) / (ms / 1e3) / 1e9;
}

/** f32 matmul n³: checked on sampled entries against float64, then TFLOP/s. */
async function matmulRows(be: WebGpuBackend) {
  const rows: Record<string, unknown>[] = [];
  for (const n of MATMUL) {
    const a = T.randomUniform([n, n], { seed: 1, low: -1, high: 1 });
    const b = T.randomUniform([n, n], { seed: 2, low: -1, high: 1 });
    const c = T.matmul(a, b);
    const [ha, hb, hc] = [await a.data(), await b.data(), await c.data()];
    c.dispose();
    let num = 0;
    let den = 0;
    for (let s = 0; s < 256; s++) {
      const i = (s * 7919) % n;
      const j = (s * 104729) % n;
      let want = 0;
      for (let p = 0; p < n; p++) want += ha[i * n + p] * hb[p * n + j];
      num += (hc[i * n + j] - want) ** 2;
      den += want ** 2;
    }
    const err = Math.sqrt(num / den);
    const ok = err <= 1e-4;
    const ms = ok ? await medianQueued(be, 7, Math.max(1, Math.round(2e10 / (2 * n ** 3))), () => T.matmul(a, b).dispose()) : null;
    const row = { suite: "matmul", backend: "webgpu", device: be.capabilities.device, m: n, k: n, n, dtype: "f32", ms, tflops: ms ? (2 * n ** 3) / (ms / 1e3) / 1e12 : null, rel_err: err, ok, clock: clock(be) };
    console.log(JSON.stringify(row));
    rows.push(row);
    a.dispose();
    b.dispose();
  }
  return rows;
}

async function attention(be: WebGpuBackend, copyGbps: number) {
  const rows: Record<string, unknown>[] = [];
  const slopeValues = Array.from({ length: H }, (_, h) => 2 ** ((-8 * (h + 1)) / H));
  const slopes = T.slopesTensor(slopeValues);
  for (const seqLen of Ts) {
    const B = TOKENS / seqLen;
    const make = (seed: number, last: number) => T.randomNormal([B, H, seqLen, last], { seed, std: 0.1, dtype: DTYPE });
    const [q, k, v, dO] = [make(1, D), make(2, D), make(3, E), make(4, E)];
    const dS = T.zeros([B, H, D, E]);
    // Correctness first, on two heads of the first sequence: a failing kernel is not timed.
    const { output, state } = T.lightningAttention(q, k, v, slopes, { returnState: true });
    let err = 0;
    for (const h of [0, H - 1]) {
      const sl = (x: T.Tensor, last: number) => T.slice(x, [0, h, 0, 0], [1, h + 1, seqLen, last]);
      const [qh, kh, vh, oh] = [sl(q, D), sl(k, D), sl(v, E), sl(output, E)];
      const want = oracleHead(await qh.data(), await kh.data(), await vh.data(), seqLen, slopeValues[h]);
      err = Math.max(err, relRms(await oh.data(), want));
      for (const t of [qh, kh, vh, oh]) t.dispose();
    }
    output.dispose();
    state.dispose();
    const ok = err <= (DTYPE === "f32" ? 1e-4 : 5e-3);
    let fwd: number | null = null;
    let fwdbwd: number | null = null;
    let kernelMs: Record<string, number> | null = null;
    if (ok) {
      // Outputs are disposed as soon as enqueued: their buffers return to the pool, and the queue
      // runs in order, so a later call reusing them waits for this one.
      const run = (backward: boolean) => {
        const o = T.lightningAttention(q, k, v, slopes);
        const g = backward ? T.lightningAttentionBackward(q, k, v, slopes, dO, dS) : null;
        o.dispose();
        if (g) for (const t of [g.dq, g.dk, g.dv, g.dInitialState]) t?.dispose();
      };
      run(true);
      fwd = await medianQueued(be, 7, 1, () => run(false));
      fwdbwd = await medianQueued(be, 5, 1, () => run(true));
      const byKernel = await be.profileDispatches(() => run(false));
      kernelMs = byKernel && Object.fromEntries(byKernel.map((r) => [r.key, r.ms]));
    }
    const minBytes = 4 * B * H * seqLen * D * (DTYPE === "f32" ? 4 : 2); // q, k, v, o once
    const gbps = fwd ? minBytes / (fwd / 1e3) / 1e9 : null;
    rows.push({
      suite: "attention",
      impl: "chunked",
      backend: "webgpu",
      device: be.capabilities.device,
      B,
      T: seqLen,
      H,
      D,
      E,
      dtype: DTYPE,
      fwd_ms: fwd,
      fwdbwd_ms: fwdbwd,
      tokens_per_s: fwd ? TOKENS / (fwd / 1e3) : null,
      gbps,
      pct_copy: gbps ? (100 * gbps) / copyGbps : null,
      rel_err: err,
      ok,
      clock: clock(be),
      kernel_ms: kernelMs,
    });
    console.log(JSON.stringify(rows[rows.length - 1]));
    for (const t of [q, k, v, dO, dS]) t.dispose();
  }
  slopes.dispose();
  return rows;
}

async function decode(be: WebGpuBackend, copyGbps: number) {
  const B = 64;
  const slopes = T.slopesTensor(Array.from({ length: H }, (_, h) => 2 ** ((-8 * (h + 1)) / H)));
  const q = T.randomNormal([B, H, D], { seed: 1, std: 0.1 });
  const k = T.randomNormal([B, H, D], { seed: 2, std: 0.1 });
  const v = T.randomNormal([B, H, E], { seed: 3, std: 0.1 });
  const S = T.randomNormal([B, H, D, E], { seed: 4, std: 0.1 });
  // Queued 32 per wait: one step is about as long as a submission and fence wait.
  const ms = await medianQueued(be, 21, 32, () => {
    const r = T.lightningStep(q, k, v, slopes, S);
    r.output.dispose();
    r.state.dispose();
  });
  const bytes = 2 * B * H * D * E * 4;
  const gbps = bytes / (ms / 1e3) / 1e9;
  for (const t of [q, k, v, S, slopes]) t.dispose();
  return { suite: "decode", impl: "step", backend: "webgpu", device: be.capabilities.device, B, T: 1, H, D, E, dtype: "f32", fwd_ms: ms, fwdbwd_ms: null, tokens_per_s: B / (ms / 1e3), gbps, pct_copy: (100 * gbps) / copyGbps, rel_err: null, ok: true, clock: clock(be) };
}

/** Which clock the times came from. */
const clock = (backend: WebGpuBackend) => (backend.timer ? "gpu-timestamp" : "host");

const be = await createWebGpuBackend();
console.log(`device: ${be.capabilities.device}; features: ${be.capabilities.features.join(", ")}; limits: ${JSON.stringify(be.capabilities.limits)}`);
const report: Record<string, unknown> = { date: new Date().toISOString(), device: be.capabilities.device, capabilities: be.capabilities };

if (!args.includes("--skip-conformance")) {
  registerTestBackend({ name: "webgpu", create: () => be });
  await conformanceSuite({ dtypes: ["f32", "f16", "bf16"] });
  const results = await runCollected((name) => name.includes("[webgpu]"));
  for (const r of results) console.log(`${r.ok ? "pass" : "FAIL"} ${r.name} (${r.ms.toFixed(0)} ms)${r.error ? `: ${r.error}` : ""}`);
  report.conformance = { passed: results.filter((r) => r.ok).length, failed: results.filter((r) => !r.ok).length, results };
}
T.setBackend(be);
const copyGbps = await copyBandwidth(be);
console.log(`copy bandwidth (shader copy, read + write): ${copyGbps.toFixed(0)} GB/s (${clock(be)} clock)`);
report.copy_gbps = copyGbps;
report.benchmarks = [...(await matmulRows(be)), ...(await attention(be, copyGbps)), await decode(be, copyGbps)];
writeFileSync(outFile, JSON.stringify(report, null, 2));
console.log(`wrote ${outFile}`);
be.dispose();
process.exit(0);
