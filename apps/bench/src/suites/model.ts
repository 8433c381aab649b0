/**
 * model: a TNL end to end. Training-step tokens/s (forward, backward, AdamW) as the sequence
 * length grows at a fixed number of tokens per step, and generation tokens/s (one recurrent step
 * per token, batch 1) after contexts of growing length — both should stay flat for linear
 * attention.
 *
 * Two modes:
 * - default: a small f32 model; each case is first checked against the same model and inputs in
 *   float64 on the CPU, then timed.
 * - `--preset NAME`: training steps only, at a real size (docs/PERFORMANCE.md §2: `tnl-385m-bench`),
 *   no float64 copy. A step is what `pnpm train` runs: gradient accumulation over micro-batches
 *   of `--micro-batch-tokens`, clipping to 1.0, AdamW (lr 1e-4, weight decay 0.1, f32 master
 *   weights for bf16 parameters). Each T starts from fresh parameters; a case is ok when its last
 *   loss is finite and its first is within 10% of ln V (random init). A case that fails (out of
 *   memory, a kernel error) is a row with ok = false and the error, and the next case runs.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { valueAndGrad } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import type { Backend, OpProfile, Tensor } from "@lightning-ts/tensor";
import {
  disposeParams,
  disposeState,
  initParams,
  loss,
  makeConfig,
  mapParams,
  parameterCount,
  PRESETS,
  prefill,
  resolveDType,
  step,
  trainStep,
  type MicroBatch,
  type ModelDType,
  type TnlConfig,
  type TnlParams,
} from "@lightning-ts/tnl";
import { outputPath } from "../report.js";
import { intList, result, summarise, type BenchResult, type Suite } from "../suite.js";

interface ModelOptions {
  preset?: string;
  dModel?: number;
  layers?: number;
  heads?: number;
  vocab?: number;
  gluDim?: number;
  tokens?: number;
  t?: number[];
  contexts: number[];
  genTokens: number;
  dtype?: string;
  microBatchTokens?: number;
  steps?: number;
  peakTflops?: number;
  profile?: string;
}

/** The training shape of docs/PERFORMANCE.md §2 (the PyTorch anchor's): untied head, GPT-2 vocabulary, 436.4M parameters. */
const BENCH_PRESETS: Record<string, TnlConfig> = {
  "tnl-385m-bench": makeConfig({ vocabSize: 50272, dModel: 1024, numLayers: 24, numHeads: 8, gluDim: 2816, tieWordEmbeddings: false }),
  ...PRESETS,
};

/** MFU's denominator on CUDA without --peak-tflops: the dense bf16 matmul rate measured on the H200 (docs/PERFORMANCE.md). */
const CUDA_PEAK_TFLOPS = 790;
const LR = 1e-4;
const WEIGHT_DECAY = 0.1;
const GRAD_CLIP = 1;

/** Seeded ids in [3, V) (0–2 are pad, bos and eos). */
function ids(n: number, V: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return 3 + (s % (V - 3));
  });
}

const relDiff = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);

function maxRel(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/** The parameters copied to the CPU oracle backend in float64. */
async function toF64(params: TnlParams, oracle: Backend): Promise<TnlParams> {
  const host = new Map<Tensor, Float64Array>();
  for (const t of T.collectTensors(params)) host.set(t, Float64Array.from(await t.data()));
  return mapParams(params, (t) => T.tensor(host.get(t)!, t.shape, { dtype: "f64", backend: oracle }));
}

export const modelSuite: Suite = {
  name: "model",
  description: "TNL training-step tokens/s vs sequence length, and generation tokens/s vs context length",
  defaults: { warmup: 1, reps: 3 },
  configure(command) {
    const int = (v: string) => Number.parseInt(v, 10);
    command
      .option("--preset <name>", `train steps only, at this size, without the float64 check (${Object.keys(BENCH_PRESETS).join(", ")})`)
      .option("--d-model <n>", "model width (default 64; with --preset, overrides it)", int)
      .option("--layers <n>", "layers (default 2)", int)
      .option("--heads <n>", "heads (default 2)", int)
      .option("--vocab <n>", "vocabulary size (default 512)", int)
      .option("--glu-dim <n>", "GLU width (default 8·round(d/3))", int)
      .option("--tokens <n>", "tokens per training step, each T must divide it (default 1024; with --preset 65536)", int)
      .option("--t <list>", "training sequence lengths (default 64,256,1024; with --preset 2048,8192,32768,65536)", intList)
      .option("--contexts <list>", "context lengths before generating (not with --preset)", intList, [128, 1024, 4096])
      .option("--gen-tokens <n>", "tokens generated per context (timed)", int, 16)
      .option("--dtype <dtype>", "with --preset: bf16 or f32 (default bf16 on cuda, f32 elsewhere)")
      .option("--micro-batch-tokens <n>", "with --preset: tokens per micro-batch, at least one row (default: the whole step)", int)
      .option("--steps <n>", "with --preset: timed steps (default --reps)", int)
      .option("--peak-tflops <x>", `with --preset: MFU's peak (default on cuda ${CUDA_PEAK_TFLOPS}, the H200 bf16 matmul rate; elsewhere no MFU)`, Number.parseFloat)
      .option("--profile <file>", "with --preset: profile one more step per T per op, write the profiles as JSON and print them");
  },
  columns: [
    ["case", "impl"],
    ["backend", "backend"],
    ["dtype", "dtype"],
    ["B", "B"],
    ["T / context", "T"],
    ["ms", "fwd_ms"],
    ["tokens/s", "tokens_per_s"],
    ["mfu", "mfu"],
    ["peak GiB", "peak_gib"],
    ["loss", "loss"],
    ["rel_err", "rel_err"],
    ["spread %", "spread_pct"],
    ["ok", "ok"],
  ],

  async run(context, raw) {
    const o = raw as unknown as ModelOptions;
    if (o.preset !== undefined) return runAtScale(context, o);
    const presetOnly = (["dtype", "microBatchTokens", "steps", "peakTflops", "profile"] as const).filter((k) => o[k] !== undefined);
    if (presetOnly.length) throw new Error(`${presetOnly.map(flag).join(", ")} apply only with --preset (without it the suite checks a small f32 model against float64)`);
    const { backends, options: common, log } = context;
    const dModel = o.dModel ?? 64;
    const config: TnlConfig = makeConfig({ vocabSize: o.vocab ?? 512, dModel, numLayers: o.layers ?? 2, numHeads: o.heads ?? 2, gluDim: o.gluDim ?? 8 * Math.round(dModel / 3) });
    const tokens = o.tokens ?? 1024;
    const lengths = o.t ?? [64, 256, 1024];
    const bad = lengths.find((t) => tokens % t !== 0);
    if (bad !== undefined) throw new Error(`--t: every T must divide --tokens ${tokens}; ${bad} does not`);
    const oracle = T.createCpuBackend({ threads: 1 });
    const results: BenchResult[] = [];
    for (const name of backends) {
      const backend = await startBackend(name, {}, log);
      if (!backend) continue;
      const device = backend.capabilities.device;
      let params = initParams(config, { seed: 1 });
      const base = { suite: "model", backend: name, device, dtype: "f32", H: config.numHeads, D: config.hiddenDim / config.numHeads, E: config.hiddenDim / config.numHeads };

      for (const t of lengths) {
        const B = tokens / t;
        const rows = Array.from({ length: B }, (_, b) => ids(t + 1, config.vocabSize, 7 + b));
        log(`training step, T=${t}`);
        const got = T.scope(() => loss(params, config, rows).dataSync()[0]);
        // The parameters change with every timed step, so the float64 copy is taken per case.
        const params64 = await toF64(params, oracle);
        T.setBackend(oracle);
        const want = T.scope(() => loss(params64, config, rows).dataSync()[0]);
        T.setBackend(backend);
        disposeParams(params64);
        const err = relDiff(got, want);
        const row = { ...base, impl: "train step", B, T: t };
        if (!(err <= 1e-4)) {
          results.push(result({ ...row, ok: false, rel_err: err }));
          continue;
        }
        const opt = new AdamW({ lr: 1e-4 });
        const times: number[] = [];
        for (let i = 0; i < common.warmup + common.reps; i++) {
          const t0 = performance.now();
          params = T.scope(() => {
            const { grads } = valueAndGrad((p: TnlParams) => loss(p, config, rows))(params);
            return opt.step<TnlParams>(params, grads);
          });
          await backend.sync();
          if (i >= common.warmup) times.push(performance.now() - t0);
        }
        const timing = summarise(times);
        results.push(result({ ...row, ok: true, rel_err: err, fwd_ms: timing.median, step_ms: timing.median, tokens_per_s: tokens / (timing.median / 1000), spread_pct: Math.round(timing.spread_pct) }));
      }

      const gen64 = await toF64(params, oracle);
      for (const context of o.contexts) {
        log(`generation after ${context} tokens`);
        const prompt = ids(context, config.vocabSize, 99);
        const next = ids(o.genTokens, config.vocabSize, 5);
        const first = prefill(params, config, [prompt], { logits: "last" });
        const firstStep = step(params, config, first.state, [next[0]]);
        T.setBackend(oracle);
        const want = T.scope(() => {
          const p = prefill(gen64, config, [prompt], { logits: "last" });
          const s = step(gen64, config, p.state, [next[0]]);
          return Float64Array.from(s.logits.dataSync());
        });
        T.setBackend(backend);
        const err = maxRel(await firstStep.logits.data(), want);
        disposeState(firstStep.state);
        firstStep.logits.dispose();
        first.logits.dispose();
        const row = { ...base, impl: "generate", B: 1, T: context };
        if (!(err <= 1e-4)) {
          results.push(result({ ...row, ok: false, rel_err: err }));
          disposeState(first.state);
          continue;
        }
        const times: number[] = [];
        for (let r = 0; r < common.warmup + common.reps; r++) {
          let state = first.state;
          const t0 = performance.now();
          for (const token of next) {
            const s = step(params, config, state, [token]);
            s.logits.dispose();
            if (state !== first.state) disposeState(state);
            state = s.state;
          }
          await backend.sync();
          if (state !== first.state) disposeState(state);
          if (r >= common.warmup) times.push(performance.now() - t0);
        }
        disposeState(first.state);
        const timing = summarise(times);
        results.push(result({ ...row, ok: true, rel_err: err, fwd_ms: timing.median / o.genTokens, tokens_per_s: o.genTokens / (timing.median / 1000), spread_pct: Math.round(timing.spread_pct) }));
      }
      disposeParams(gen64);
      disposeParams(params);
    }
    oracle.dispose();
    return results;
  },
};

/** "microBatchTokens" → "--micro-batch-tokens". */
const flag = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** The preset's config with any of --d-model, --layers, --heads, --vocab, --glu-dim over it. */
function scaleConfig(o: ModelOptions): TnlConfig {
  const base = BENCH_PRESETS[o.preset!];
  if (!base) throw new Error(`--preset: unknown preset ${JSON.stringify(o.preset)}; known: ${Object.keys(BENCH_PRESETS).join(", ")}`);
  return makeConfig({
    vocabSize: o.vocab ?? base.vocabSize,
    dModel: o.dModel ?? base.dModel,
    numLayers: o.layers ?? base.numLayers,
    numHeads: o.heads ?? base.numHeads,
    gluDim: o.gluDim ?? base.gluDim,
    activation: base.activation,
    noScaleEmbedding: base.noScaleEmbedding,
    tieWordEmbeddings: base.tieWordEmbeddings,
    lrpeLayers: base.lrpe.flatMap((on, l) => (on ? [l] : [])).filter((l) => l < (o.layers ?? base.numLayers)),
  });
}

/** Seeded ids [B, T] cut into micro-batches of `microRows` rows, as the trainer cuts a step's batch. */
function microBatches(B: number, t: number, microRows: number, V: number): MicroBatch[] {
  const out: MicroBatch[] = [];
  for (let r = 0; r < B; r += microRows) {
    const n = Math.min(microRows, B - r);
    out.push({ ids: Int32Array.from(ids(n * t, V, 7 + r)), rows: n, span: t });
  }
  return out;
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** The --preset mode: training-step rows in the docs/PERFORMANCE.md §2 format. */
async function runAtScale({ backends, options: common, log }: Parameters<Suite["run"]>[0], o: ModelOptions): Promise<BenchResult[]> {
  const config = scaleConfig(o);
  const params = parameterCount(config);
  const tokens = o.tokens ?? 65536;
  const lengths = o.t ?? [2048, 8192, 32768, 65536];
  const bad = lengths.find((t) => tokens % t !== 0);
  if (bad !== undefined) throw new Error(`--t: every T must divide --tokens ${tokens}; ${bad} does not`);
  const steps = o.steps ?? common.reps;
  const lnV = Math.log(config.vocabSize);
  log(`${o.preset}: d=${config.dModel}, ${config.numLayers} layers, ${config.numHeads} heads, glu ${config.gluDim}, vocab ${config.vocabSize}, ${config.tieWordEmbeddings ? "tied" : "untied"} head: ${(params / 1e6).toFixed(1)}M parameters`);
  const results: BenchResult[] = [];
  const profiles: { backend: string; device: string; dtype: string; T: number; B: number; profile: OpProfile }[] = [];

  for (const name of backends) {
    const backend = await startBackend(name, {}, log);
    if (!backend) continue;
    const device = backend.capabilities.device;
    const dtype: ModelDType = resolveDType(backend, o.dtype);
    if (dtype === "f16") throw new Error("--dtype f16 needs loss scaling, which this suite does not do; use bf16 or f32");
    const peak = o.peakTflops ?? (name === "cuda" ? CUDA_PEAK_TFLOPS : null);
    const mfuBasis =
      o.peakTflops !== undefined ? `--peak-tflops ${o.peakTflops}` : name === "cuda" ? `${CUDA_PEAK_TFLOPS} TFLOP/s, the bf16 matmul rate measured on the H200 (docs/PERFORMANCE.md)` : "none (give --peak-tflops)";
    const canResetPeak = typeof backend.resetPeakMemory === "function";

    for (const t of lengths) {
      const B = tokens / t;
      const microRows = Math.max(1, Math.floor((o.microBatchTokens ?? tokens) / t));
      const row = {
        suite: "model", impl: "train step", backend: name, device, dtype, B, T: t, H: config.numHeads, D: config.hiddenDim / config.numHeads, E: config.hiddenDim / config.numHeads,
        params, tokens_per_step: B * t, micro_batch_tokens: microRows * t, mfu_basis: mfuBasis,
        ...(canResetPeak ? {} : { peak_note: "the peak since the backend started: it cannot reset its peak" }),
      };
      log(`training step, T=${t}, B=${B}, micro-batches of ${microRows} row(s)`);
      let p: TnlParams | null = null;
      let batches: MicroBatch[] = [];
      const opt = new AdamW({ lr: LR, weightDecay: WEIGHT_DECAY }, [{ name: "no_decay", match: /(^embed$)|(^lmHead$)|theta/, weightDecay: 0 }]);
      try {
        p = initParams(config, { seed: 1, dtype });
        batches = microBatches(B, t, microRows, config.vocabSize);
        await backend.sync();
        backend.resetPeakMemory?.();
        const times: number[] = [];
        const losses: number[] = [];
        for (let i = 0; i < common.warmup + steps; i++) {
          const t0 = performance.now();
          const r = await trainStep(p, config, opt, batches, { gradClip: GRAD_CLIP });
          p = r.params;
          await backend.sync();
          if (i >= common.warmup) times.push(performance.now() - t0);
          losses.push(r.loss);
        }
        const peakGib = backend.memory().peakBytes / 2 ** 30;
        const timing = summarise(times);
        const tokensPerS = (B * t) / (timing.median / 1000);
        const first = losses[0];
        const last = losses[losses.length - 1];
        const ok = Number.isFinite(last) && Math.abs(first - lnV) <= 0.1 * lnV;
        if (!ok) log(`T=${t}: loss ${first} at the first step (ln V = ${lnV.toFixed(3)}), ${last} at the last`);
        results.push(
          result({
            ...row, ok, fwd_ms: timing.median, step_ms: timing.median, tokens_per_s: tokensPerS, mfu: peak === null ? null : (6 * params * tokensPerS) / (peak * 1e12),
            peak_gib: peakGib, loss: last, first_loss: first, spread_pct: Math.round(timing.spread_pct),
          }),
        );
        if (o.profile) {
          const { result: r, profile } = await T.profileOps(backend, () => trainStep(p!, config, opt, batches, { gradClip: GRAD_CLIP }));
          p = r.params;
          profiles.push({ backend: name, device, dtype, T: t, B, profile });
          log(`profile of one step, T=${t}:\n${T.formatProfile(profile)}`);
        }
      } catch (err) {
        log(`T=${t}: FAILED: ${message(err)}`);
        results.push(result({ ...row, ok: false, error: message(err) }));
      } finally {
        if (p) disposeParams(p);
        opt.dispose();
      }
    }
  }
  if (o.profile) {
    const file = outputPath(o.profile);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, `${JSON.stringify({ preset: o.preset, params, tokens, profiles }, null, 2)}\n`);
    log(`profiles written to ${file}`);
  }
  return results;
}
