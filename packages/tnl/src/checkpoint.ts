/**
 * Hugging Face TNL checkpoints on disk (Node): a directory with `config.json` and weights as
 * `model.safetensors`, safetensors shards listed in `model.safetensors.index.json`, or PyTorch's
 * `pytorch_model.bin` / shards listed in `pytorch_model.bin.index.json` (read by the safe torch.save
 * reader of ./torch, which executes nothing); official parameter names (docs/ALGORITHM.md E.9),
 * weights in f32, bf16 or f16. Shapes are checked against the config from the file headers (the
 * pickles, for .bin) before any weight is read, so a mismatched 7B checkpoint fails in milliseconds.
 * A directory holding both formats is read from its safetensors, as transformers does.
 */
import { existsSync, statSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { type Backend, cast, collectTensors, getBackend, scope, type Tensor, toTensor } from "@lightning-ts/tensor";
import {
  INDEX_FILE,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  writeShardedSafetensors,
} from "@lightning-ts/tensor/node";
import { configFromHf, type ConfigOptions, configToHf, type TnlConfig } from "./config.js";
import { loadDType } from "./load-dtype.js";
import type { ModelDType } from "./precision.js";
import { parameterSpecs, type TnlModel, type TnlParams } from "./params.js";
import { TorchCheckpoint } from "./torch/file.js";

/** A checkpoint directory we cannot read, or one that does not match its config. */
export class TnlCheckpointError extends Error {
  override name = "TnlCheckpointError";
}

const SINGLE_FILE = "model.safetensors";
const SHARD_PATTERN = /^model-\d{5}-of-\d{5}\.safetensors$/;
const TORCH_DTYPE: Record<string, string> = { f32: "float32", bf16: "bfloat16", f16: "float16", f64: "float64" };
const STORED_FLOATS = new Set(["F32", "F16", "BF16", "F64"]);

const TORCH_FILE = "pytorch_model.bin";
const TORCH_INDEX = "pytorch_model.bin.index.json";

/** Where each stored tensor lives, with its stored dtype (safetensors names) and shape. */
export interface StoredEntry {
  file: string;
  dtype: string;
  shape: number[];
}

/** A model path: a directory, or one weight file (or index) inside the directory that holds config.json. */
interface ModelPath {
  dir: string;
  /** The weight file or index to read; undefined = pick from the directory. */
  weights?: string;
}

function resolveModelPath(path: string): ModelPath {
  if (!existsSync(path)) throw new TnlCheckpointError(`model directory ${path} does not exist`);
  if (statSync(path).isDirectory()) return { dir: path };
  const file = basename(path);
  if (!/\.(bin|safetensors|index\.json)$/.test(file)) throw new TnlCheckpointError(`${path} is neither a model directory nor a .bin, .safetensors or .index.json weight file`);
  return { dir: dirname(path), weights: file };
}

/**
 * Reads `config.json` of a model directory (or of the directory of a weight file) into a
 * `TnlConfig`; unknown keys are reported through `options.warn`.
 *
 * @example
 * const config = await readConfig("TransNormerLLM-1B");
 */
export async function readConfig(path: string, options: ConfigOptions = {}): Promise<TnlConfig> {
  const { dir } = resolveModelPath(path);
  const file = join(dir, "config.json");
  if (!existsSync(file)) throw new TnlCheckpointError(`${file} is missing: a TNL model directory needs config.json`);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new TnlCheckpointError(`${file} is not valid JSON (${(err as Error).message})`);
  }
  return configFromHf(json, { source: file, ...options });
}

/** The weight file or index of a directory, in transformers' order of preference. */
function pickWeights(dir: string): string {
  for (const f of [SINGLE_FILE, INDEX_FILE, TORCH_FILE, TORCH_INDEX]) if (existsSync(join(dir, f))) return f;
  throw new TnlCheckpointError(`${dir} has no ${SINGLE_FILE}, ${INDEX_FILE}, ${TORCH_FILE} or ${TORCH_INDEX}`);
}

/** Shard file → tensor names, from an index's weight_map; shards must sit beside the index. */
async function readIndex(dir: string, indexFile: string): Promise<Map<string, Set<string>>> {
  const path = join(dir, indexFile);
  let index: unknown;
  try {
    index = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new TnlCheckpointError(`${path} is not valid JSON (${(err as Error).message})`);
  }
  const weightMap = typeof index === "object" && index !== null && "weight_map" in index ? index.weight_map : undefined;
  if (typeof weightMap !== "object" || weightMap === null) throw new TnlCheckpointError(`${path} has no weight_map`);
  const byFile = new Map<string, Set<string>>();
  for (const [name, file] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof file !== "string" || file !== basename(file) || file === "" || file === "." || file === "..") {
      throw new TnlCheckpointError(`${path}: weight_map["${name}"] is ${JSON.stringify(file)}, expected a file name in the same directory`);
    }
    byFile.set(file, (byFile.get(file) ?? new Set()).add(name));
  }
  return byFile;
}

/** The tensors one weight file holds, from its header (safetensors) or its pickle (.bin). */
async function fileTensors(path: string): Promise<Map<string, { dtype: string; shape: number[] }>> {
  if (path.endsWith(".safetensors")) {
    const header = await readSafetensorsHeader(path);
    return new Map(header.entries.map((e) => [e.name, { dtype: e.dtype, shape: [...e.shape] }]));
  }
  const ckpt = await TorchCheckpoint.open(path);
  await ckpt.close();
  return ckpt.tensors;
}

/**
 * The stored tensors of a checkpoint (a directory, or a weight file or index in one), from the
 * headers and pickles only.
 */
export async function listStoredTensors(path: string): Promise<Map<string, StoredEntry>> {
  const where = resolveModelPath(path);
  const dir = where.dir;
  const weights = where.weights ?? pickWeights(dir);
  const entries = new Map<string, StoredEntry>();
  if (!weights.endsWith(".index.json")) {
    for (const [name, e] of await fileTensors(join(dir, weights))) entries.set(name, { file: weights, ...e });
    return entries;
  }
  for (const [file, names] of await readIndex(dir, weights)) {
    if (!existsSync(join(dir, file))) throw new TnlCheckpointError(`${weights} names shard ${file}, which is missing from ${dir}`);
    const held = await fileTensors(join(dir, file));
    for (const name of names) {
      const e = held.get(name);
      if (!e) throw new TnlCheckpointError(`${weights} puts "${name}" in ${file}, which does not hold it`);
      entries.set(name, { file, ...e });
    }
  }
  return entries;
}

/** Checks stored names, shapes and dtypes against `config`; returns HF name → file for the tensors to read. */
export function planLoad(config: TnlConfig, stored: Map<string, StoredEntry>, dir: string): Map<string, string> {
  const plan = new Map<string, string>();
  const expected = new Set<string>();
  for (const spec of parameterSpecs(config)) {
    expected.add(spec.name);
    const e = stored.get(spec.name);
    if (!e) {
      const hint = spec.name === "lm_head.weight" ? " (config.json says tie_word_embeddings: false)" : "";
      throw new TnlCheckpointError(`checkpoint ${dir} lacks "${spec.name}"${hint}`);
    }
    if (e.shape.join() !== spec.shape.join()) {
      throw new TnlCheckpointError(`checkpoint ${dir}: "${spec.name}" is [${e.shape.join(", ")}] but config.json implies [${spec.shape.join(", ")}]`);
    }
    if (!STORED_FLOATS.has(e.dtype)) throw new TnlCheckpointError(`checkpoint ${dir}: "${spec.name}" is stored as ${e.dtype}; expected F32, BF16 or F16`);
    plan.set(spec.name, e.file);
  }
  // A tied checkpoint may still carry lm_head.weight; HF ties it to the embedding on load, and so do we.
  const unexpected = [...stored.keys()].filter((n) => !expected.has(n) && !(n === "lm_head.weight" && config.tieWordEmbeddings));
  if (unexpected.length > 0) {
    throw new TnlCheckpointError(`checkpoint ${dir} has tensors this config does not use: ${unexpected.slice(0, 5).join(", ")}${unexpected.length > 5 ? ", …" : ""}`);
  }
  return plan;
}

export interface LoadOptions extends ConfigOptions {
  /**
   * Dtype of the parameters in memory. Weights stored in it are taken bit for bit; others are
   * converted once (to bf16/f16 rounding to nearest even). Default: by backend and file
   * (`defaultLoadDType`): bf16 on cuda for bf16/f16 checkpoints, f16 on webgpu with shader-f16,
   * else f32. A dtype the backend lacks is a `TnlInputError`.
   */
  dtype?: ModelDType;
  /** Where the weights go (default: the current backend). */
  backend?: Backend;
}

/**
 * Loads a Hugging Face TNL checkpoint: config.json plus single-file or sharded safetensors, or
 * PyTorch `.bin` (single or sharded). `path` is the directory, or a weight file or index in it.
 *
 * @example
 * const model = await loadCheckpoint("TransNormerLLM-1B"); // pytorch_model.bin or model.safetensors
 * const logits = forward(model.params, model.config, [[1, 2, 3]]);
 */
export async function loadCheckpoint(path: string, options: LoadOptions = {}): Promise<TnlModel> {
  const { dir } = resolveModelPath(path);
  const config = await readConfig(path, options);
  const stored = await listStoredTensors(path);
  const plan = planLoad(config, stored, path);
  const dtype = loadDType(options.backend ?? getBackend(), storedDTypes(plan, stored), options.dtype, "loadCheckpoint dtype");
  const byFile = new Map<string, string[]>();
  for (const [name, file] of plan) byFile.set(file, [...(byFile.get(file) ?? []), name]);
  const loaded = new Map<string, Tensor>();
  const keep = (name: string, t: Tensor) => {
    if (t.dtype === dtype) {
      loaded.set(name, t);
    } else {
      loaded.set(name, cast(t, dtype));
      t.dispose();
    }
  };
  try {
    for (const [file, names] of byFile) {
      const source = join(dir, file);
      if (file.endsWith(".safetensors")) {
        const { tensors } = await readSafetensors(source, { names, backend: options.backend });
        for (const [name, t] of Object.entries(tensors)) keep(name, t);
        continue;
      }
      const ckpt = await TorchCheckpoint.open(source);
      try {
        for (const name of names) keep(name, toTensor(await ckpt.readRaw(name), { name, source, backend: options.backend }));
      } finally {
        await ckpt.close();
      }
    }
  } catch (err) {
    for (const t of loaded.values()) t.dispose();
    throw err;
  }
  const params = { layers: [] } as unknown as TnlParams;
  for (const spec of parameterSpecs(config)) spec.set(params, loaded.get(spec.name)!);
  return { config, params };
}

export interface SaveOptions {
  /**
   * Stored dtype (default: the parameters' own when they share f32, bf16 or f16, else f32); the
   * config's torch_dtype is set to match. Parameters already in it are written bit for bit.
   */
  dtype?: "f32" | "bf16" | "f16";
  /** Split into shards of at most this many data bytes, with an index (HF layout). */
  maxShardBytes?: number;
}

/**
 * Writes `model` as a Hugging Face TNL directory (config.json + safetensors with
 * `format: "pt"` metadata, tied lm_head omitted). Earlier weight files in `dir` are removed first,
 * as `save_pretrained` does, so single-file and sharded layouts never mix.
 *
 * @example
 * await saveCheckpoint("out", model, { dtype: "bf16", maxShardBytes: 2 ** 30 });
 */
export async function saveCheckpoint(dir: string, model: TnlModel, options: SaveOptions = {}): Promise<void> {
  const { config, params } = model;
  const dtype = options.dtype ?? ownDType(params);
  await mkdir(dir, { recursive: true });
  for (const f of await readdir(dir)) {
    if (f === SINGLE_FILE || f === INDEX_FILE || SHARD_PATTERN.test(f)) await rm(join(dir, f));
  }
  const stored = scope(() => {
    const out: Record<string, Tensor> = {};
    for (const spec of parameterSpecs(config)) {
      const t = spec.get(params);
      if (!t) throw new TnlCheckpointError(`saveCheckpoint: parameter "${spec.name}" is missing`);
      out[spec.name] = t.dtype === dtype ? t : cast(t, dtype);
    }
    return out;
  });
  // The casts are ours to free; tensors already in the stored dtype are the caller's parameters.
  const originals = new Set(collectTensors(params));
  const owned = Object.values(stored).filter((t) => !originals.has(t));
  try {
    const metadata = { format: "pt" };
    if (options.maxShardBytes !== undefined) {
      await writeShardedSafetensors(dir, stored, { maxShardBytes: options.maxShardBytes, metadata });
    } else {
      await writeSafetensors(join(dir, SINGLE_FILE), stored, metadata);
    }
    const hf = configToHf({ ...config, torchDtype: TORCH_DTYPE[dtype] });
    // transformers finds the model class through these; the official remote code
    // (modeling_transnormer.py & co.) must sit beside the weights for trust_remote_code=True.
    hf.architectures ??= ["TransnormerForCausalLM"];
    hf.auto_map ??= {
      AutoConfig: "configuration_transnormer.TransnormerConfig",
      AutoModelForCausalLM: "modeling_transnormer.TransnormerForCausalLM",
    };
    await writeFile(join(dir, "config.json"), JSON.stringify(hf, null, 2) + "\n");
  } finally {
    for (const t of owned) t.dispose();
  }
}

/** The dtype all parameters share when it is one a checkpoint stores, else f32. */
function ownDType(params: TnlParams): "f32" | "bf16" | "f16" {
  const dtypes = new Set(collectTensors(params).map((t) => t.dtype));
  const [only] = dtypes;
  return dtypes.size === 1 && (only === "bf16" || only === "f16") ? only : "f32";
}

export interface CheckpointInfo {
  config: TnlConfig;
  /** Weight files, relative to the directory. */
  files: string[];
  /** Their total size in bytes. */
  bytes: number;
  /** Stored dtypes of the parameters (safetensors names: F32, BF16, F16). */
  dtypes: string[];
}

/**
 * Reads a checkpoint's config and file headers and checks every shape, without reading weights.
 *
 * @example
 * const { config, bytes } = await inspectCheckpoint("TransNormerLLM-7B");
 */
export async function inspectCheckpoint(path: string, options: ConfigOptions = {}): Promise<CheckpointInfo> {
  const { dir } = resolveModelPath(path);
  const config = await readConfig(path, options);
  const stored = await listStoredTensors(path);
  const plan = planLoad(config, stored, path);
  const files = [...new Set([...stored.values()].map((e) => e.file))].sort();
  let bytes = 0;
  for (const f of files) bytes += (await stat(join(dir, f))).size;
  return { config, files, bytes, dtypes: storedDTypes(plan, stored) };
}

/** The stored dtypes (safetensors names) of the tensors a load reads, sorted. */
function storedDTypes(plan: Map<string, string>, stored: Map<string, StoredEntry>): string[] {
  return [...new Set([...plan.keys()].map((n) => stored.get(n)!.dtype))].sort();
}
