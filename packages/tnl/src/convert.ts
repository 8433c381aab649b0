/**
 * PyTorch `.bin` checkpoints to safetensors (Node), the way transformers lays them out: one
 * `pytorch_model.bin` becomes `model.safetensors`; shards listed in `pytorch_model.bin.index.json`
 * become as many `model-0000i-of-0000N.safetensors` with `model.safetensors.index.json`. Dtypes are
 * kept bit for bit (bf16 stays BF16), tensors stream one at a time from the .bin to the output, and
 * the config is checked against the tensors before anything is written.
 */
import { existsSync, statSync } from "node:fs";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { INDEX_FILE, writeAtomically } from "@lightning-ts/tensor/node";
import { layout } from "@lightning-ts/tensor";
import { listStoredTensors, planLoad, readConfig, TnlCheckpointError } from "./checkpoint.js";
import type { ConfigOptions } from "./config.js";
import { TorchCheckpoint } from "./torch/file.js";

const SHARD_PATTERN = /^model-\d{5}-of-\d{5}\.safetensors$/;
/** Files of a model directory that are weights, never copied beside the converted ones. */
const WEIGHTS = /^(pytorch_model.*\.bin(\.index\.json)?|model.*\.safetensors(\.index\.json)?)$/;

export interface ConvertResult {
  /** Written weight files (and the index, when sharded), relative to the output directory. */
  files: string[];
  tensors: number;
  /** Bytes of tensor data written. */
  bytes: number;
  /** Stored dtypes, as in the input. */
  dtypes: string[];
  /** Other files of the input directory copied beside them (tokenizer, generation config, remote code). */
  copied: string[];
}

/**
 * Converts a PyTorch checkpoint (`input`: a directory with config.json and `pytorch_model.bin` or
 * its sharded index, or one of those files) into a safetensors directory `out`, with config.json
 * and the directory's other files (tokenizer, remote code) copied unchanged. A tied lm_head saved
 * beside the embedding is dropped, as transformers saves it.
 *
 * @example
 * await convertCheckpoint("TransNormerLLM-1B", "TransNormerLLM-1B-safetensors");
 */
export async function convertCheckpoint(input: string, out: string, options: ConfigOptions = {}): Promise<ConvertResult> {
  const dir = existsSync(input) && statSync(input).isDirectory() ? input : dirname(input);
  const config = await readConfig(input, options);
  const stored = await listStoredTensors(input);
  const inputFiles = [...new Set([...stored.values()].map((e) => e.file))];
  const notTorch = inputFiles.filter((f) => !f.endsWith(".bin"));
  if (notTorch.length > 0) throw new TnlCheckpointError(`${input} is already safetensors (${notTorch.join(", ")}); nothing to convert`);
  const plan = planLoad(config, stored, input);

  const byFile = new Map<string, string[]>();
  for (const [name, file] of plan) byFile.set(file, [...(byFile.get(file) ?? []), name]);
  const shards = [...byFile.keys()].sort();
  const outName = (i: number) =>
    shards.length === 1 ? "model.safetensors" : `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;

  await mkdir(out, { recursive: true });
  const sameDir = resolve(out) === resolve(dir);
  for (const f of await readdir(out)) if (f === "model.safetensors" || f === INDEX_FILE || SHARD_PATTERN.test(f)) await rm(join(out, f));

  const result: ConvertResult = { files: [], tensors: 0, bytes: 0, dtypes: [], copied: [] };
  const weightMap: Record<string, string> = {};
  const dtypes = new Set<string>();
  for (const [i, file] of shards.entries()) {
    const names = byFile.get(file)!;
    const name = outName(i);
    result.bytes += await writeShard(join(dir, file), names, join(out, name));
    for (const n of names) {
      weightMap[n] = name;
      dtypes.add(stored.get(n)!.dtype);
    }
    result.files.push(name);
    result.tensors += names.length;
  }
  if (shards.length > 1) {
    const index = { metadata: { total_size: result.bytes }, weight_map: weightMap };
    await writeAtomically(join(out, INDEX_FILE), (fh) => fh.writeFile(JSON.stringify(index, null, 2) + "\n"));
    result.files.push(INDEX_FILE);
  }
  result.dtypes = [...dtypes].sort();
  if (!sameDir) {
    for (const f of (await readdir(dir)).sort()) {
      if (WEIGHTS.test(f) || !statSync(join(dir, f)).isFile()) continue;
      await copyFile(join(dir, f), join(out, f));
      result.copied.push(f);
    }
  }
  return result;
}

/** Writes `names` of the .bin `source` as one safetensors file, one tensor in memory at a time. */
async function writeShard(source: string, names: string[], target: string): Promise<number> {
  const ckpt = await TorchCheckpoint.open(source);
  try {
    const info = ckpt.tensors;
    const items = names.map((name) => ({ name, dtype: info.get(name)!.dtype, shape: info.get(name)!.shape }));
    const { prefix, order, dataBytes } = layout(items, { format: "pt" });
    await writeAtomically(target, async (fh) => {
      await fh.writeFile(prefix);
      for (const it of order) await fh.writeFile((await ckpt.readRaw(it.name)).bytes);
    });
    return dataBytes;
  } finally {
    await ckpt.close();
  }
}
