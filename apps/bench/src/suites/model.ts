/**
 * model: a TNL end to end. Training-step tokens/s (forward, backward, AdamW) as the sequence
 * length grows at a fixed number of tokens per step, and generation tokens/s (one recurrent step
 * per token, batch 1) after contexts of growing length — both should stay flat for linear
 * attention. Each case is first checked against the same model and inputs in float64 on the CPU.
 */
import { valueAndGrad } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import type { Backend, Tensor } from "@lightning-ts/tensor";
import { disposeParams, disposeState, initParams, loss, makeConfig, mapParams, prefill, step, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";
import { intList, result, summarise, type BenchResult, type Suite } from "../suite.js";

interface ModelOptions {
  dModel: number;
  layers: number;
  heads: number;
  vocab: number;
  tokens: number;
  t: number[];
  contexts: number[];
  genTokens: number;
}

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
    command
      .option("--d-model <n>", "model width", (v) => Number.parseInt(v, 10), 64)
      .option("--layers <n>", "layers", (v) => Number.parseInt(v, 10), 2)
      .option("--heads <n>", "heads", (v) => Number.parseInt(v, 10), 2)
      .option("--vocab <n>", "vocabulary size", (v) => Number.parseInt(v, 10), 512)
      .option("--tokens <n>", "tokens per training step (each T must divide it)", (v) => Number.parseInt(v, 10), 1024)
      .option("--t <list>", "training sequence lengths", intList, [64, 256, 1024])
      .option("--contexts <list>", "context lengths before generating", intList, [128, 1024, 4096])
      .option("--gen-tokens <n>", "tokens generated per context (timed)", (v) => Number.parseInt(v, 10), 16);
  },
  columns: [
    ["case", "impl"],
    ["backend", "backend"],
    ["B", "B"],
    ["T / context", "T"],
    ["ms", "fwd_ms"],
    ["tokens/s", "tokens_per_s"],
    ["rel_err", "rel_err"],
    ["spread %", "spread_pct"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const o = raw as unknown as ModelOptions;
    const config: TnlConfig = makeConfig({ vocabSize: o.vocab, dModel: o.dModel, numLayers: o.layers, numHeads: o.heads, gluDim: 8 * Math.round(o.dModel / 3) });
    const bad = o.t.find((t) => o.tokens % t !== 0);
    if (bad !== undefined) throw new Error(`--t: every T must divide --tokens ${o.tokens}; ${bad} does not`);
    const oracle = T.createCpuBackend({ threads: 1 });
    const results: BenchResult[] = [];
    for (const name of backends) {
      const backend = await startBackend(name, {}, log);
      if (!backend) continue;
      const device = backend.capabilities.device;
      let params = initParams(config, { seed: 1 });
      const base = { suite: "model", backend: name, device, dtype: "f32", H: config.numHeads, D: config.hiddenDim / config.numHeads, E: config.hiddenDim / config.numHeads };

      for (const t of o.t) {
        const B = o.tokens / t;
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
        results.push(result({ ...row, ok: true, rel_err: err, fwd_ms: timing.median, tokens_per_s: o.tokens / (timing.median / 1000), spread_pct: Math.round(timing.spread_pct) }));
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
