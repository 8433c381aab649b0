/** The official-code fixture (test/fixtures/tnl-tiny, see its README) and comparison helpers. */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

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
