/**
 * The official-code TNL fixture (fixtures/tnl-tiny, see its README): outputs of the PyTorch
 * TransNormerLLM on random weights, which the TypeScript model must reproduce on every backend.
 * Node only (it reads files), hence its own entry: `@lightning-ts/testing/tnl-fixture`.
 *
 * Every file for which fixture.json records a sha256 is checked when the fixture is loaded, so a
 * corrupted or edited file fails with its name instead of as a parity error.
 *
 * @example
 * const { input_ids } = tnlFixture();
 * const want = readF32("logits.bin"); // [2, 37, 256]
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Backend, getBackend, setBackend, type Tensor } from "@lightning-ts/tensor";

/** The fixture directory (from src/ and from dist/ alike). */
export const FIXTURE_DIR = fileURLToPath(new URL("../fixtures/tnl-tiny", import.meta.url));

export interface FixtureFile {
  file: string;
  dtype: string;
  endian: string;
  shape: number[];
  sha256?: string;
  what?: string;
}

export interface FixtureJson {
  input_ids: number[][];
  input_ids_300: number[][];
  prompt_ids: number[][];
  generated_ids_cached: number[][];
  generated_ids_cached_stale_offset: number[][];
  /** Parameter names and shapes of model.safetensors. */
  weights: Record<string, number[]>;
  files: Record<string, FixtureFile>;
}

const loaded = new Map<string, FixtureJson>();

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

function readFixtureFile(dir: string, name: string): Buffer {
  try {
    return readFileSync(join(dir, name));
  } catch (err) {
    throw new Error(`TNL fixture file ${join(dir, name)} cannot be read: ${(err as Error).message}`);
  }
}

/** fixture.json of `dir`, read once, after every file it records a sha256 for has been checked. */
export function tnlFixture(dir = FIXTURE_DIR): FixtureJson {
  let json = loaded.get(dir);
  if (json) return json;
  json = JSON.parse(readFixtureFile(dir, "fixture.json").toString("utf8")) as FixtureJson;
  for (const { file, sha256: want } of Object.values(json.files)) {
    if (want === undefined) continue;
    const got = sha256(readFixtureFile(dir, file));
    if (got !== want) {
      throw new Error(`TNL fixture file ${join(dir, file)} is corrupted or was changed: its sha256 is ${got}, fixture.json records ${want}`);
    }
  }
  loaded.set(dir, json);
  return json;
}

/** A little-endian float32 file of the fixture (checked against its sha256). */
export function readF32(name: string, dir = FIXTURE_DIR): Float32Array {
  tnlFixture(dir);
  const buf = readFixtureFile(dir, name);
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

/** max |a − b|, Infinity where either side is NaN; throws on a length mismatch. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

/**
 * The part of `@lightning-ts/tnl` the logits check runs. The test passes the package in, so this
 * package (below tnl) does not import it.
 */
export interface TnlModelApi<P, C> {
  loadCheckpoint(dir: string, options: { dtype: "f32" }): Promise<{ params: P; config: C }>;
  forward(params: P, config: C, ids: number[][]): Tensor;
  disposeParams(params: P): void;
}

/**
 * Max |Δ| between the model's logits, computed on `backend`, and the official ones, for both
 * fixture inputs (2×37, and 300 tokens crossing the 256-token prefill block).
 *
 * @example
 * import * as tnl from "@lightning-ts/tnl";
 * const diffs = await fixtureLogitDiffs(createCudaBackend(), tnl);
 */
export async function fixtureLogitDiffs<P, C>(backend: Backend, tnl: TnlModelApi<P, C>): Promise<Record<"logits.bin" | "logits300.bin", number>> {
  const fixture = tnlFixture();
  const previous = getBackend();
  setBackend(backend);
  try {
    // f32 whatever the backend would load by default: the official logits are f32.
    const model = await tnl.loadCheckpoint(FIXTURE_DIR, { dtype: "f32" });
    const diffs = { "logits.bin": 0, "logits300.bin": 0 };
    for (const [ids, file] of [[fixture.input_ids, "logits.bin"], [fixture.input_ids_300, "logits300.bin"]] as const) {
      const logits = tnl.forward(model.params, model.config, ids);
      diffs[file] = maxAbsDiff(await logits.data(), readF32(file));
      logits.dispose();
    }
    tnl.disposeParams(model.params);
    return diffs;
  } finally {
    setBackend(previous);
  }
}
