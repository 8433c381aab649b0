import { describe, expect, it } from "vitest";
import { copySuite } from "../src/suites/copy.js";

const context = { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 1 }, log: () => {} };

describe("copy suite", () => {
  it("checks each copy bit for bit, then reports time and bandwidth per size", async () => {
    const results = await copySuite.run(context, { mib: [1, 3] });
    expect(results.map((r) => [r.mib, r.ok])).toEqual([
      [1, true],
      [3, true],
    ]);
    for (const r of results) expect(r.gbps).toBeGreaterThan(0);
  });
});
