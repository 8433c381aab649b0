/**
 * decode: one recurrent Lightning Attention step (S ← λS + kᵀv, o = qS) at batch sizes 1…64, the
 * work of one generated token per layer. Reports time and the bandwidth achieved on the state,
 * which is read and written once per step: 2 · B·H·D·E · 4 bytes (f32).
 */
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import { intList, result, summarise, timeQueued, type BenchResult, type Suite, type Timing, deviceTimer } from "../suite.js";

/**
 * Steps enqueued per device wait on WebGPU: enough that the GPU is busy between waits (on the H200,
 * 32 steps of 0.06 ms a wait left its SM clock at 720–1,095 MHz after 2 s of warm-up, where the
 * attention suite's longer rounds ran at 1,980).
 */
const WEBGPU_STEPS_PER_WAIT = 256;

/** The step in float64 on the host, from the same inputs. */
function oracle(q: Float32Array, k: Float32Array, v: Float32Array, S: Float32Array, slopes: number[], B: number, H: number, D: number, E: number) {
  const o = new Float64Array(B * H * E);
  const next = new Float64Array(S.length);
  for (let bh = 0; bh < B * H; bh++) {
    const lambda = Math.exp(-Math.fround(slopes[bh % H]));
    for (let d = 0; d < D; d++) {
      for (let e = 0; e < E; e++) {
        const i = (bh * D + d) * E + e;
        next[i] = lambda * S[i] + k[bh * D + d] * v[bh * E + e];
        o[bh * E + e] += q[bh * D + d] * next[i];
      }
    }
  }
  return { o, next };
}

function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  const e = Math.sqrt(num / Math.max(den, 1e-300));
  return Number.isFinite(e) ? e : Infinity;
}

export const decodeSuite: Suite = {
  name: "decode",
  description: "one recurrent Lightning Attention step at batch sizes 1…64: time and bandwidth on the state",
  defaults: { warmup: 2, reps: 5 },
  configure(command) {
    command
      .option("--batches <list>", "batch sizes, comma-separated", intList, [1, 4, 16, 64])
      .option("--heads <n>", "heads H", (v) => Number.parseInt(v, 10), 16)
      .option("--dim <n>", "head dims D = E", (v) => Number.parseInt(v, 10), 128)
      .option(
        "--segments <list>",
        "also time steps in which row 0 reads this many tokens before its own (prompt segments), comma-separated, beside the plain step, both queued 64 a wait and timed by the device where it can",
        intList,
        [],
      );
  },
  columns: [
    ["backend", "backend"],
    ["impl", "impl"],
    ["B", "B"],
    ["H", "H"],
    ["D=E", "D"],
    ["step ms", "fwd_ms"],
    ["state MiB", "state_mib"],
    ["GB/s", "gbps"],
    ["rel_err", "rel_err"],
    ["spread %", "spread_pct"],
    ["clock", "clock"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const { batches, heads: H, dim: D, segments = [] } = raw as { batches: number[]; heads: number; dim: number; segments?: number[] };
    const E = D;
    const slopeValues = T.tnlSlopes(H, 0, 2);
    const results: BenchResult[] = [];
    for (const name of backends) {
      const backend = await startBackend(name, {}, log);
      if (!backend) continue;
      for (const B of batches) {
        const q = T.randomNormal([B, H, D], { seed: 1, std: 0.1 });
        const k = T.randomNormal([B, H, D], { seed: 2, std: 0.1 });
        const v = T.randomNormal([B, H, E], { seed: 3, std: 0.1 });
        const S = T.randomNormal([B, H, D, E], { seed: 4, std: 0.1 });
        const slopes = T.slopesTensor(slopeValues);
        const base = { suite: "decode", impl: "lightningStep", backend: name, device: backend.capabilities.device, dtype: "f32", B, T: 1, H, D, E };
        const stepOnce = T.lightningStep(q, k, v, slopes, S);
        const host = async (t: T.Tensor) => (await t.data()) as Float32Array;
        const want = oracle(await host(q), await host(k), await host(v), await host(S), slopeValues, B, H, D, E);
        const err = Math.max(relErr(await host(stepOnce.output), want.o), relErr(await host(stepOnce.state), want.next));
        stepOnce.output.dispose();
        stepOnce.state.dispose();
        if (!(err <= 1e-5)) {
          log(`B=${B}: FAILED the float64 check (rel_err ${err.toExponential(2)}); not timed`);
          results.push(result({ ...base, ok: false, rel_err: err }));
        } else {
          const step = () => T.scope(() => void T.lightningStep(q, k, v, slopes, S));
          let timing;
          if (name === "webgpu") {
            // A step is tens of microseconds there, about one submission and fence wait: queue
            // WEBGPU_STEPS_PER_WAIT steps per wait so the time is the kernel's, as in a decode loop
            // (and timed by the device's clock where the adapter has timestamp queries).
            timing = await timeQueued(backend, step, WEBGPU_STEPS_PER_WAIT, common.warmup, common.reps, deviceTimer(backend));
          } else {
            const times: number[] = [];
            for (let i = 0; i < common.warmup + common.reps; i++) {
              const t0 = performance.now();
              step();
              await backend.sync();
              if (i >= common.warmup) times.push(performance.now() - t0);
            }
            timing = summarise(times);
          }
          results.push(timedRow(base, timing, err, B, B * H * D * E * 4));
        }
        if (segments.length > 0) results.push(...(await timeSegments(backend, name, B, H, D, segments, slopeValues, common, log)));
        for (const t of [q, k, v, S, slopes]) t.dispose();
      }
    }
    return results;
  },
};

/** A timed step's row: `tokens` a step, the state's bytes read and written once. */
function timedRow(base: Partial<BenchResult> & Pick<BenchResult, "suite" | "impl" | "backend" | "device" | "dtype">, timing: Timing, err: number, tokens: number, stateBytes: number): BenchResult {
  return result({
    ...base,
    ok: true,
    rel_err: err,
    fwd_ms: timing.median,
    tokens_per_s: tokens / (timing.median / 1000),
    gbps: (2 * stateBytes) / (timing.median / 1000) / 1e9,
    state_mib: stateBytes / 2 ** 20,
    spread_pct: Math.round(timing.spread_pct),
    clock: timing.clock,
  });
}

/** Steps enqueued per wait when timing prompt segments (kernel time, not launch latency). */
const SEGMENT_STEPS_PER_WAIT = 64;

/**
 * The plain step and steps with prompt segments (row 0 reading `extra` tokens before its own), each
 * queued SEGMENT_STEPS_PER_WAIT a wait, timed by the device's clock where the backend has one. A
 * segmented step is checked against the CPU backend's kernel on the same inputs before it is timed.
 */
async function timeSegments(
  backend: T.Backend,
  name: string,
  B: number,
  H: number,
  D: number,
  extras: number[],
  slopeValues: number[],
  common: { warmup: number; reps: number },
  log: (line: string) => void,
): Promise<BenchResult[]> {
  const E = D;
  const cpu = T.createCpuBackend();
  const results: BenchResult[] = [];
  for (const extra of [0, ...extras]) {
    const N = B + extra;
    const frame = T.beginScope();
    try {
      const q = T.randomNormal([N, H, D], { seed: 11, std: 0.1 });
      const k = T.randomNormal([N, H, D], { seed: 12, std: 0.1 });
      const v = T.randomNormal([N, H, E], { seed: 13, std: 0.1 });
      const S = T.randomNormal([B, H, D, E], { seed: 14, std: 0.1 });
      const slopes = T.slopesTensor(slopeValues);
      const offsets = [0, ...Array.from({ length: B }, () => extra)];
      const seg = extra > 0 ? T.tensor(offsets, [B + 1], { dtype: "i32" }) : undefined;
      const options = seg ? { segments: seg } : {};
      const impl = extra > 0 ? `lightningStep+${extra} segments, queued` : "lightningStep, queued";
      const base = { suite: "decode", impl, backend: name, device: backend.capabilities.device, dtype: "f32", B, T: 1, H, D, E };
      const got = T.lightningStep(q, k, v, slopes, S, options);
      const onCpu = (t: T.Tensor) => T.copyTo(t, cpu);
      const want = T.lightningStep(onCpu(q), onCpu(k), onCpu(v), onCpu(slopes), onCpu(S), seg ? { segments: onCpu(seg) } : {});
      const err = Math.max(relErr(await got.output.data(), await want.output.data()), relErr(await got.state.data(), await want.state.data()));
      if (!(err <= 1e-5)) {
        log(`B=${B} +${extra}: FAILED the check against the CPU kernel (rel_err ${err.toExponential(2)}); not timed`);
        results.push(result({ ...base, ok: false, rel_err: err }));
        continue;
      }
      const step = () => T.scope(() => void T.lightningStep(q, k, v, slopes, S, options));
      const timing = await timeQueued(backend, step, SEGMENT_STEPS_PER_WAIT, common.warmup, common.reps, backend.timer);
      results.push(timedRow(base, timing, err, N, B * H * D * E * 4));
    } finally {
      T.endScope(frame);
    }
  }
  return results;
}
