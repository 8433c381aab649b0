import { describe, expect, it } from "vitest";
import { stateSuite } from "../src/suites/state.js";

const context = { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 1 }, log: () => {} };

describe("state suite", () => {
  it("checks lightningState against float64 both ways, then reports time and bandwidth per shape", async () => {
    const results = await stateSuite.run(context, { shapes: [[2, 3, 131, 16, 8], [1, 2, 2048, 8, 8]], dtype: "f32", checkHeads: 3 });
    expect(results.map((r) => [r.impl, r.T, r.ok])).toEqual([
      ["lightningState", 131, true],
      ["lightningState reversed", 131, true],
      ["lightningState", 2048, true],
      ["lightningState reversed", 2048, true],
    ]);
    for (const r of results) {
      expect(r.rel_err).toBeLessThan(1e-5);
      expect(r.gbps).toBeGreaterThan(0);
    }
  });

  it("refuses a malformed shape or dtype, naming the option", async () => {
    await expect(stateSuite.run(context, { shapes: [[1, 2, 3, 4, 5]], dtype: "f64", checkHeads: 1 })).rejects.toThrow(/--dtype: expected bf16, f16 or f32, got f64/);
    await expect(stateSuite.run(context, { shapes: [[1, 2, 3, 4, 5]], dtype: "f32", checkHeads: 0 })).rejects.toThrow(/--check-heads/);
  });
});
