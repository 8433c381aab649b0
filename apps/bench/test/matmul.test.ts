import { describe, expect, it } from "vitest";
import { matmulSuite } from "../src/suites/matmul.js";

const context = { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 1 }, log: () => {} };

describe("matmul suite", () => {
  it("names a bad --webgpu-operands before it measures anything", async () => {
    await expect(matmulSuite.run(context, { sizes: [8], threads: [1], dtype: "f32", anchor: false, rounds: 1, webgpuOperands: -1 })).rejects.toThrow(/--webgpu-operands: expected a non-negative integer, got -1/);
  });
});
