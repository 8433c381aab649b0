/**
 * Trainer checkpoints. Each one is a directory under <outDir>/checkpoints/:
 *
 *   step-000080/model/          the model in the Hugging Face TNL layout (config.json, model.safetensors),
 *                               in the run's dtype (bf16 weights stored as BF16, bit for bit)
 *   step-000080/tokenizer.json  the tokenizer the ids come from
 *   step-000080/optimizer.safetensors   AdamW moments (and f32 master weights of bf16/f16 parameters), step and settings
 *   step-000080/trainer.json    the trainer config, the step, the RNG position, elapsed time
 *
 * A checkpoint is written into a temporary directory and renamed into place, then `latest.json`
 * is replaced the same way: a crash at any moment leaves every earlier checkpoint intact, and a
 * reader never sees half a checkpoint.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AdamW, GradScalerState } from "@lightning-ts/autograd/optim";
import { loadOptimizerState, saveOptimizerState } from "@lightning-ts/autograd/optim";
import { disposeTree } from "@lightning-ts/autograd";
import { loadCheckpoint, type ModelDType, saveCheckpoint, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";
import type { TrainConfig } from "./config.js";

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

export interface TrainerState {
  format: "lightning-ts.trainer/1";
  step: number;
  config: TrainConfig;
  /** Batches come from the counter-based RNG: (seed, next counter) is its whole state. */
  rng: { kind: "philox4x32-10"; seed: number; counter: number };
  trainSeconds: number;
  tokensSeen: number;
  /** Steps skipped for a loss or gradient that was not finite (absent in older checkpoints). */
  skippedSteps?: number;
  /** The f16 loss scale and its growth counter (f16 runs only). */
  lossScale?: GradScalerState;
  /**
   * The group that wrote it (absent: one process). For the record only: the checkpoint holds
   * every parameter and all optimizer state, and the data position is global, so a run resumes
   * from it on any number of GPUs.
   */
  world?: { gpus: number; dp: number; sp: number };
}

const LATEST = "latest.json";
const stepName = (step: number) => `step-${String(step).padStart(6, "0")}`;

/** Writes `text` to `file` atomically (temporary file, then rename). */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** Fails early, with a clear message, when the output directory cannot be written. */
export function checkWritable(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    const probe = join(dir, `.write-test-${process.pid}`);
    writeFileSync(probe, "");
    rmSync(probe);
  } catch (err) {
    throw new CheckpointError(`outDir: cannot write to ${dir}: ${(err as Error).message}`);
  }
}

/** Saves the model (and tokenizer) as a Hugging Face directory at `dir`, atomically. */
export async function saveModelDir(dir: string, config: TnlConfig, params: TnlParams, tokenizerFile: string): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  await saveCheckpoint(tmp, { config, params });
  copyFileSync(tokenizerFile, join(tmp, "tokenizer.json"));
  replaceDir(tmp, dir);
}

/** Renames `from` onto `to`, moving an existing `to` aside first and removing it afterwards. */
function replaceDir(from: string, to: string): void {
  const old = `${to}.old-${process.pid}`;
  if (existsSync(to)) renameSync(to, old);
  renameSync(from, to);
  rmSync(old, { recursive: true, force: true });
}

export async function saveTrainerCheckpoint(
  outDir: string,
  state: TrainerState,
  model: { config: TnlConfig; params: TnlParams },
  optimizer: AdamW,
  tokenizerFile: string,
): Promise<string> {
  const root = join(outDir, "checkpoints");
  mkdirSync(root, { recursive: true });
  const final = join(root, stepName(state.step));
  const tmp = `${final}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await saveCheckpoint(join(tmp, "model"), model);
  copyFileSync(tokenizerFile, join(tmp, "tokenizer.json"));
  await saveOptimizerState(optimizer, join(tmp, "optimizer.safetensors"));
  writeFileSync(join(tmp, "trainer.json"), JSON.stringify(state, null, 2) + "\n");
  replaceDir(tmp, final);
  writeFileAtomic(join(root, LATEST), JSON.stringify({ step: state.step, dir: stepName(state.step) }) + "\n");
  pruneCheckpoints(root, state.config.keepCheckpoints);
  return final;
}

/** Keeps the newest `keep` checkpoints. Only complete ones are ever named step-N. */
function pruneCheckpoints(root: string, keep: number): void {
  const steps = readdirSync(root).filter((d) => /^step-\d+$/.test(d)).sort();
  for (const d of steps.slice(0, Math.max(0, steps.length - keep))) rmSync(join(root, d), { recursive: true, force: true });
}

/** The newest checkpoint of a run directory (or `dir` itself if it is a checkpoint). */
export function findCheckpoint(dir: string): string {
  if (existsSync(join(dir, "trainer.json"))) return dir;
  const latest = join(dir, "checkpoints", LATEST);
  if (!existsSync(latest)) throw new CheckpointError(`resume: ${dir} holds no checkpoint (no ${join("checkpoints", LATEST)} and no trainer.json)`);
  let pointer: { dir?: unknown };
  try {
    pointer = JSON.parse(readFileSync(latest, "utf8")) as { dir?: unknown };
  } catch (err) {
    throw new CheckpointError(`resume: ${latest} is corrupt: ${(err as Error).message}`);
  }
  if (typeof pointer.dir !== "string") throw new CheckpointError(`resume: ${latest} names no checkpoint directory`);
  return join(dir, "checkpoints", pointer.dir);
}

export function readTrainerState(checkpoint: string): TrainerState {
  const file = join(checkpoint, "trainer.json");
  let state: TrainerState;
  try {
    state = JSON.parse(readFileSync(file, "utf8")) as TrainerState;
  } catch (err) {
    throw new CheckpointError(`resume: ${file} is unreadable or corrupt: ${(err as Error).message}`);
  }
  if (state.format !== "lightning-ts.trainer/1" || !Number.isInteger(state.step)) {
    throw new CheckpointError(`resume: ${file} is not a lightning-ts trainer state (format ${JSON.stringify(state.format)})`);
  }
  return state;
}

/** Loads the model (its parameters in `dtype`) and the optimizer state of `checkpoint` into `optimizer`. */
export async function loadTrainerCheckpoint(checkpoint: string, optimizer: AdamW, dtype: ModelDType = "f32"): Promise<{ config: TnlConfig; params: TnlParams }> {
  try {
    const model = await loadCheckpoint(join(checkpoint, "model"), { dtype });
    await loadOptimizerState(optimizer, join(checkpoint, "optimizer.safetensors"));
    return model;
  } catch (err) {
    throw new CheckpointError(`resume: checkpoint ${checkpoint} cannot be loaded: ${(err as Error).message}`);
  }
}

/** The folder `--save-init` writes the initial weights to, inside the run's output directory. */
export const INIT_DIR = "init";
/** The trainer config beside the initial weights: what another implementation needs to train them the same way. */
export const INIT_TRAINER_CONFIG = "trainer-config.json";

/**
 * Writes the weights a run starts from as a Hugging Face model directory, `<outDir>/init/`:
 * config.json, model.safetensors (in the run's dtype, bit for bit), tokenizer.json, and the trainer
 * config (its optimizer settings, schedule, batch and seed) as trainer-config.json.
 */
export async function saveInitialWeights(outDir: string, model: { config: TnlConfig; params: TnlParams }, tokenizerFile: string, trainConfig: TrainConfig): Promise<string> {
  const dir = join(outDir, INIT_DIR);
  await saveModelDir(dir, model.config, model.params, tokenizerFile);
  writeFileAtomic(join(dir, INIT_TRAINER_CONFIG), JSON.stringify(trainConfig, null, 2) + "\n");
  return dir;
}

/** The keys of a TNL config that make two models the same network (and the same special tokens). */
const MODEL_KEYS = ["vocabSize", "dModel", "numLayers", "numHeads", "hiddenDim", "gluDim", "activation", "lrpe", "noScaleEmbedding", "tieWordEmbeddings", "padTokenId", "bosTokenId", "eosTokenId"] as const;

/**
 * The weights of a model directory (`--init-from`), in `dtype`, for the model `expected` that the
 * run's settings describe; a config.json that describes another model is an error naming each key.
 */
export async function loadInitialWeights(dir: string, expected: TnlConfig, dtype: ModelDType): Promise<{ config: TnlConfig; params: TnlParams }> {
  let model: { config: TnlConfig; params: TnlParams };
  try {
    model = await loadCheckpoint(dir, { dtype });
  } catch (err) {
    throw new CheckpointError(`--init-from: ${dir} cannot be loaded: ${(err as Error).message}`);
  }
  const differ = MODEL_KEYS.filter((k) => JSON.stringify(model.config[k]) !== JSON.stringify(expected[k]));
  if (differ.length > 0) {
    disposeTree(model.params);
    const diffs = differ.map((k) => `${k} ${JSON.stringify(model.config[k])} there, ${JSON.stringify(expected[k])} here`).join("; ");
    throw new CheckpointError(`--init-from ${dir}: its config.json describes another model than this run's settings (${diffs}); give the model settings it was made with`);
  }
  return { config: expected, params: model.params };
}
