/**
 * state: `lightningState` (the state a span of tokens adds, without its output; one pass per layer
 * and direction of sequence-parallel training) per backend and shape [B, H, T, D, E], forward and
 * reversed weights. Each case is first checked against the float64 definition S = Σ_t w_t k_tᵀ v_t
 * on the (b, h) pairs `--check-heads` picks (a full float64 pass over 65,536 tokens of every head
 * would take minutes), then timed. GB/s counts k and v read once (the state written is small).
 */
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import type { DType } from "@lightning-ts/tensor";
import { closeness } from "@lightning-ts/tensor/testing";
import { result, time, timeQueued, type BenchResult, type Suite, deviceTimer } from "../suite.js";

/** Relative RMS bound against float64, by input dtype (16-bit: the rounding of k·w). */
const BOUND: Record<string, number> = { f32: 1e-5, bf16: 6e-3, f16: 8e-4 };
/** Bytes per timed wait on a GPU: enough that the submission and fence cost little beside them. */
const BYTES_PER_WAIT = 2 ** 31;

interface StateOptions {
  shapes: number[][];
  dtype: DType;
  checkHeads: number;
}

/** "BxHxTxDxE,…" → [[B, H, T, D, E], …]. */
function shapeList(value: string): number[][] {
  return value.split(",").map((s) => {
    const dims = s.trim().split("x").map(Number);
    if (dims.length !== 5 || dims.some((d) => !Number.isInteger(d) || d <= 0)) throw new Error(`--shapes: expected BxHxTxDxE (positive integers), got "${s}"`);
    return dims;
  });
}

/** Σ_t w_t k_tᵀ v_t of pair `bh` in float64 (k [T, D], v [T, E] of that pair, flat). */
function definition(k: ArrayLike<number>, v: ArrayLike<number>, T_: number, D: number, E: number, slope: number, reverse: boolean): Float64Array {
  const S = new Float64Array(D * E);
  for (let t = 0; t < T_; t++) {
    const w = Math.exp(-slope * (reverse ? t + 1 : T_ - 1 - t));
    for (let d = 0; d < D; d++) {
      const kw = w * k[t * D + d];
      if (kw === 0) continue;
      for (let e = 0; e < E; e++) S[d * E + e] += kw * v[t * E + e];
    }
  }
  return S;
}

export const stateSuite: Suite = {
  name: "state",
  description: "lightningState (the state a span adds, sequence parallelism's per-layer pass) per backend and shape, checked against float64",
  defaults: { warmup: 3, reps: 9 },
  configure(command) {
    command
      .option("--shapes <list>", "BxHxTxDxE, comma-separated", shapeList, [
        [1, 8, 65536, 128, 128],
        [1, 8, 65536, 256, 128],
      ])
      .option("--dtype <dtype>", "input dtype: bf16, f16 or f32", "bf16")
      .option("--check-heads <n>", "(b, h) pairs checked against float64 per case", (v) => Number.parseInt(v, 10), 1);
  },
  columns: [
    ["impl", "impl"],
    ["backend", "backend"],
    ["B", "B"],
    ["H", "H"],
    ["T", "T"],
    ["D", "D"],
    ["E", "E"],
    ["dtype", "dtype"],
    ["ms", "fwd_ms"],
    ["GB/s", "gbps"],
    ["rel err", "rel_err"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const { shapes, dtype, checkHeads } = raw as unknown as StateOptions;
    if (!(dtype in BOUND)) throw new Error(`--dtype: expected bf16, f16 or f32, got ${String(dtype)}`);
    if (!(Number.isInteger(checkHeads) && checkHeads >= 1)) throw new Error(`--check-heads: expected a positive integer, got ${checkHeads}`);
    const results: BenchResult[] = [];
    for (const name of backends) {
      const backend = await startBackend(name, {}, log);
      if (!backend) continue;
      for (const [B, H, L, D, E] of shapes) {
        const k = T.randomNormal([B, H, L, D], { seed: 11, dtype, backend });
        const v = T.randomNormal([B, H, L, E], { seed: 12, dtype, backend });
        // From strong decay to almost none (TNL's slopes span about this range).
        const slopeValues = Array.from({ length: H }, (_, h) => 2 ** (-8 * (h + 1) / H));
        const slopes = T.tensor(slopeValues, [H], { backend });
        const [kh, vh] = [await k.data(), await v.data()];
        for (const reverse of [false, true]) {
          const impl = reverse ? "lightningState reversed" : "lightningState";
          const base = { suite: "state", impl, backend: name, device: backend.capabilities.device, dtype, B, H, T: L, D, E };
          const S = T.lightningState(k, v, slopes, { reverse });
          const got = await S.data();
          S.dispose();
          let err = 0;
          for (let i = 0; i < Math.min(checkHeads, B * H); i++) {
            const bh = Math.floor((i * B * H) / Math.min(checkHeads, B * H));
            const want = definition(kh.subarray(bh * L * D, (bh + 1) * L * D), vh.subarray(bh * L * E, (bh + 1) * L * E), L, D, E, slopeValues[bh % H], reverse);
            err = Math.max(err, closeness(got.subarray(bh * D * E, (bh + 1) * D * E), want).relRms);
          }
          if (!(err <= BOUND[dtype])) {
            log(`${name} ${impl} [${B}, ${H}, ${L}, ${D}, ${E}] ${dtype}: FAILED, relative RMS ${err} against float64 (bound ${BOUND[dtype]}); not timed`);
            results.push(result({ ...base, ok: false, rel_err: err }));
            continue;
          }
          const call = () => T.lightningState(k, v, slopes, { reverse }).dispose();
          const bytes = (k.size + v.size) * T.byteSize(dtype);
          const timing = name === "cpu" ? time(call, common.warmup, common.reps) : await timeQueued(backend, call, Math.max(1, Math.round(BYTES_PER_WAIT / bytes)), common.warmup, common.reps, deviceTimer(backend));
          const gbps = bytes / (timing.median / 1000) / 1e9;
          log(`${name} ${impl} [${B}, ${H}, ${L}, ${D}, ${E}] ${dtype}: ${timing.median.toFixed(4)} ms, ${gbps.toFixed(0)} GB/s`);
          results.push(result({ ...base, ok: true, rel_err: err, fwd_ms: timing.median, gbps, tokens_per_s: (B * L) / (timing.median / 1000), spread_pct: Math.round(timing.spread_pct), clock: timing.clock }));
        }
        for (const t of [k, v, slopes]) t.dispose();
      }
      backend.dispose();
    }
    return results;
  },
};
