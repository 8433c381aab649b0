/**
 * The trainer's configuration: defaults, a JSON or TOML file on top, command-line overrides on
 * top of that, then validation that names the key, what it expected and what came.
 *
 * @example
 * const config = resolveConfig({ file: "train.toml", overrides: { steps: 100, "model.dModel": 192 } });
 */
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { parse as parseToml } from "smol-toml";

export interface ModelSection {
  dModel: number;
  numLayers: number;
  numHeads: number;
  /** Width of the SGLU channel mixer. */
  gluDim: number;
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
  model: ModelSection;
  batchSize: number;
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
  model: { dModel: 128, numLayers: 4, numHeads: 2, gluDim: 344 },
  batchSize: 8,
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

type Kind = "int+" | "int0" | "number+" | "number0" | "fraction" | "string" | "strings" | "path?" | "backend";

const SCHEMA: Record<string, Kind> = {
  data: "strings",
  heldoutFraction: "fraction",
  vocabSize: "int+",
  tokenizerPath: "path?",
  "model.dModel": "int+",
  "model.numLayers": "int+",
  "model.numHeads": "int+",
  "model.gluDim": "int+",
  batchSize: "int+",
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
  outDir: "string",
  samplePrompt: "string",
  sampleCount: "int0",
  sampleTokens: "int+",
  sampleTemperature: "number0",
  sampleTopP: "fraction",
};

const EXPECT: Record<Kind, string> = {
  "int+": "a positive integer",
  int0: "a non-negative integer",
  "number+": "a positive number",
  number0: "a non-negative number",
  fraction: "a number in [0, 1]",
  string: "a string",
  strings: "a list of strings",
  "path?": "a file path or null",
  backend: 'one of "cpu", "cuda", "webgpu"',
};

function valid(kind: Kind, v: unknown): boolean {
  switch (kind) {
    case "int+":
      return Number.isInteger(v) && (v as number) > 0;
    case "int0":
      return Number.isInteger(v) && (v as number) >= 0;
    case "number+":
      return typeof v === "number" && Number.isFinite(v) && v > 0;
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
    case "backend":
      return v === "cpu" || v === "cuda" || v === "webgpu";
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
  obj[parts[parts.length - 1]!] = value;
}

/** Applies dotted-key values onto a copy of `base`, checking every key and value. */
export function applyValues(base: TrainConfig, values: Record<string, unknown>, source: string): TrainConfig {
  const config = structuredClone(base) as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(values)) {
    const kind = SCHEMA[key];
    if (!kind) throw new ConfigError(`${source}: unknown key "${key}"; known keys: ${Object.keys(SCHEMA).join(", ")}`);
    if (!valid(kind, value)) throw new ConfigError(`${source}: "${key}" expected ${EXPECT[kind]}, got ${JSON.stringify(value)}`);
    setPath(config, key, value);
  }
  return config as unknown as TrainConfig;
}

/** Checks what single values cannot: relations between keys. */
export function checkConsistency(c: TrainConfig): TrainConfig {
  const fail = (msg: string) => {
    throw new ConfigError(`config: ${msg}`);
  };
  if (c.model.dModel % c.model.numHeads !== 0) fail(`"model.numHeads" (${c.model.numHeads}) must divide "model.dModel" (${c.model.dModel})`);
  if (c.warmupSteps >= c.steps) fail(`"warmupSteps" (${c.warmupSteps}) must be below "steps" (${c.steps})`);
  if (c.seqLen < 2) fail(`"seqLen" must be at least 2, got ${c.seqLen}`);
  if (c.tokenizerPath === null && c.vocabSize < 260) fail(`"vocabSize" must be at least 260 (256 bytes and the special tokens), got ${c.vocabSize}`);
  return c;
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
  if (options.file) config = applyValues(config, readConfigFile(options.file), options.file);
  if (options.overrides) config = applyValues(config, options.overrides, "command line");
  return checkConsistency(config);
}
