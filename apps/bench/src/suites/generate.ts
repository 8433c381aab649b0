/**
 * generate: the TNL decode loop without HTTP — tokens/s of `BatchDecoder` at batch sizes 1…256 for
 * the serving shapes (random weights), to split a served token's time between the device and the
 * host. Per batch size:
 *
 * - `graph-queued`: steps enqueued back to back (graph replays where the backend records graphs),
 *   one wait at the end: the device's time per step, what a loop that never waits could reach.
 * - `graph-loop`: a greedy loop that reads each step's tokens before feeding them to the next,
 *   as `generate()` does: device time plus the host's turn-around.
 * - `graph-chained`: a greedy loop that launches step n+1 from step n's argmax on the device
 *   (`null` tokens) before reading step n's tokens, as the server does for greedy rows.
 * - `eager-loop`: the same loop with graphs off (every kernel launched from JavaScript).
 *
 * Then one eager step under `profileOps`: kernels per step and their time by op (printed; the
 * kernel count goes into the rows). Bandwidth: the weights (read once per step, whatever the batch)
 * plus the f32 states (read and written once) over the step time.
 */
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import { BatchDecoder, initState, type ModelDType, parameterCount, resolveDType, type TnlConfig, type TnlParams, disposeParams, mapParams } from "@lightning-ts/tnl";
import { fastRandomParams, SHAPE_436M, SHAPES, SMALL_CONFIG, type ShapeName } from "../serve/models.js";
import { intList, result, summarise, type BenchResult, type Suite } from "../suite.js";

interface GenerateOptions {
  batches: number[];
  shape: ShapeName;
  dtype?: string;
  steps: number;
  extraRows: number[];
  extraSpread?: boolean;
  profile: boolean;
}

/** Bytes a step must move at least: the weights once and the f32 states in and out. */
function stepBytes(config: TnlConfig, dtype: ModelDType, batch: number): number {
  const weights = parameterCount(config) * T.byteSize(dtype);
  const hd = config.dModel / config.numHeads;
  const states = config.lrpe.reduce((sum, lrpe) => sum + batch * config.numHeads * (lrpe ? 2 * hd : hd) * hd * 4, 0);
  return weights + 2 * states;
}

/** Milliseconds per step of `steps` steps fed with the previous step's greedy tokens, read each time. */
async function loop(decoder: BatchDecoder, tokens: number[], steps: number): Promise<number> {
  let ids = tokens;
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) ids = Array.from((await decoder.step(ids).greedy.data()) as Int32Array);
  return (performance.now() - t0) / steps;
}

/** Milliseconds per step of `steps` greedy steps, each launched from the last one's argmax before that one is read. */
async function chained(decoder: BatchDecoder, tokens: number[], steps: number): Promise<number> {
  const t0 = performance.now();
  let read = decoder.step(tokens).greedy.data();
  const fromDevice = tokens.map(() => null);
  for (let s = 1; s < steps; s++) {
    const next = decoder.step(fromDevice).greedy.data();
    await read;
    read = next;
  }
  await read;
  return (performance.now() - t0) / steps;
}

/**
 * Milliseconds per step of `steps` steps enqueued with fixed tokens and one wait at the end; with
 * `extra`, row 0 also reads that many tokens before its own each step (a prompt segment: the
 * longest one a step can hold, the step kernel's slowest row), or with `spread` each of the first
 * `extra` rows one token (the same extra rows without a long segment).
 */
async function queued(decoder: BatchDecoder, tokens: number[], steps: number, extra = 0, spread = false): Promise<number> {
  const before = spread ? Array.from({ length: Math.min(extra, tokens.length) }, (_, r) => [tokens[r]]) : [Array.from({ length: extra }, (_, i) => tokens[i % tokens.length])];
  const options = extra > 0 ? { before } : {};
  const t0 = performance.now();
  let last: T.Tensor | undefined;
  for (let s = 0; s < steps; s++) last = decoder.step(tokens, options).greedy;
  await last!.data();
  return (performance.now() - t0) / steps;
}

function decoderFor(params: TnlParams, config: TnlConfig, batch: number, graphs: boolean, backend: T.Backend, extraRows = 0): BatchDecoder {
  const decoder = new BatchDecoder(params, config, { capacity: batch, graphs, extraRows });
  const state = initState(config, batch, { backend });
  decoder.add(state);
  state.kv.forEach((t) => t.dispose());
  return decoder;
}

export const generateSuite: Suite = {
  name: "generate",
  description: "the TNL decode loop without HTTP (BatchDecoder): device time per step, a greedy loop, eager steps, kernels per step",
  defaults: { warmup: 3, reps: 5 },
  configure(command) {
    command
      .option("--batches <list>", "sequences decoded at once, comma-separated", intList, [1, 8, 64, 256])
      .option("--shape <name>", `model shape: ${SHAPES.join(" or ")} (random weights)`, "436m")
      .option("--dtype <dtype>", "weights and activations: bf16, f16 or f32 (default: the backend's)")
      .option("--steps <n>", "steps per timed rep", (v) => Number.parseInt(v, 10), 64)
      .option("--extra-rows <list>", "also time graph-queued steps in which row 0 reads this many tokens before its own (a prompt segment), comma-separated", intList, [])
      .option("--extra-spread", "with --extra-rows, also time the same extra rows as one token before their own on each of the first rows")
      .option("--no-profile", "skip the per-op profile of one eager step");
  },
  columns: [
    ["impl", "impl"],
    ["B", "B"],
    ["step ms", "fwd_ms"],
    ["tokens/s", "tokens_per_s"],
    ["GB/s", "gbps"],
    ["kernels/step", "kernels"],
    ["spread %", "spread_pct"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const o = raw as unknown as GenerateOptions;
    if (!(SHAPES as readonly string[]).includes(o.shape)) throw new Error(`--shape: expected ${SHAPES.join(" or ")}, got "${o.shape}"`);
    if (!Number.isInteger(o.steps) || o.steps < 1) throw new Error(`--steps: expected a positive integer, got ${String(o.steps)}`);
    const config = o.shape === "436m" ? SHAPE_436M : SMALL_CONFIG;
    const results: BenchResult[] = [];
    for (const name of backends) {
      const backend = await startBackend(name, {}, log);
      if (!backend) continue;
      const dtype = resolveDType(backend, o.dtype);
      log(`${name}: ${o.shape} (${(parameterCount(config) / 1e6).toFixed(1)}M parameters), ${dtype}, random weights`);
      const bf16 = fastRandomParams(config, 0);
      const params = dtype === "bf16" ? bf16 : mapParams(bf16, (t) => T.cast(t, dtype));
      if (params !== bf16) disposeParams(bf16);
      const base = { suite: "generate", backend: name, device: backend.capabilities.device, dtype, T: 1, H: config.numHeads, shape: o.shape };
      let kernels: number | null = null;
      if (o.profile && backend.timer) {
        const decoder = decoderFor(params, config, 1, false, backend);
        decoder.step([1]);
        await backend.sync();
        const { profile } = await T.profileOps(backend, () => void decoder.step([1]));
        kernels = profile.rows.reduce((n, r) => n + r.calls, 0);
        log(`one eager step at batch 1: ${kernels} kernels, ${profile.totalMs.toFixed(3)} ms of kernels, ${profile.wallMs.toFixed(3)} ms wall\n${T.formatProfile(profile, 16)}`);
        decoder.dispose();
      }
      for (const B of o.batches) {
        const tokens = Array.from({ length: B }, (_, r) => (r * 7919 + 11) % config.vocabSize);
        const bytes = stepBytes(config, dtype, B);
        const timings: [string, boolean, (d: BatchDecoder, tokens: number[], steps: number) => Promise<number>, number][] = [
          ["graph-queued", true, queued, 0],
          ["graph-loop", true, loop, 0],
          ["graph-chained", true, chained, 0],
          ["eager-loop", false, loop, 0],
          ...o.extraRows.map((x): [string, boolean, typeof queued, number] => [`graph-queued+${x}`, true, (d, t, n) => queued(d, t, n, x), x]),
          ...(o.extraSpread ? o.extraRows : []).map((x): [string, boolean, typeof queued, number] => [`graph-queued+${x}/row`, true, (d, t, n) => queued(d, t, n, x, true), x]),
        ];
        for (const [impl, graphs, timed, extra] of timings) {
          if (graphs && !backend.captureGraph) continue;
          const decoder = decoderFor(params, config, B, graphs, backend, extra);
          try {
            for (let i = 0; i < common.warmup; i++) await timed(decoder, tokens, 2);
            const times: number[] = [];
            for (let i = 0; i < common.reps; i++) times.push(await timed(decoder, tokens, o.steps));
            const t = summarise(times);
            results.push(
              result({
                ...base,
                impl,
                ok: true,
                B,
                fwd_ms: t.median,
                tokens_per_s: B / (t.median / 1000),
                gbps: bytes / (t.median / 1000) / 1e9,
                kernels,
                spread_pct: Math.round(t.spread_pct),
              }),
            );
          } catch (err) {
            log(`${impl} at B = ${B} failed: ${err instanceof Error ? err.message : String(err)}`);
            results.push(result({ ...base, impl, ok: false, B, error: err instanceof Error ? err.message : String(err) }));
          } finally {
            decoder.dispose();
          }
        }
      }
      disposeParams(params);
    }
    return results;
  },
};
