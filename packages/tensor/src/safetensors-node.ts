/**
 * safetensors files on disk (Node). Reads open a file handle, read the header, then each wanted
 * tensor's byte range, so a checkpoint never sits in memory twice; writes go to a temporary file
 * that is renamed into place, so a crash never leaves a half-written checkpoint under the real name.
 */
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Backend } from "./backend.js";
import {
  dict,
  headerLength,
  layout,
  parseHeader,
  type RawTensor,
  SafetensorsError,
  type SafetensorsHeader,
  selectEntries,
  toRaw,
  toTensor,
} from "./safetensors.js";
import type { Tensor } from "./tensor.js";

export interface ReadOptions {
  /** Only these tensors (default: all); a name the file lacks is an error. */
  names?: readonly string[];
  backend?: Backend;
}

export interface Checkpoint {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

/** Fills `buf` from `position`, failing if the file ends first (it changed under us). */
async function readExactly(fh: FileHandle, buf: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsError(path, `truncated: file ended at byte ${position + done}, expected ${buf.length - done} more`);
    done += bytesRead;
  }
}

async function readHeaderFrom(fh: FileHandle, path: string): Promise<SafetensorsHeader> {
  const { size } = await fh.stat();
  const prefix = new Uint8Array(8);
  if (size >= 8) await readExactly(fh, prefix, 0, path);
  const n = headerLength(prefix, size, path);
  const json = new Uint8Array(n);
  await readExactly(fh, json, 8, path);
  return parseHeader(json, size, path);
}

/**
 * The validated header of a file, without reading any tensor data.
 *
 * @example
 * const { entries } = await readSafetensorsHeader("model.safetensors");
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const fh = await open(path, "r");
  try {
    return await readHeaderFrom(fh, path);
  } finally {
    await fh.close();
  }
}

/**
 * Stored tensors as bytes (every dtype of the format, unconverted).
 *
 * @example
 * const { tensors } = await readSafetensorsRaw("model.safetensors", { names: ["lm_head.weight"] });
 */
export async function readSafetensorsRaw(
  path: string,
  options: { names?: readonly string[] } = {},
): Promise<{ tensors: Record<string, RawTensor>; metadata: Record<string, string> }> {
  const fh = await open(path, "r");
  try {
    const header = await readHeaderFrom(fh, path);
    const tensors = dict<RawTensor>();
    for (const e of selectEntries(header, options.names, path)) {
      const bytes = new Uint8Array(e.end - e.begin);
      await readExactly(fh, bytes, header.dataStart + e.begin, path);
      tensors[e.name] = { dtype: e.dtype, shape: e.shape, bytes };
    }
    return { tensors, metadata: header.metadata };
  } finally {
    await fh.close();
  }
}

/**
 * Tensors from a safetensors file, converted as `toTensor` describes (I64 → i32 range-checked).
 *
 * @example
 * const { tensors, metadata } = await readSafetensors("model.safetensors");
 * const w = tensors["lm_head.weight"]!; // f32 [256, 64]
 */
export async function readSafetensors(path: string, options: ReadOptions = {}): Promise<Checkpoint> {
  const fh = await open(path, "r");
  const tensors = dict<Tensor>();
  try {
    const header = await readHeaderFrom(fh, path);
    for (const e of selectEntries(header, options.names, path)) {
      const bytes = new Uint8Array(e.end - e.begin);
      await readExactly(fh, bytes, header.dataStart + e.begin, path);
      tensors[e.name] = toTensor({ dtype: e.dtype, shape: e.shape, bytes }, { name: e.name, source: path, backend: options.backend });
    }
    return { tensors, metadata: header.metadata };
  } catch (err) {
    for (const t of Object.values(tensors)) t.dispose();
    throw err;
  } finally {
    await fh.close();
  }
}

/**
 * Writes tensors (or raw entries) to `path` atomically: into `path.tmp-<pid>`, then renamed.
 *
 * @example
 * await writeSafetensors("out.safetensors", { w: tensor([[1, 2], [3, 4]]) }, { format: "pt" });
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, Tensor | RawTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const raw = await toRaw(tensors);
  const { prefix, order } = layout(
    Object.entries(raw).map(([name, r]) => ({ name, dtype: r.dtype, shape: r.shape })),
    metadata,
  );
  await writeAtomically(path, async (fh) => {
    // writeFile, unlike write, loops until every byte is written; each call continues where the last ended.
    await fh.writeFile(prefix);
    for (const it of order) await fh.writeFile(raw[it.name].bytes);
  });
}

/** Runs `write` on `path.tmp-<pid>`, flushes it to disk and renames it to `path`; no temporary survives a failure. */
export async function writeAtomically(path: string, write: (fh: FileHandle) => Promise<void>): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, "w");
    try {
      await write(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export const INDEX_FILE = "model.safetensors.index.json";

interface ShardIndex {
  metadata: Record<string, unknown>;
  weight_map: Record<string, string>;
}

/**
 * Writes tensors as Hugging Face-style shards `model-0000i-of-0000N.safetensors` of at most
 * `maxShardBytes` data bytes each (a larger tensor gets a shard of its own), then the index
 * `model.safetensors.index.json` (`{metadata: {total_size}, weight_map: {name: file}}`).
 *
 * @example
 * await writeShardedSafetensors("ckpt", tensors, { maxShardBytes: 2 ** 30 });
 */
export async function writeShardedSafetensors(
  dir: string,
  tensors: Record<string, Tensor | RawTensor>,
  options: { maxShardBytes: number; metadata?: Record<string, string> },
): Promise<{ files: string[]; index: ShardIndex }> {
  if (!(options.maxShardBytes > 0)) throw new RangeError(`writeShardedSafetensors: maxShardBytes must be positive, got ${options.maxShardBytes}`);
  const raw = await toRaw(tensors);
  const shards: string[][] = [];
  let current: string[] = [];
  let currentBytes = 0;
  let total = 0;
  for (const [name, r] of Object.entries(raw)) {
    const n = r.bytes.byteLength;
    if (current.length > 0 && currentBytes + n > options.maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(name);
    currentBytes += n;
    total += n;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);

  await mkdir(dir, { recursive: true });
  const count = shards.length;
  const pad = (i: number) => String(i).padStart(5, "0");
  const files: string[] = [];
  const weightMap = dict<string>();
  for (const [i, names] of shards.entries()) {
    const file = `model-${pad(i + 1)}-of-${pad(count)}.safetensors`;
    const part = dict<RawTensor>();
    for (const name of names) {
      part[name] = raw[name]!;
      weightMap[name] = file;
    }
    await writeSafetensors(join(dir, file), part, options.metadata);
    files.push(file);
  }
  const index: ShardIndex = { metadata: { ...options.metadata, total_size: total }, weight_map: weightMap };
  await writeAtomically(join(dir, INDEX_FILE), (fh) => fh.writeFile(JSON.stringify(index, null, 2) + "\n"));
  return { files, index };
}

/**
 * Reads a sharded checkpoint through its `model.safetensors.index.json`; each shard is read
 * for exactly the tensors the index assigns to it. `metadata` is the index's metadata.
 *
 * @example
 * const { tensors } = await readShardedSafetensors("ckpt");
 */
export async function readShardedSafetensors(
  dir: string,
  options: ReadOptions = {},
): Promise<{ tensors: Record<string, Tensor>; metadata: Record<string, unknown> }> {
  const indexPath = join(dir, INDEX_FILE);
  const index = parseIndex(await readFile(indexPath, "utf8"), indexPath);
  const wanted = options.names ?? Object.keys(index.weight_map);
  const byFile = new Map<string, string[]>();
  for (const name of wanted) {
    if (!Object.hasOwn(index.weight_map, name)) throw new SafetensorsError(indexPath, `no tensor named "${name}" in weight_map`);
    const file = index.weight_map[name];
    byFile.set(file, [...(byFile.get(file) ?? []), name]);
  }
  const tensors = dict<Tensor>();
  try {
    for (const [file, names] of byFile) {
      const shardPath = join(dir, file);
      await stat(shardPath).catch(() => {
        throw new SafetensorsError(indexPath, `weight_map names shard "${file}", which does not exist`);
      });
      const part = await readSafetensors(shardPath, { names, backend: options.backend });
      Object.assign(tensors, part.tensors);
    }
  } catch (err) {
    for (const t of Object.values(tensors)) t.dispose();
    throw err;
  }
  return { tensors, metadata: index.metadata };
}

function parseIndex(text: string, path: string): ShardIndex {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new SafetensorsError(path, `index is not valid JSON (${(err as Error).message})`);
  }
  const p = parsed as Partial<ShardIndex> | null;
  const map = p?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) throw new SafetensorsError(path, "index has no weight_map object");
  for (const [name, file] of Object.entries(map)) {
    // Shards must sit beside the index: a path elsewhere is refused rather than followed.
    if (typeof file !== "string" || file !== basename(file) || file === "" || file === "." || file === "..") {
      throw new SafetensorsError(path, `weight_map["${name}"] is ${JSON.stringify(file)}, expected a file name in the same directory`);
    }
  }
  const metadata = typeof p?.metadata === "object" && p.metadata !== null ? p.metadata : {};
  return { metadata, weight_map: map };
}
