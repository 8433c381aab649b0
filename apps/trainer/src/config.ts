/**
 * The trainer's configuration: defaults, a JSON or TOML file on top, command-line overrides on
 * top of that, then validation that names the key, what it expected and what came.
 *
 * @example
 * const config = resolveConfig({ file: "train.toml", overrides: { steps: 100, "model.dModel": 192 } });
 */
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { DTYPE_HELP, isModelDType, MODEL_DTYPES, type ModelDType, PRESETS } from "@lightning-ts/tnl";
import { parse as parseToml } from "smol-toml";

export interface ModelSection {
  dModel: number;
  numLayers: number;
  numHeads: number;
  /** Width of the SGLU channel mixer. */
  gluDim: number;
  /** Rows of the embedding; null for the tokenizer's vocabulary (or the preset's). */
  vocabSize: number | null;
  /** lm_head shares the embedding matrix; null for the preset's convention (tied without a preset, as the released models). */
  tieWordEmbeddings: boolean | null;
}

export interface TrainConfig {
  /** Text files or directories; empty means the built-in corpus (Moby-Dick, from an npm package). */
  data: string[];
  /** Fraction of user-supplied text held out for evaluation (the built-in corpus holds out whole chapters). */
  heldoutFraction: number;
  /** Train a byte-level BPE tokenizer of this size, unless `tokenizerPath` is given. */
  vocabSize: number;
  /** A tokenizer file to load instead of training one (tokenizer.json, .model or tiktoken ranks). */
  tokenizerPath: string | null;
  /** A published model shape (a name of PRESETS in @lightning-ts/tnl); `model` keys set explicitly win over it. */
  preset: string | null;
  model: ModelSection;
  /** Sequences per optimizer step. */
  batchSize: number;
  /** Tokens per optimizer step (sets `batchSize` to tokensPerStep / seqLen); null to use `batchSize`. */
  tokensPerStep: number | null;
  /** Sequences per forward/backward pass; the gradient is accumulated over the step's micro-batches. 0: the whole batch at once. */
  microBatch: number;
  /** Tokens per training sequence. */
  seqLen: number;
  steps: number;
  /** Stop early (with a checkpoint) after this many seconds of training; 0 for no limit. */
  timeLimitSeconds: number;
  lr: number;
  /** The learning rate's floor at the end of the cosine decay, as a fraction of `lr`. */
  minLrRatio: number;
  warmupSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  gradClip: number;
  evalInterval: number;
  /** Held-out sequences per evaluation (consecutive windows of the held-out text). */
  evalSequences: number;
  checkpointInterval: number;
  keepCheckpoints: number;
  seed: number;
  backend: "cpu" | "cuda" | "webgpu";
  /** Parameters and compute in this dtype (f32 master weights in the optimizer); null for the backend's default (bf16 on cuda, f32 elsewhere). */
  dtype: ModelDType | null;
  /** The device's peak rate for MFU, in TFLOP/s; null for the backend's default (throughput.ts). */
  peakTflops: number | null;
  /** 1: ZeRO-1 in a group, each rank keeping optimizer state for its shard of the parameters; 0: every rank all of it. */
  zero: 0 | 1;
  outDir: string;
  samplePrompt: string;
  sampleCount: number;
  sampleTokens: number;
  sampleTemperature: number;
  sampleTopP: number;
}

/**
 * The default run: a 4-layer, 128-wide TNL on Moby-Dick with a 2,048-token BPE vocabulary, sized to
 * train within about five minutes on a 2-core CPU and reach well under 3 bits per byte held out.
 */
export const DEFAULT_CONFIG: TrainConfig = {
  data: [],
  heldoutFraction: 0.05,
  vocabSize: 2048,
  tokenizerPath: null,
  preset: null,
  model: { dModel: 128, numLayers: 4, numHeads: 2, gluDim: 344, vocabSize: null, tieWordEmbeddings: null },
  batchSize: 8,
  tokensPerStep: null,
  microBatch: 0,
  seqLen: 128,
  steps: 240,
  timeLimitSeconds: 540,
  lr: 3e-3,
  minLrRatio: 0.1,
  warmupSteps: 20,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  gradClip: 1,
  evalInterval: 40,
  evalSequences: 32,
  checkpointInterval: 80,
  keepCheckpoints: 2,
  seed: 1,
  backend: "cpu",
  dtype: null,
  peakTflops: null,
  zero: 0,
  outDir: "runs/default",
  samplePrompt: "Call me Ishmael.",
  sampleCount: 3,
  sampleTokens: 60,
  sampleTemperature: 0.8,
  sampleTopP: 0.95,
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Kind = "int+" | "int+?" | "int0" | "number+" | "number+?" | "number0" | "fraction" | "string" | "strings" | "path?" | "preset?" | "backend" | "dtype?" | "bool?" | "zero";

const SCHEMA: Record<string, Kind> = {
  data: "strings",
  heldoutFraction: "fraction",
  vocabSize: "int+",
  tokenizerPath: "path?",
  preset: "preset?",
  "model.dModel": "int+",
  "model.numLayers": "int+",
  "model.numHeads": "int+",
  "model.gluDim": "int+",
  "model.vocabSize": "int+?",
  "model.tieWordEmbeddings": "bool?",
  batchSize: "int+",
  tokensPerStep: "int+?",
  microBatch: "int0",
  seqLen: "int+",
  steps: "int+",
  timeLimitSeconds: "number0",
  lr: "number+",
  minLrRatio: "fraction",
  warmupSteps: "int0",
  weightDecay: "number0",
  beta1: "fraction",
  beta2: "fraction",
  gradClip: "number0",
  evalInterval: "int+",
  evalSequences: "int+",
  checkpointInterval: "int+",
  keepCheckpoints: "int+",
  seed: "int0",
  backend: "backend",
  dtype: "dtype?",
  peakTflops: "number+?",
  zero: "zero",
  outDir: "string",
  samplePrompt: "string",
  sampleCount: "int0",
  sampleTokens: "int+",
  sampleTemperature: "number0",
  sampleTopP: "fraction",
};

const EXPECT: Record<Kind, string> = {
  "int+": "a positive integer",
  "int+?": "a positive integer or null",
  int0: "a non-negative integer",
  "number+": "a positive number",
  "number+?": "a positive number or null",
  number0: "a non-negative number",
  fraction: "a number in [0, 1]",
  string: "a string",
  strings: "a list of strings",
  "path?": "a file path or null",
  "preset?": `one of the presets ${Object.keys(PRESETS).join(", ")}`,
  backend: 'one of "cpu", "cuda", "webgpu"',
  "dtype?": `one of ${MODEL_DTYPES.map((d) => JSON.stringify(d)).join(", ")} or null`,
  "bool?": "true, false or null",
  zero: "0 (every rank keeps all optimizer state) or 1 (ZeRO-1: each rank its shard)",
};

function valid(kind: Kind, v: unknown): boolean {
  switch (kind) {
    case "int+":
      return Number.isInteger(v) && (v as number) > 0;
    case "int+?":
      return v === null || (Number.isInteger(v) && (v as number) > 0);
    case "int0":
      return Number.isInteger(v) && (v as number) >= 0;
    case "number+":
      return typeof v === "number" && Number.isFinite(v) && v > 0;
    case "number+?":
      return v === null || (typeof v === "number" && Number.isFinite(v) && v > 0);
    case "number0":
      return typeof v === "number" && Number.isFinite(v) && v >= 0;
    case "fraction":
      return typeof v === "number" && v >= 0 && v <= 1;
    case "string":
      return typeof v === "string" && v.length > 0;
    case "strings":
      return Array.isArray(v) && v.every((x) => typeof x === "string" && x.length > 0);
    case "path?":
      return v === null || (typeof v === "string" && v.length > 0);
    case "preset?":
      return v === null || (typeof v === "string" && Object.hasOwn(PRESETS, v));
    case "backend":
      return v === "cpu" || v === "cuda" || v === "webgpu";
    case "dtype?":
      return v === null || isModelDType(v);
    case "bool?":
      return v === null || typeof v === "boolean";
    case "zero":
      return v === 0 || v === 1;
  }
}

/** Nested objects flattened to dotted keys ("model.dModel"). */
function flatten(obj: Record<string, unknown>, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix + k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flatten(v as Record<string, unknown>, `${key}.`));
    else out[key] = v;
  }
  return out;
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split(".");
  let obj = target;
  for (const p of parts.slice(0, -1)) obj = obj[p] as Record<string, unknown>;
  obj[parts[parts.length - 1]] = value;
}

/** The presets with their sizes, for --help and errors. */
export const PRESET_LIST = Object.entries(PRESETS)
  .map(([name, c]) => `${name} (d ${c.dModel}, ${c.numLayers} layers, ${c.numHeads} heads, GLU ${c.gluDim}, vocab ${c.vocabSize})`)
  .join(", ");

/** The source name of command-line values (`overrides`). */
export const COMMAND_LINE = "command line";

/**
 * The command-line flag of each key, so that errors name what the user typed ("--warmup"), not the
 * key it sets ("warmupSteps"). main.ts declares its options from this table. A flag of type "flag"
 * takes no value: giving it sets its key to `value`.
 */
export const CLI_FLAGS: readonly { flag: string; key: string; help: string; type: "int" | "number" | "string" | "strings" | "flag"; value?: unknown }[] = [
  { flag: "--data <paths...>", key: "data", help: "text files or directories to train on, or a directory of token shards that `train prepare` wrote (default: the built-in Moby-Dick corpus)", type: "strings" },
  { flag: "--out <dir>", key: "outDir", help: `output directory (default ${DEFAULT_CONFIG.outDir})`, type: "string" },
  { flag: "--steps <n>", key: "steps", help: `training steps (default ${DEFAULT_CONFIG.steps})`, type: "int" },
  { flag: "--time-limit <seconds>", key: "timeLimitSeconds", help: `stop (with a checkpoint) after this much training time; 0 for none (default ${DEFAULT_CONFIG.timeLimitSeconds})`, type: "number" },
  { flag: "--batch-size <n>", key: "batchSize", help: `sequences per step (default ${DEFAULT_CONFIG.batchSize})`, type: "int" },
  { flag: "--tokens-per-step <n>", key: "tokensPerStep", help: "tokens per optimizer step, a multiple of --seq-len (sets --batch-size to n / seq-len)", type: "int" },
  { flag: "--micro-batch <n>", key: "microBatch", help: "sequences per forward/backward pass; gradients are accumulated over the step (default: the whole batch)", type: "int" },
  { flag: "--seq-len <n>", key: "seqLen", help: `tokens per sequence (default ${DEFAULT_CONFIG.seqLen})`, type: "int" },
  { flag: "--vocab-size <n>", key: "vocabSize", help: `size of the tokenizer to train (default ${DEFAULT_CONFIG.vocabSize})`, type: "int" },
  { flag: "--tokenizer <file>", key: "tokenizerPath", help: "load this tokenizer instead of training one (pad/bos/eos ids are read from its special tokens)", type: "string" },
  { flag: "--preset <name>", key: "preset", help: `a published model shape; --d-model, --layers, --heads, --glu-dim, --model-vocab and --untied-head override its values. One of: ${PRESET_LIST}`, type: "string" },
  { flag: "--d-model <n>", key: "model.dModel", help: `model width (default ${DEFAULT_CONFIG.model.dModel})`, type: "int" },
  { flag: "--layers <n>", key: "model.numLayers", help: `layers (default ${DEFAULT_CONFIG.model.numLayers})`, type: "int" },
  { flag: "--heads <n>", key: "model.numHeads", help: `attention heads (default ${DEFAULT_CONFIG.model.numHeads})`, type: "int" },
  { flag: "--glu-dim <n>", key: "model.gluDim", help: `channel-mixer width (default ${DEFAULT_CONFIG.model.gluDim})`, type: "int" },
  { flag: "--model-vocab <n>", key: "model.vocabSize", help: "rows of the model's embedding, at least the tokenizer's vocabulary (default: the tokenizer's, or the preset's)", type: "int" },
  { flag: "--untied-head", key: "model.tieWordEmbeddings", help: "give the model its own lm_head instead of sharing the embedding matrix (default: the preset's; tied without one)", type: "flag", value: false },
  { flag: "--lr <x>", key: "lr", help: `peak learning rate (default ${DEFAULT_CONFIG.lr})`, type: "number" },
  { flag: "--warmup <n>", key: "warmupSteps", help: `warmup steps (default ${DEFAULT_CONFIG.warmupSteps})`, type: "int" },
  { flag: "--weight-decay <x>", key: "weightDecay", help: `AdamW weight decay (default ${DEFAULT_CONFIG.weightDecay})`, type: "number" },
  { flag: "--grad-clip <x>", key: "gradClip", help: `global gradient-norm clip (default ${DEFAULT_CONFIG.gradClip})`, type: "number" },
  { flag: "--eval-interval <n>", key: "evalInterval", help: `steps between held-out evaluations (default ${DEFAULT_CONFIG.evalInterval})`, type: "int" },
  { flag: "--checkpoint-interval <n>", key: "checkpointInterval", help: `steps between checkpoints (default ${DEFAULT_CONFIG.checkpointInterval})`, type: "int" },
  { flag: "--seed <n>", key: "seed", help: `random seed (default ${DEFAULT_CONFIG.seed})`, type: "int" },
  { flag: "--backend <name>", key: "backend", help: "cpu (default), cuda or webgpu", type: "string" },
  { flag: "--dtype <dtype>", key: "dtype", help: `parameters and compute in ${DTYPE_HELP}; f32 master weights and moments either way, loss scaling for f16`, type: "string" },
  { flag: "--zero <n>", key: "zero", help: "1: shard the optimizer state over the ranks of a group (ZeRO-1; with --gpus N, N > 1); 0: every rank keeps all of it (default 0)", type: "int" },
  { flag: "--peak-tflops <x>", key: "peakTflops", help: "the device's peak TFLOP/s for MFU (default: 790 on cuda, the H200's measured bf16 matmul rate; on cpu and webgpu the f32 matmul rate measured at start)", type: "number" },
];

/** "--warmup" for "warmupSteps": the flag a key is set with on the command line, if it has one. */
export function flagOf(key: string): string | undefined {
  return CLI_FLAGS.find((f) => f.key === key)?.flag.split(" ")[0];
}

/** Applies dotted-key values onto a copy of `base`, checking every key and value. */
export function applyValues(base: TrainConfig, values: Record<string, unknown>, source: string): TrainConfig {
  const config = structuredClone(base) as unknown as Record<string, unknown>;
  const fromFlags = source === COMMAND_LINE;
  for (const [key, value] of Object.entries(values)) {
    const kind = SCHEMA[key];
    if (!kind) throw new ConfigError(`${source}: unknown key "${key}"; known keys: ${Object.keys(SCHEMA).join(", ")}`);
    const name = fromFlags && flagOf(key) ? flagOf(key)! : `${source}: "${key}"`;
    if (!valid(kind, value)) throw new ConfigError(`${name} expected ${EXPECT[kind]}, got ${JSON.stringify(value)}`);
    setPath(config, key, value);
  }
  return config as unknown as TrainConfig;
}

/** Where a setting came from, for error messages: `--steps 5`, `"steps" (5, from train.toml)`, `--warmup (default 20)`. */
export type SettingNamer = (key: string, value: unknown) => string;

const plainNames: SettingNamer = (key, value) => `"${key}" (${JSON.stringify(value)})`;

/** Checks what single values cannot: relations between keys, named as the user set them. */
export function checkConsistency(c: TrainConfig, name: SettingNamer = plainNames): TrainConfig {
  const fail = (msg: string) => {
    throw new ConfigError(`config: ${msg}`);
  };
  if (c.model.dModel % c.model.numHeads !== 0) fail(`${name("model.numHeads", c.model.numHeads)} must divide ${name("model.dModel", c.model.dModel)}`);
  if (c.warmupSteps >= c.steps) fail(`${name("warmupSteps", c.warmupSteps)} must be below ${name("steps", c.steps)}`);
  if (c.seqLen < 2) fail(`${name("seqLen", c.seqLen)} must be at least 2`);
  if (c.tokenizerPath === null && c.vocabSize < 260) fail(`${name("vocabSize", c.vocabSize)} must be at least 260 (256 bytes and the special tokens)`);
  if (c.tokensPerStep !== null && c.tokensPerStep % c.seqLen !== 0) fail(`${name("tokensPerStep", c.tokensPerStep)} must be a multiple of ${name("seqLen", c.seqLen)}`);
  const rows = sequencesPerStep(c);
  if (c.microBatch > rows) fail(`${name("microBatch", c.microBatch)} exceeds the ${rows} sequences of a step`);
  return c;
}

/** Sequences per optimizer step: `tokensPerStep / seqLen` when tokens per step are given, else `batchSize`. */
export function sequencesPerStep(c: TrainConfig): number {
  return c.tokensPerStep === null ? c.batchSize : c.tokensPerStep / c.seqLen;
}

/** Sequences per forward/backward pass. */
export function microBatchOf(c: TrainConfig): number {
  return c.microBatch === 0 ? sequencesPerStep(c) : c.microBatch;
}

const PRESET_KEYS = ["dModel", "numLayers", "numHeads", "gluDim", "vocabSize"] as const;

/** The preset's sizes for every model key not set explicitly (`explicit` holds dotted keys). */
export function withPreset(c: TrainConfig, explicit: ReadonlySet<string> = new Set()): TrainConfig {
  if (c.preset === null) return c;
  const p = PRESETS[c.preset as keyof typeof PRESETS];
  const model = { ...c.model };
  for (const k of PRESET_KEYS) if (!explicit.has(`model.${k}`)) model[k] = p[k];
  return { ...c, model };
}

/** A saved config with the keys added since it was written, at their defaults. */
export function withDefaults(saved: TrainConfig): TrainConfig {
  return { ...DEFAULT_CONFIG, ...saved, model: { ...DEFAULT_CONFIG.model, ...saved.model } };
}

/** Reads a JSON or TOML config file into dotted-key values. */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`--config: cannot read ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = extname(path).toLowerCase() === ".toml" ? parseToml(text) : JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid ${extname(path).toLowerCase() === ".toml" ? "TOML" : "JSON"}: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new ConfigError(`${path}: expected a table of settings at the top level`);
  return flatten(parsed as Record<string, unknown>);
}

export interface ResolveOptions {
  file?: string;
  /** Dotted-key values from the command line; they win over the file. */
  overrides?: Record<string, unknown>;
}

export function resolveConfig(options: ResolveOptions = {}): TrainConfig {
  let config = DEFAULT_CONFIG;
  const fileValues = options.file ? readConfigFile(options.file) : {};
  if (options.file) config = applyValues(config, fileValues, options.file);
  if (options.overrides) config = applyValues(config, options.overrides, COMMAND_LINE);
  const explicit = new Set([...Object.keys(fileValues), ...Object.keys(options.overrides ?? {})]);
  config = withPreset(config, explicit);
  const name: SettingNamer = (key, value) => {
    const flag = flagOf(key);
    if (options.overrides && key in options.overrides) return flag ? `${flag} ${JSON.stringify(value)}` : plainNames(key, value);
    if (key in fileValues) return `"${key}" (${JSON.stringify(value)}, from ${options.file})`;
    if (key.startsWith("model.") && config.preset !== null) return `${flag ?? `"${key}"`} (${JSON.stringify(value)}, from --preset ${config.preset})`;
    return flag ? `${flag} (default ${JSON.stringify(value)})` : `"${key}" (default ${JSON.stringify(value)})`;
  };
  if (config.tokensPerStep !== null && explicit.has("batchSize") && config.batchSize * config.seqLen !== config.tokensPerStep) {
    throw new ConfigError(`config: ${name("batchSize", config.batchSize)} and ${name("tokensPerStep", config.tokensPerStep)} disagree; give one of them`);
  }
  return checkConsistency(config, name);
}
