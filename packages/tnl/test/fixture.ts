/** The official-code fixture (test/fixtures/tnl-tiny, see its README) and comparison helpers. */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Backend, getBackend, setBackend } from "@lightning-ts/tensor";
import { disposeParams, forward, loadCheckpoint } from "../src/index.js";

export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "tnl-tiny");

export interface FixtureJson {
  input_ids: number[][];
  input_ids_300: number[][];
  prompt_ids: number[][];
  generated_ids_cached: number[][];
  generated_ids_cached_stale_offset: number[][];
}

export const fixture = JSON.parse(readFileSync(join(FIXTURE_DIR, "fixture.json"), "utf8")) as FixtureJson;

/** A little-endian float32 file of the fixture. */
export function readF32(name: string): Float32Array {
  const buf = readFileSync(join(FIXTURE_DIR, name));
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

/**
 * Max |Δ| between the model's logits, computed on `backend`, and the official ones, for both
 * fixture inputs (2×37, and 300 tokens crossing the 256-token prefill block). GPU backend tests
 * call this to run the same parity check on their device.
 */
export async function fixtureLogitDiffs(backend: Backend): Promise<Record<"logits.bin" | "logits300.bin", number>> {
  const previous = getBackend();
  setBackend(backend);
  try {
    const model = await loadCheckpoint(FIXTURE_DIR);
    const diffs = { "logits.bin": 0, "logits300.bin": 0 };
    for (const [ids, file] of [[fixture.input_ids, "logits.bin"], [fixture.input_ids_300, "logits300.bin"]] as const) {
      const logits = forward(model.params, model.config, ids);
      diffs[file] = maxAbsDiff(await logits.data(), readF32(file));
      logits.dispose();
    }
    disposeParams(model.params);
    return diffs;
  } finally {
    setBackend(previous);
  }
}
