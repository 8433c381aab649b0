/**
 * Hugging Face TNL checkpoints on disk (Node): a directory with `config.json` and either
 * `model.safetensors` or shards listed in `model.safetensors.index.json`, official parameter names
 * (docs/ALGORITHM.md E.9), weights in f32, bf16 or f16. Shapes are checked against the config from the
 * file headers before any weight is read, so a mismatched 7B checkpoint fails in milliseconds.
 */
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Backend, cast, collectTensors, type DType, scope, type Tensor } from "@lightning-ts/tensor";
import {
  INDEX_FILE,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  writeShardedSafetensors,
} from "@lightning-ts/tensor/node";
import { configFromHf, configToHf, type TnlConfig } from "./config.js";
import { parameterSpecs, type TnlModel, type TnlParams } from "./params.js";

/** A checkpoint directory we cannot read, or one that does not match its config. */
export class TnlCheckpointError extends Error {
  override name = "TnlCheckpointError";
}

const SINGLE_FILE = "model.safetensors";
const SHARD_PATTERN = /^model-\d{5}-of-\d{5}\.safetensors$/;
const TORCH_DTYPE: Record<string, string> = { f32: "float32", bf16: "bfloat16", f16: "float16", f64: "float64" };
const STORED_FLOATS = new Set(["F32", "F16", "BF16", "F64"]);

/** Where each stored tensor lives, with its stored dtype and shape. */
interface StoredEntry {
  file: string;
  dtype: string;
  shape: number[];
}

/**
 * Reads `dir/config.json` into a `TnlConfig`.
 *
 * @example
 * const config = await readConfig("TransNormerLLM-1B");
 */
export async function readConfig(dir: string): Promise<TnlConfig> {
  if (!existsSync(dir)) throw new TnlCheckpointError(`model directory ${dir} does not exist`);
  const path = join(dir, "config.json");
  if (!existsSync(path)) throw new TnlCheckpointError(`${path} is missing: a TNL model directory needs config.json`);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new TnlCheckpointError(`${path} is not valid JSON (${(err as Error).message})`);
  }
  return configFromHf(json);
}

/** The stored tensors of a checkpoint directory, from the headers only. */
export async function listStoredTensors(dir: string): Promise<Map<string, StoredEntry>> {
  const entries = new Map<string, StoredEntry>();
  const addFile = async (file: string, names?: Set<string>) => {
    const header = await readSafetensorsHeader(join(dir, file));
    for (const e of header.entries) if (!names || names.has(e.name)) entries.set(e.name, { file, dtype: e.dtype, shape: [...e.shape] });
  };
  if (existsSync(join(dir, SINGLE_FILE))) {
    await addFile(SINGLE_FILE);
  } else if (existsSync(join(dir, INDEX_FILE))) {
    let index: unknown;
    try {
      index = JSON.parse(await readFile(join(dir, INDEX_FILE), "utf8"));
    } catch (err) {
      throw new TnlCheckpointError(`${join(dir, INDEX_FILE)} is not valid JSON (${(err as Error).message})`);
    }
    const weightMap = typeof index === "object" && index !== null && "weight_map" in index ? index.weight_map : undefined;
    if (typeof weightMap !== "object" || weightMap === null) throw new TnlCheckpointError(`${join(dir, INDEX_FILE)} has no weight_map`);
    const byFile = new Map<string, Set<string>>();
    for (const [name, file] of Object.entries(weightMap as Record<string, string>)) byFile.set(file, (byFile.get(file) ?? new Set()).add(name));
    for (const [file, names] of byFile) {
      if (!existsSync(join(dir, file))) throw new TnlCheckpointError(`${INDEX_FILE} names shard ${file}, which is missing from ${dir}`);
      await addFile(file, names);
      for (const name of names) if (!entries.has(name)) throw new TnlCheckpointError(`${INDEX_FILE} puts "${name}" in ${file}, which does not hold it`);
    }
  } else {
    const files = existsSync(dir) ? await readdir(dir) : [];
    const bin = files.find((f) => f.startsWith("pytorch_model") && (f.endsWith(".bin") || f.endsWith(".bin.index.json")));
    if (bin) throw new TnlCheckpointError(`${dir} holds PyTorch pickle weights (${bin}); convert them to safetensors first (they cannot be read safely without Python)`);
    throw new TnlCheckpointError(`${dir} has no ${SINGLE_FILE} and no ${INDEX_FILE}`);
  }
  return entries;
}

/** Checks stored names, shapes and dtypes against `config`; returns HF name → file for the tensors to read. */
function planLoad(config: TnlConfig, stored: Map<string, StoredEntry>, dir: string): Map<string, string> {
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

export interface LoadOptions {
  /**
   * Dtype of the parameters in memory (default f32, whatever the file stores). Weights stored in
   * it are taken bit for bit; others are converted once (f32 → bf16/f16 rounds to nearest even).
   */
  dtype?: DType;
  backend?: Backend;
}

/**
 * Loads a Hugging Face TNL directory: config.json plus single-file or sharded safetensors.
 *
 * @example
 * const model = await loadCheckpoint("TransNormerLLM-1B");
 * const logits = forward(model.params, model.config, [[1, 2, 3]]);
 */
export async function loadCheckpoint(dir: string, options: LoadOptions = {}): Promise<TnlModel> {
  const dtype = options.dtype ?? "f32";
  const config = await readConfig(dir);
  const plan = planLoad(config, await listStoredTensors(dir), dir);
  const byFile = new Map<string, string[]>();
  for (const [name, file] of plan) byFile.set(file, [...(byFile.get(file) ?? []), name]);
  const loaded = new Map<string, Tensor>();
  try {
    for (const [file, names] of byFile) {
      const { tensors } = await readSafetensors(join(dir, file), { names, backend: options.backend });
      for (const [name, t] of Object.entries(tensors)) {
        if (t.dtype === dtype) {
          loaded.set(name, t);
        } else {
          loaded.set(name, cast(t, dtype));
          t.dispose();
        }
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
export async function inspectCheckpoint(dir: string): Promise<CheckpointInfo> {
  const config = await readConfig(dir);
  const stored = await listStoredTensors(dir);
  const plan = planLoad(config, stored, dir);
  const files = [...new Set([...stored.values()].map((e) => e.file))].sort();
  let bytes = 0;
  for (const f of files) bytes += (await stat(join(dir, f))).size;
  const dtypes = [...new Set([...plan.keys()].map((n) => stored.get(n)!.dtype))].sort();
  return { config, files, bytes, dtypes };
}
