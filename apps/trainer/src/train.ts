/**
 * The training run: data and tokenizer, a fresh (or resumed) TNL, the AdamW loop with warmup and
 * cosine decay, held-out evaluation, atomic checkpoints, and at the end the final model, the loss
 * chart, generated samples and summary.json.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { disposeTree } from "@lightning-ts/autograd";
import { AdamW, GradScaler, warmupCosine } from "@lightning-ts/autograd/optim";
import { createBackend } from "@lightning-ts/backends";
import { zeroOptimizer } from "@lightning-ts/parallel";
import { type Backend, type Collective, liveTensorCount, setBackend } from "@lightning-ts/tensor";
import { generateIds, initParams, makeConfig, type ModelDType, parameterCount, PRESETS, resolveDType, splitBatch, trainStep, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";
import type { Tokenizer } from "@lightning-ts/tokenizer";
import { BatchDump, evaluationWindows, trainingBatch } from "./batches.js";
import {
  CheckpointError,
  checkWritable,
  findCheckpoint,
  loadInitialWeights,
  loadTrainerCheckpoint,
  readTrainerState,
  saveInitialWeights,
  saveModelDir,
  saveTrainerCheckpoint,
  type TrainerState,
} from "./checkpoint.js";
import { ConfigError, microBatchOf, sequencesPerStep, type TrainConfig, withDefaults } from "./config.js";
import { loadTrainingData, type TrainingData } from "./corpus.js";
import { groupBackendProblem, groupCollective, rankBackend } from "./distributed.js";
import { type Group, layout, type Layout } from "./group.js";
import { anyRank, type GroupCollectives, groupTrainStep, rankRows } from "./group-step.js";
import { type Evaluation, evaluate } from "./evaluate.js";
import { profileStep } from "./profile.js";
import { formatMfu, progressBar, progressHeldout, RunLog, type Summary, writeLossChart, writeSummary } from "./report.js";
import type { TokenSource } from "./shards.js";
import { specialTokens } from "./special.js";
import { mfu, peakTflops } from "./throughput.js";

export interface TrainOptions {
  config: TrainConfig;
  /** A run directory (or checkpoint) to continue from; its saved config is used. */
  resume?: string;
  /** Settings a resumed run may change: more steps, another time limit. */
  resumeOverrides?: Partial<Pick<TrainConfig, "steps" | "timeLimitSeconds" | "zero">>;
  /** Where tokenised corpora are cached (default .cache/tokens in the working directory). */
  cacheDir?: string;
  /** Aborting stops after the current step, with a checkpoint (Ctrl-C does this). */
  signal?: AbortSignal;
  /** Stop after this step (with a checkpoint), as an interrupted run would; for tests. */
  stopAfterStep?: number;
  /** Steps (1-based) whose loss is made NaN, as a diverging step's would be; for tests. */
  nonFiniteSteps?: readonly number[];
  /** Progress lines; the default writes to stderr. */
  log?: (line: string) => void;
  /** Draw a progress bar (default: true). */
  progress?: boolean;
  /** Start from the weights of this model directory instead of a fresh initialisation (not with `resume`). */
  initFrom?: string;
  /** Write the initial weights to `<outDir>/init/` before step 1 (not with `resume`). */
  saveInit?: boolean;
  /** Write every step's batch (token ids, uint32) to this file, described by `<file>.json`. */
  dumpBatches?: string;
  /** Profile the second step of this call op by op; the JSON goes to this file. */
  profile?: string;
  /** Train as one rank of a group (main.ts joins it from the torchrun environment). */
  group?: GroupRun;
}

/** A rank's part in a group run. */
export interface GroupRun {
  group: Group;
  /** Ranks per sequence-parallel group (1: data parallel only). */
  sequenceParallel: number;
  /** The rank's backend (default: the run's, on device LOCAL_RANK). */
  backend?: Backend;
  /** Makes the collective over world ranks `ranks` (default: NCCL through the group's store). */
  collective?: (backend: Backend, ranks: readonly number[], name: string) => Promise<Collective>;
}

/** What a rank of a group holds while it trains. */
interface RankPart {
  group: Group;
  layout: Layout;
  collectives: GroupCollectives;
}

export interface TrainResult {
  outDir: string;
  /** Training loss of every step this call ran. */
  losses: { step: number; loss: number }[];
  summary: Summary | null;
  /** True when the run stopped before its last step (interrupted, or out of time). */
  stopped: boolean;
}

/**
 * The TNL shape of a trainer config: the released models' conventions (a swish token mixer), or
 * the preset's, with the sizes of `config.model`; the vocabulary and special-token ids from the
 * tokenizer (special.ts says how).
 */
export function modelConfig(config: TrainConfig, tokenizer: Tokenizer): { config: TnlConfig; specials: string } {
  const { dModel, numLayers, numHeads, gluDim } = config.model;
  const preset = config.preset === null ? null : PRESETS[config.preset as keyof typeof PRESETS];
  const tieWordEmbeddings = config.model.tieWordEmbeddings ?? preset?.tieWordEmbeddings ?? true;
  const vocabName = preset && config.model.vocabSize === preset.vocabSize ? `--preset ${config.preset} (vocab_size ${preset.vocabSize})` : `--model-vocab ${config.model.vocabSize}`;
  const special = specialTokens(tokenizer, config.model.vocabSize, vocabName);
  const shape = { vocabSize: special.vocabSize, dModel, numLayers, numHeads, gluDim };
  const tnl = preset
    ? { ...makeConfig({ ...shape, activation: preset.activation, noScaleEmbedding: preset.noScaleEmbedding, tieWordEmbeddings }), extra: structuredClone(preset.extra) }
    : makeConfig({ ...shape, tieWordEmbeddings });
  return { config: { ...tnl, ...special.ids }, specials: special.description };
}

function optimizerFor(config: TrainConfig): AdamW {
  const lr = warmupCosine({ peak: config.lr, warmupSteps: Math.max(1, config.warmupSteps), totalSteps: config.steps, floor: config.lr * config.minLrRatio });
  // Embeddings and the LRPE angles are not decayed, as is usual for embedding-like parameters.
  return new AdamW({ lr, betas: [config.beta1, config.beta2], eps: 1e-8, weightDecay: config.weightDecay }, [
    { name: "no_decay", match: /(^embed$)|(^lmHead$)|theta/, weightDecay: 0 },
  ]);
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const lead = options.group === undefined || options.group.group.rank === 0;
  // Rank 0 speaks for the group; the others report only their errors.
  const say = lead ? (options.log ?? ((line: string) => process.stderr.write(`${line}\n`))) : () => {};
  if (!lead) options = { ...options, progress: false, dumpBatches: undefined, profile: undefined, saveInit: false };
  let config = options.config;
  let resumed: { dir: string; state: TrainerState } | null = null;
  if (options.resume && (options.initFrom || options.saveInit)) {
    throw new CheckpointError(`${options.initFrom ? "--init-from" : "--save-init"}: a resumed run continues from its checkpoint's weights; give it without --resume`);
  }
  if (options.resume) {
    const dir = findCheckpoint(options.resume);
    const state = readTrainerState(dir);
    config = { ...withDefaults(state.config), ...options.resumeOverrides };
    resumed = { dir, state };
  }
  const outDir = resolve(config.outDir);
  // Only rank 0 writes the run's files; the others keep their copy of the tokenizer aside.
  const scratch = lead ? null : mkdtempSync(join(tmpdir(), `lightning-rank-${options.group!.group.rank}-`));
  if (lead) checkWritable(outDir);
  const log = lead ? new RunLog(join(outDir, "log.jsonl")) : ({ write: () => {} } as unknown as RunLog);

  const g = options.group;
  if (g && !g.collective) {
    const problem = groupBackendProblem(config.backend);
    if (problem) throw new ConfigError(`--gpus: ${problem}`);
  }
  const backend = g ? (g.backend ?? (await rankBackend(config.backend, g.group))) : await createBackend(config.backend);
  const dtype = resolveDType(backend, config.dtype);
  setBackend(backend);
  say(`backend: ${backend.name} (${backend.capabilities.device}), ${dtype}${g ? `, ${g.group.worldSize} ranks` : ""}`);
  const part = g ? await joinCollectives(g, backend, config) : null;
  if (part) say(`group: ${part.layout.dp} data parallel × ${part.layout.sp} sequence parallel (${part.layout.sp > 1 ? `${config.seqLen / part.layout.sp} tokens of each sequence per rank` : "each rank its rows of every batch"})`);

  const tokenizerFile = join(scratch ?? outDir, "tokenizer.json");
  try {
    const data = await loadTrainingData({ config, tokenizerFile, resumeDir: resumed?.dir, cacheDir: options.cacheDir ?? resolve(".cache", "tokens"), say });
    try {
      return await run({ options, config, resumed, outDir, log, data, tokenizerFile, dtype, backend, backendName: backend.name, device: backend.capabilities.device, peak: await peakTflops(backend, config.peakTflops), say, part });
    } finally {
      data.close();
    }
  } finally {
    part?.collectives.world.dispose();
    if (part?.collectives.sp && part.collectives.sp !== part.collectives.world) part.collectives.sp.dispose();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * The rank's collectives: the world, and its sequence-parallel group when sp > 1 (made in the same
 * order on every rank, so that each communicator's ranks create it together). The sequence-parallel
 * group has a communicator of its own even when it spans the world: the gradient all-reduces then
 * run beside its per-layer collectives during the backward pass instead of queueing between them.
 */
async function joinCollectives(g: GroupRun, backend: Backend, config: TrainConfig): Promise<RankPart> {
  const { group } = g;
  const l = layout(group.rank, group.worldSize, g.sequenceParallel);
  const rows = sequencesPerStep(config);
  if (rows < l.dp) throw new ConfigError(`config: a step's ${rows} sequences cannot give each of the ${l.dp} data-parallel ranks one; raise --batch-size or --tokens-per-step`);
  if (config.seqLen % l.sp !== 0) throw new ConfigError(`config: --seq-len ${config.seqLen} must be a multiple of --sequence-parallel ${l.sp} (each rank holds seq-len / ${l.sp} tokens)`);
  const make = g.collective ?? ((b: Backend, ranks: readonly number[], name: string) => groupCollective(group, b, ranks, name));
  const world = await make(backend, Array.from({ length: group.worldSize }, (_, r) => r), "world");
  const sp = l.sp === 1 ? null : await make(backend, l.spGroup, `sp-${l.dpRank}`);
  return { group, layout: l, collectives: { world, sp } };
}

interface RunContext {
  options: TrainOptions;
  config: TrainConfig;
  resumed: { dir: string; state: TrainerState } | null;
  outDir: string;
  log: RunLog;
  data: TrainingData;
  tokenizerFile: string;
  /** Parameters and compute (the optimizer keeps f32 master weights of bf16/f16 ones). */
  dtype: ModelDType;
  backend: Backend;
  backendName: string;
  device: string;
  peak: { tflops: number; source: string };
  say: (line: string) => void;
  /** This rank's part of a group run; null in one process. */
  part: RankPart | null;
}

/** How long the other ranks wait at a barrier while rank 0 alone writes a checkpoint or evaluates. */
const SOLO_WORK_TIMEOUT_MS = 60 * 60_000;

async function run(r: RunContext): Promise<TrainResult> {
  const { options, config, resumed, outDir, log, data, tokenizerFile, say } = r;
  const { tokenizer } = data;
  say(`corpus: ${data.source}: ${data.train.length.toLocaleString("en")} training tokens, ${data.heldout.length.toLocaleString("en")} held out`);

  const optimizer = optimizerFor(config);
  // f16 needs dynamic loss scaling; bf16 has f32's exponent range and does not.
  const scaler = r.dtype === "f16" ? new GradScaler() : undefined;
  let tnlConfig: TnlConfig;
  let params: TnlParams;
  let step = 0;
  let trainSeconds = 0;
  let tokensSeen = 0;
  let skippedSteps = 0;
  if (resumed) {
    const model = await loadTrainerCheckpoint(resumed.dir, optimizer, r.dtype);
    if (scaler && resumed.state.lossScale) scaler.loadStateDict(resumed.state.lossScale);
    tnlConfig = model.config;
    params = model.params;
    ({ step, trainSeconds, tokensSeen } = resumed.state);
    skippedSteps = resumed.state.skippedSteps ?? 0;
    log.write({ kind: "resume", step, from: resumed.dir });
    say(`resumed from ${resumed.dir} at step ${step}`);
  } else {
    const model = modelConfig(config, tokenizer);
    tnlConfig = model.config;
    say(`special tokens: ${model.specials}`);
    if (options.initFrom) {
      params = (await loadInitialWeights(options.initFrom, tnlConfig, r.dtype)).params;
      say(`initial weights: ${resolve(options.initFrom)}`);
    } else {
      params = initParams(tnlConfig, { seed: config.seed, dtype: r.dtype });
    }
    const initFrom = options.initFrom ? { init_from: resolve(options.initFrom) } : {};
    log.write({ kind: "start", step: 0, config, parameters: parameterCount(tnlConfig), special_tokens: model.specials, ...initFrom });
    if (options.saveInit) {
      const dir = await saveInitialWeights(outDir, { config: tnlConfig, params }, tokenizerFile, config);
      log.write({ kind: "init", step: 0, dir });
      say(`initial weights saved: ${dir}`);
    }
  }
  const parameters = parameterCount(tnlConfig);
  const rows = sequencesPerStep(config);
  const microBatch = microBatchOf(config);
  const span = config.seqLen + 1;
  const tokensPerStep = rows * config.seqLen;
  const { part } = r;
  const lead = part === null || part.group.rank === 0;
  // ZeRO-1 only means something in a group; a ZeRO-1 run resumed in one process keeps all the state.
  const zero = part && config.zero === 1 ? zeroOptimizer(part.collectives.world, optimizer) : null;
  if (zero) {
    // A resumed rank loaded the checkpoint's full state: it keeps its shard.
    zero.keepShard(params);
    say(`optimizer state: ZeRO-1, each of the ${part!.group.worldSize} ranks keeps the state of its shard of the parameters`);
  }
  const gpus = part?.group.worldSize ?? 1;
  // What throughput figures are compared by: ranks, their kind of parallelism, tokens per sequence.
  const shape = { gpus, mode: part && part.layout.sp > 1 ? ("sp" as const) : ("dp" as const), T: config.seqLen };
  // This rank's rows of every global batch (all of them in one process).
  const mine = part ? rankRows(rows, part.layout.dpRank, part.layout.dp) : { first: 0, count: rows };
  say(`model: ${parameters.toLocaleString("en")} parameters (d=${tnlConfig.dModel}, layers=${tnlConfig.numLayers}, heads=${tnlConfig.numHeads}, vocab=${tnlConfig.vocabSize})`);
  say(`step: ${tokensPerStep.toLocaleString("en")} tokens (${rows} × ${config.seqLen}) in ${Math.ceil(rows / microBatch)} micro-batch${rows > microBatch ? "es" : ""} of ${microBatch}; MFU against ${r.peak.tflops.toPrecision(3)} TFLOP/s (${r.peak.source})`);

  // Rank 0 evaluates alone: under sequence parallelism on windows of the length each rank holds, since a
  // whole sequence may be what does not fit on one GPU.
  const evalSeqLen = part && part.layout.sp > 1 ? config.seqLen / part.layout.sp : config.seqLen;
  if (evalSeqLen !== config.seqLen) say(`evaluation: rank 0 alone, on held-out windows of ${evalSeqLen} tokens (--seq-len ${config.seqLen} / --sequence-parallel ${part!.layout.sp})`);
  const evalWindows = evaluationWindows(data.heldout, evalSeqLen, config.evalSequences);
  if (evalWindows.length === 0) throw new Error(`data: the held-out split has ${data.heldout.length} tokens, fewer than one sequence of ${span} (--seq-len ${config.seqLen})`);
  const state = (): TrainerState => ({
    format: "lightning-ts.trainer/1",
    step,
    config,
    // The data position above is global (step × sequences per step), so any number of ranks resumes from it.
    world: { gpus, dp: part?.layout.dp ?? 1, sp: part?.layout.sp ?? 1 },
    rng: { kind: "philox4x32-10", seed: config.seed, counter: step * rows },
    trainSeconds,
    tokensSeen,
    skippedSteps,
    ...(scaler ? { lossScale: scaler.stateDict() } : {}),
  });
  /**
   * Rank 0 alone does `work` (writing files, evaluating); in a group the other ranks wait for it at
   * a barrier of the store, not inside a collective, whose timeout is made for collectives.
   */
  const solo = async (name: string, work: () => Promise<void>) => {
    if (lead) await work();
    if (part) await part.group.barrier(name, SOLO_WORK_TIMEOUT_MS);
  };
  let lastCheckpoint = resumed ? step : -1;
  // Every parameter and all optimizer state are whole on every rank, so rank 0's copy is the
  // checkpoint; under ZeRO-1 rank 0 gathers the full state first and drops the others' shards after.
  const checkpoint = async () => {
    lastCheckpoint = step;
    const full = zero ? await zero.gatherState(params) : null;
    if (full) {
      optimizer.loadStateDict(full);
      disposeTree(full.tensors);
    }
    await solo("checkpoint", async () => {
      const dir = await saveTrainerCheckpoint(outDir, state(), { config: tnlConfig, params }, optimizer, tokenizerFile);
      log.write({ kind: "checkpoint", step, dir });
    });
    if (full) zero!.keepShard(params);
  };

  const losses: { step: number; loss: number }[] = [];
  const bar = options.progress === false ? null : progressBar(config.steps, step);
  let heldout: Evaluation | null = null;
  let stopped = false;
  let lastGradNorm: number | null = null;
  let skippedInARow = 0;
  const dump = options.dumpBatches ? new BatchDump(resolve(options.dumpBatches), { rows, span, firstStep: step + 1 }) : null;
  const firstStep = step;
  if (options.profile && config.steps - step < 2) say(`warning: --profile: this run has fewer than 2 steps left, so no step is profiled`);
  while (step < config.steps) {
    const t0 = performance.now();
    const lr = optimizer.learningRate();
    const batch = trainingBatch(data.train, config.seed, step, rows, config.seqLen, mine);
    dump?.write(part ? trainingBatch(data.train, config.seed, step, rows, config.seqLen) : batch);
    const lossFactor = options.nonFiniteSteps?.includes(step + 1) ? NaN : 1;
    const runStep = () =>
      part
        ? groupTrainStep(params, tnlConfig, optimizer, splitBatch(batch, mine.count, span, Math.min(microBatch, mine.count)), part.collectives, {
            globalCount: tokensPerStep,
            gradClip: config.gradClip,
            lossFactor,
            scaler,
            zero: zero ?? undefined,
          })
        : trainStep(params, tnlConfig, optimizer, splitBatch(batch, rows, span, microBatch), { gradClip: config.gradClip, lossFactor, scaler });
    // The second step of the call: the first one warms up (kernels compiled, buffers pooled).
    const out = options.profile && step === firstStep + 1 ? await profileStep(r.backend, step + 1, options.profile, runStep, say) : await runStep();
    params = out.params;
    const seconds = (performance.now() - t0) / 1000;
    trainSeconds += seconds;
    tokensSeen += tokensPerStep;
    step++;
    if (out.skipped) {
      skippedSteps++;
      log.write({ kind: "skip", step, loss: out.loss, grad_norm: out.gradNorm, ...(scaler ? { loss_scale: scaler.scale } : {}) });
      bar?.update(step, {});
      say(`\nwarning: step ${step} skipped: loss ${out.loss}, gradient norm ${out.gradNorm} (${skippedSteps} skipped so far${scaler ? `; f16 loss scale now ${scaler.scale}` : ""})`);
      // An f16 gradient that overflows at a large loss scale is cured by backing off: not divergence while the scale is above 1.
      const backingOff = scaler !== undefined && Number.isFinite(out.loss) && scaler.scale >= 1;
      if (!backingOff && ++skippedInARow === MAX_SKIPPED_IN_A_ROW) {
        throw new Error(`training diverged at step ${step}: ${MAX_SKIPPED_IN_A_ROW} steps in a row had a loss or gradient that is not finite; lower the learning rate (--lr, now ${config.lr}) or raise the warmup (--warmup, now ${config.warmupSteps})`);
      }
    } else {
      skippedInARow = 0;
      lastGradNorm = out.gradNorm;
      losses.push({ step, loss: out.loss });
      // The whole group's tokens (rank 0's step ends when every rank's has): MFU is per GPU.
      const tps = tokensPerStep / seconds;
      const memory = r.backend.memory();
      log.write({
        kind: "train",
        step,
        loss: out.loss,
        lr,
        grad_norm: out.gradNorm,
        tokens_per_s: tps,
        mfu: mfu(parameters, tps / gpus, r.peak.tflops),
        seconds,
        peak_bytes: memory.peakBytes,
        ...(memory.cacheReleases !== undefined ? { cache_releases: memory.cacheReleases } : {}),
        ...(part ? shape : {}),
      });
      const average = tokensSeen / trainSeconds;
      bar?.update(step, { loss: out.loss.toFixed(3), tps: Math.round(average), mfu: formatMfu(mfu(parameters, average / gpus, r.peak.tflops)), gnorm: out.gradNorm.toPrecision(3) });
    }

    let outOfTime = config.timeLimitSeconds > 0 && trainSeconds >= config.timeLimitSeconds;
    let interrupted = options.signal?.aborted === true || step === options.stopAfterStep;
    // Ranks stop together or not at all: one stopping alone would leave the others in a collective.
    if (part) [interrupted, outOfTime] = await anyRank(part.collectives.world, [interrupted, outOfTime]);
    if (step % config.evalInterval === 0 || step === config.steps || outOfTime) {
      await solo("eval", async () => {
        heldout = await evaluate(params, tnlConfig, tokenizer, evalWindows, microBatch);
        log.write({ kind: "eval", step, loss: heldout.loss, perplexity: heldout.perplexity, bits_per_byte: heldout.bitsPerByte, seconds: trainSeconds });
        bar?.update(step, { heldout: progressHeldout(heldout) });
      });
    }
    if (step % config.checkpointInterval === 0 || interrupted || outOfTime) await checkpoint();
    if (interrupted || outOfTime) {
      stopped = step < config.steps;
      if (outOfTime && step < config.steps) say(`\nstopping at step ${step}: the time limit of ${config.timeLimitSeconds} s is reached`);
      if (interrupted) {
        bar?.stop();
        await part?.group.leave();
        say(`\ninterrupted at step ${step}; checkpoint saved. Continue with --resume ${outDir}`);
        return { outDir, losses, summary: null, stopped: true };
      }
      break;
    }
  }
  bar?.stop();
  // A group decides by what it did, the same on every rank (rank 0's disk is not the others').
  const saved = part ? lastCheckpoint === step : existsSync(join(outDir, "checkpoints", `step-${String(step).padStart(6, "0")}`));
  if (step === config.steps && !saved) await checkpoint();
  if (part) {
    // Rank 0 finishes alone: the final model, a full evaluation, samples and the summary.
    await part.group.leave();
    if (!lead) return { outDir, losses, stopped, summary: null };
  }
  const summary = await finish({
    ...r,
    tnlConfig,
    params,
    tokenizer,
    heldout: data.heldout,
    step,
    trainSeconds,
    tokensSeen,
    parameters,
    tokensPerStep,
    microBatch,
    skippedSteps,
    lastGradNorm,
    shape,
    evalSeqLen,
  });
  return { outDir, losses, stopped, summary };
}

/** Steps in a row with a loss or gradient that is not finite before the run gives up as diverged. */
const MAX_SKIPPED_IN_A_ROW = 10;

interface FinishContext extends RunContext {
  tnlConfig: TnlConfig;
  params: TnlParams;
  tokenizer: Tokenizer;
  heldout: TokenSource;
  step: number;
  trainSeconds: number;
  tokensSeen: number;
  parameters: number;
  tokensPerStep: number;
  microBatch: number;
  skippedSteps: number;
  lastGradNorm: number | null;
  shape: { gpus: number; mode: "dp" | "sp"; T: number };
  /** Tokens per held-out window (seq-len, or seq-len / sp under sequence parallelism). */
  evalSeqLen: number;
}

/** The final model, a full held-out evaluation, samples, the loss chart and summary.json. */
async function finish(c: FinishContext): Promise<Summary> {
  const modelDir = join(c.outDir, "model");
  await saveModelDir(modelDir, c.tnlConfig, c.params, c.tokenizerFile);
  const full = await evaluate(c.params, c.tnlConfig, c.tokenizer, evaluationWindows(c.heldout, c.evalSeqLen), c.microBatch);
  const unigram = c.data.unigramBitsPerByte();
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

  const tokensPerSecond = c.tokensSeen / c.trainSeconds;
  const summary: Summary = {
    heldout_bits_per_byte: full.bitsPerByte,
    unigram_bits_per_byte: unigram,
    heldout_loss: full.loss,
    heldout_perplexity: full.perplexity,
    tokens_per_second: tokensPerSecond,
    mfu: mfu(c.parameters, tokensPerSecond / c.shape.gpus, c.peak.tflops),
    ...c.shape,
    peak_tflops: c.peak.tflops,
    peak_tflops_source: c.peak.source,
    grad_norm: c.lastGradNorm,
    skipped_steps: c.skippedSteps,
    tokens_per_step: c.tokensPerStep,
    micro_batch: c.microBatch,
    train_seconds: c.trainSeconds,
    steps: c.step,
    parameters: c.parameters,
    backend: c.backendName,
    device: c.device,
    dtype: c.dtype,
    corpus: c.data.source,
    vocab_size: c.tokenizer.vocabSize,
    model_vocab_size: c.tnlConfig.vocabSize,
    special_tokens: { pad: c.tnlConfig.padTokenId, bos: c.tnlConfig.bosTokenId, eos: c.tnlConfig.eosTokenId },
    samples,
  };
  const file = writeSummary(c.outDir, summary);
  c.log.write({ kind: "end", step: c.step, summary: file, live_tensors: liveTensorCount() });
  c.say("");
  c.say(`held-out (all ${full.tokens.toLocaleString("en")} tokens): ${full.bitsPerByte.toFixed(3)} bits per byte (loss ${full.loss.toFixed(3)}, perplexity ${full.perplexity.toFixed(1)})`);
  c.say(`unigram byte entropy of the same held-out text: ${unigram.toFixed(3)} bits per byte`);
  const skipped = c.skippedSteps > 0 ? ` (${c.skippedSteps} skipped: loss or gradient not finite)` : "";
  const on = c.shape.gpus > 1 ? `${c.shape.gpus} × ${c.backendName} (${c.shape.mode}, T ${c.shape.T})` : c.backendName;
  c.say(`trained ${c.step} steps${skipped} in ${c.trainSeconds.toFixed(0)} s at ${Math.round(summary.tokens_per_second)} tokens/s on ${on}, MFU ${formatMfu(summary.mfu)}, last gradient norm ${c.lastGradNorm?.toPrecision(3) ?? "-"}`);
  c.say(`model: ${modelDir}   loss chart: ${chart.svg}, ${chart.png}   summary: ${file}`);
  c.say("samples:");
  for (const s of samples) c.say(`  ${JSON.stringify(s)}`);
  return summary;
}
