/** The TNL fixture loader: the in-repository files match their recorded sha256 sums, and a changed file fails by name. */
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FIXTURE_DIR, maxAbsDiff, readF32, tnlFixture } from "../src/tnl-fixture.js";

const tmp = mkdtempSync(join(tmpdir(), "tnl-fixture-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of the fixture in a fresh directory, with `change` applied to one file's bytes. */
function copyWith(name: string, change: (bytes: Buffer) => Buffer | null): string {
  const dir = mkdtempSync(join(tmp, "copy-"));
  for (const f of readdirSync(FIXTURE_DIR)) copyFileSync(join(FIXTURE_DIR, f), join(dir, f));
  const changed = change(readFileSync(join(dir, name)));
  if (changed) writeFileSync(join(dir, name), changed);
  else rmSync(join(dir, name));
  return dir;
}

describe("TNL fixture", () => {
  it("records a sha256 for every float file, and the files match them", () => {
    const json = tnlFixture();
    const summed = Object.values(json.files).filter((f) => f.sha256).map((f) => f.file);
    expect(summed.sort()).toEqual(["gen_step_logits.bin", "hidden_states.bin", "logits.bin", "logits300.bin"]);
    expect(json.input_ids.map((r) => r.length)).toEqual([37, 37]);
    expect(readF32("logits.bin").length).toBe(2 * 37 * 256);
  });

  it("fails on a file changed by one bit, naming the file", () => {
    const dir = copyWith("hidden_states.bin", (b) => {
      b[1000] ^= 1;
      return b;
    });
    expect(() => tnlFixture(dir)).toThrow(new RegExp(`TNL fixture file ${join(dir, "hidden_states.bin")} is corrupted or was changed: its sha256 is [0-9a-f]{64}, fixture.json records 1670f46c`));
    expect(() => readF32("logits.bin", dir)).toThrow(/hidden_states\.bin is corrupted/);
  });

  it("fails on a truncated or missing file, naming the file", () => {
    const short = copyWith("logits300.bin", (b) => b.subarray(0, b.length - 4));
    expect(() => tnlFixture(short)).toThrow(/logits300\.bin is corrupted/);
    const missing = copyWith("gen_step_logits.bin", () => null);
    expect(() => tnlFixture(missing)).toThrow(/gen_step_logits\.bin cannot be read/);
  });
});

describe("maxAbsDiff", () => {
  it("finds the worst element, counts NaN as infinitely far and rejects a length mismatch", () => {
    expect(maxAbsDiff([1, 2, 3], [1, 2.5, 2])).toBe(1);
    expect(maxAbsDiff([1, NaN, 3], [1, 2, 3])).toBe(Infinity);
    expect(maxAbsDiff([1, 2, 3], [NaN, 2, 3])).toBe(Infinity);
    expect(() => maxAbsDiff([1, 2], [1])).toThrow(/length 2 vs 1/);
  });
});
