/**
 * The training run: data and tokenizer, a fresh (or resumed) TNL, the AdamW loop with warmup and
 * cosine decay, held-out evaluation, atomic checkpoints, and at the end the final model, the loss
 * chart, generated samples and summary.json.
 */
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { valueAndGrad } from "@lightning-ts/autograd";
import { AdamW, clipGradNorm, warmupCosine } from "@lightning-ts/autograd/optim";
import { createBackend } from "@lightning-ts/backends";
import { liveTensorCount, scope, setBackend, tensor } from "@lightning-ts/tensor";
import { generateIds, initParams, loss, makeConfig, parameterCount, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";
import { loadTokenizerFile, type Tokenizer } from "@lightning-ts/tokenizer";
import { evaluationWindows, trainingBatch } from "./batches.js";
import {
  checkWritable,
  findCheckpoint,
  loadTrainerCheckpoint,
  readTrainerState,
  saveModelDir,
  saveTrainerCheckpoint,
  type TrainerState,
} from "./checkpoint.js";
import type { TrainConfig } from "./config.js";
import { loadCorpus, prepareTokenizer, tokenize, tokenizerKey, unigramBitsPerByte } from "./data.js";
import { type Evaluation, evaluate } from "./evaluate.js";
import { progressBar, progressHeldout, RunLog, type Summary, writeLossChart, writeSummary } from "./report.js";

export interface TrainOptions {
  config: TrainConfig;
  /** A run directory (or checkpoint) to continue from; its saved config is used. */
  resume?: string;
  /** Settings a resumed run may change: more steps, another time limit. */
  resumeOverrides?: Partial<Pick<TrainConfig, "steps" | "timeLimitSeconds">>;
  /** Where tokenised corpora are cached (default .cache/tokens in the working directory). */
  cacheDir?: string;
  /** Aborting stops after the current step, with a checkpoint (Ctrl-C does this). */
  signal?: AbortSignal;
  /** Stop after this step (with a checkpoint), as an interrupted run would; for tests. */
  stopAfterStep?: number;
  /** Progress lines; the default writes to stderr. */
  log?: (line: string) => void;
  /** Draw a progress bar (default: true). */
  progress?: boolean;
}

export interface TrainResult {
  outDir: string;
  /** Training loss of every step this call ran. */
  losses: { step: number; loss: number }[];
  summary: Summary | null;
  /** True when the run stopped before its last step (interrupted, or out of time). */
  stopped: boolean;
}

/** The TNL shape of a trainer config: the released models' conventions, a swish token mixer. */
export function modelConfig(config: TrainConfig, vocabSize: number): TnlConfig {
  const { dModel, numLayers, numHeads, gluDim } = config.model;
  return makeConfig({ vocabSize, dModel, numLayers, numHeads, gluDim });
}

function optimizerFor(config: TrainConfig): AdamW {
  const lr = warmupCosine({ peak: config.lr, warmupSteps: Math.max(1, config.warmupSteps), totalSteps: config.steps, floor: config.lr * config.minLrRatio });
  // Embeddings and the LRPE angles are not decayed, as is usual for embedding-like parameters.
  return new AdamW({ lr, betas: [config.beta1, config.beta2], eps: 1e-8, weightDecay: config.weightDecay }, [
    { name: "no_decay", match: /(^embed$)|(^lmHead$)|theta/, weightDecay: 0 },
  ]);
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const say = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  let config = options.config;
  let resumed: { dir: string; state: TrainerState } | null = null;
  if (options.resume) {
    const dir = findCheckpoint(options.resume);
    const state = readTrainerState(dir);
    config = { ...state.config, ...options.resumeOverrides };
    resumed = { dir, state };
  }
  const outDir = resolve(config.outDir);
  checkWritable(outDir);
  const log = new RunLog(join(outDir, "log.jsonl"));

  const backend = await createBackend(config.backend);
  setBackend(backend);
  say(`backend: ${backend.name} (${backend.capabilities.device})`);

  const corpus = loadCorpus(config);
  const tokenizerFile = join(outDir, "tokenizer.json");
  let tokenizer: Tokenizer;
  let key: string;
  if (resumed) {
    copyFileSync(join(resumed.dir, "tokenizer.json"), tokenizerFile);
    tokenizer = await loadTokenizerFile(tokenizerFile);
    key = readFileSync(tokenizerFile, "utf8");
  } else {
    const t0 = performance.now();
    const prepared = await prepareTokenizer(config, corpus, tokenizerFile);
    tokenizer = prepared.tokenizer;
    if (!prepared.json) copyFileSync(config.tokenizerPath!, tokenizerFile);
    key = tokenizerKey(prepared.json, config.tokenizerPath);
    say(`tokenizer: ${tokenizer.vocabSize} tokens (${prepared.json ? `trained in ${((performance.now() - t0) / 1000).toFixed(1)} s` : `loaded from ${config.tokenizerPath}`})`);
  }
  const cacheDir = options.cacheDir ?? resolve(".cache", "tokens");
  const trainIds = tokenize(tokenizer, key, corpus.train, cacheDir);
  const heldoutIds = tokenize(tokenizer, key, corpus.heldout, cacheDir);
  say(`corpus: ${corpus.source}: ${trainIds.length.toLocaleString("en")} training tokens, ${heldoutIds.length.toLocaleString("en")} held out`);

  const optimizer = optimizerFor(config);
  let tnlConfig: TnlConfig;
  let params: TnlParams;
  let step = 0;
  let trainSeconds = 0;
  let tokensSeen = 0;
  if (resumed) {
    const model = await loadTrainerCheckpoint(resumed.dir, optimizer);
    tnlConfig = model.config;
    params = model.params;
    ({ step, trainSeconds, tokensSeen } = resumed.state);
    log.write({ kind: "resume", step, from: resumed.dir });
    say(`resumed from ${resumed.dir} at step ${step}`);
  } else {
    tnlConfig = modelConfig(config, tokenizer.vocabSize);
    params = initParams(tnlConfig, { seed: config.seed });
    log.write({ kind: "start", step: 0, config, parameters: parameterCount(tnlConfig) });
  }
  say(`model: ${parameterCount(tnlConfig).toLocaleString("en")} parameters (d=${tnlConfig.dModel}, layers=${tnlConfig.numLayers}, heads=${tnlConfig.numHeads})`);

  const evalWindows = evaluationWindows(heldoutIds, config.seqLen, config.evalSequences);
  const state = (): TrainerState => ({
    format: "lightning-ts.trainer/1",
    step,
    config,
    rng: { kind: "philox4x32-10", seed: config.seed, counter: step * config.batchSize },
    trainSeconds,
    tokensSeen,
  });
  const checkpoint = async () => {
    const dir = await saveTrainerCheckpoint(outDir, state(), { config: tnlConfig, params }, optimizer, tokenizerFile);
    log.write({ kind: "checkpoint", step, dir });
    return dir;
  };

  const losses: { step: number; loss: number }[] = [];
  const bar = options.progress === false ? null : progressBar(config.steps, step);
  let heldout: Evaluation | null = null;
  let stopped = false;
  const tokensPerStep = config.batchSize * config.seqLen;
  while (step < config.steps) {
    const t0 = performance.now();
    const lr = optimizer.learningRate();
    const batch = trainingBatch(trainIds, config.seed, step, config.batchSize, config.seqLen);
    const stepped = scope(() => {
      const ids = tensor(batch, [config.batchSize, config.seqLen + 1], { dtype: "i32" });
      const { value, grads } = valueAndGrad((p: TnlParams) => loss(p, tnlConfig, ids))(params);
      const clipped = clipGradNorm(grads, config.gradClip);
      const next = optimizer.step(params, clipped.grads) as TnlParams;
      return { next, value, norm: clipped.norm };
    });
    params = stepped.next;
    // Reads wait for the device: the only sync point of a step on a GPU backend.
    const out = { value: (await stepped.value.data())[0], norm: (await stepped.norm.data())[0] };
    stepped.value.dispose();
    stepped.norm.dispose();
    const seconds = (performance.now() - t0) / 1000;
    trainSeconds += seconds;
    tokensSeen += tokensPerStep;
    step++;
    if (!Number.isFinite(out.value)) throw new Error(`training diverged at step ${step}: loss ${out.value}; lower the learning rate (--lr, now ${config.lr}) or raise the warmup (--warmup, now ${config.warmupSteps})`);
    losses.push({ step, loss: out.value });
    const tps = tokensPerStep / seconds;
    log.write({ kind: "train", step, loss: out.value, lr, grad_norm: out.norm, tokens_per_s: tps, seconds });
    bar?.update(step, { loss: out.value.toFixed(3), tps: Math.round(tokensSeen / trainSeconds) });

    const outOfTime = config.timeLimitSeconds > 0 && trainSeconds >= config.timeLimitSeconds;
    const interrupted = options.signal?.aborted === true || step === options.stopAfterStep;
    if (step % config.evalInterval === 0 || step === config.steps || outOfTime) {
      heldout = await evaluate(params, tnlConfig, tokenizer, evalWindows, config.batchSize);
      log.write({ kind: "eval", step, loss: heldout.loss, perplexity: heldout.perplexity, bits_per_byte: heldout.bitsPerByte, seconds: trainSeconds });
      bar?.update(step, { heldout: progressHeldout(heldout) });
    }
    if (step % config.checkpointInterval === 0 || interrupted || outOfTime) await checkpoint();
    if (interrupted || outOfTime) {
      stopped = step < config.steps;
      if (outOfTime && step < config.steps) say(`\nstopping at step ${step}: the time limit of ${config.timeLimitSeconds} s is reached`);
      if (interrupted) {
        bar?.stop();
        say(`\ninterrupted at step ${step}; checkpoint saved. Continue with --resume ${outDir}`);
        return { outDir, losses, summary: null, stopped: true };
      }
      break;
    }
  }
  bar?.stop();
  if (step === config.steps && !existsSync(join(outDir, "checkpoints", `step-${String(step).padStart(6, "0")}`))) await checkpoint();
  return { outDir, losses, stopped, summary: await finish({ config, tnlConfig, params, tokenizer, tokenizerFile, heldoutIds, corpus, outDir, step, trainSeconds, tokensSeen, backendName: backend.name, device: backend.capabilities.device, say, log }) };
}

interface FinishContext {
  config: TrainConfig;
  tnlConfig: TnlConfig;
  params: TnlParams;
  tokenizer: Tokenizer;
  tokenizerFile: string;
  heldoutIds: Int32Array;
  corpus: { source: string; heldout: string };
  outDir: string;
  step: number;
  trainSeconds: number;
  tokensSeen: number;
  backendName: string;
  device: string;
  say: (line: string) => void;
  log: RunLog;
}

/** The final model, a full held-out evaluation, samples, the loss chart and summary.json. */
async function finish(c: FinishContext): Promise<Summary> {
  const modelDir = join(c.outDir, "model");
  await saveModelDir(modelDir, c.tnlConfig, c.params, c.tokenizerFile);
  const full = await evaluate(c.params, c.tnlConfig, c.tokenizer, evaluationWindows(c.heldoutIds, c.config.seqLen), c.config.batchSize);
  const unigram = unigramBitsPerByte(c.corpus.heldout);
  c.log.write({ kind: "eval", step: c.step, loss: full.loss, perplexity: full.perplexity, bits_per_byte: full.bitsPerByte, seconds: c.trainSeconds, full: true } as never);

  const prompt = c.tokenizer.encode(c.config.samplePrompt);
  const samples: string[] = [];
  for (let i = 0; i < c.config.sampleCount; i++) {
    const ids = await generateIds({ config: c.tnlConfig, params: c.params }, prompt, {
      maxTokens: c.config.sampleTokens,
      temperature: c.config.sampleTemperature,
      topP: c.config.sampleTopP,
      seed: c.config.seed + i,
    });
    // A row that drew the end-of-text token ends there; the token itself is not text.
    const row = ids[0] ?? [];
    if (row[row.length - 1] === c.tnlConfig.eosTokenId) row.pop();
    samples.push(c.config.samplePrompt + c.tokenizer.decode(row));
  }

  const records = readFileSync(join(c.outDir, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { kind: string; step: number; loss: number; full?: boolean });
  // A resumed run's log repeats the steps after its checkpoint: the last record of a step wins.
  const last = (kind: string) => [...new Map(records.filter((r) => r.kind === kind && !r.full).map((r) => [r.step, r])).values()];
  const chart = await writeLossChart(c.outDir, last("train"), last("eval"));

  const summary: Summary = {
    heldout_bits_per_byte: full.bitsPerByte,
    unigram_bits_per_byte: unigram,
    heldout_loss: full.loss,
    heldout_perplexity: full.perplexity,
    tokens_per_second: c.tokensSeen / c.trainSeconds,
    train_seconds: c.trainSeconds,
    steps: c.step,
    parameters: parameterCount(c.tnlConfig),
    backend: c.backendName,
    device: c.device,
    corpus: c.corpus.source,
    vocab_size: c.tokenizer.vocabSize,
    samples,
  };
  const file = writeSummary(c.outDir, summary);
  c.log.write({ kind: "end", step: c.step, summary: file, live_tensors: liveTensorCount() });
  c.say("");
  c.say(`held-out (all ${full.tokens.toLocaleString("en")} tokens): ${full.bitsPerByte.toFixed(3)} bits per byte (loss ${full.loss.toFixed(3)}, perplexity ${full.perplexity.toFixed(1)})`);
  c.say(`unigram byte entropy of the same held-out text: ${unigram.toFixed(3)} bits per byte`);
  c.say(`trained ${c.step} steps in ${c.trainSeconds.toFixed(0)} s at ${Math.round(summary.tokens_per_second)} tokens/s on ${c.backendName}`);
  c.say(`model: ${modelDir}   loss chart: ${chart.svg}, ${chart.png}   summary: ${file}`);
  c.say("samples:");
  for (const s of samples) c.say(`  ${JSON.stringify(s)}`);
  return summary;
}
