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

  it("names a bad WebGPU probe option before it measures anything", async () => {
    await expect(copySuite.run(context, { mib: [1], webgpuOrder: ["sideways"] })).rejects.toThrow(/--webgpu-order: expected some of linear, scattered, got 'sideways'/);
    await expect(copySuite.run(context, { mib: [1], webgpuOrder: ["linear"], webgpuBuffers: 0 })).rejects.toThrow(/--webgpu-buffers: expected a positive integer, got 0/);
  });
});
