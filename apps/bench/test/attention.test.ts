import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as T from "@lightning-ts/tensor";
import { afterEach, describe, expect, it } from "vitest";
import { attentionImpls, registerAttentionImpl } from "../src/attention/impls.js";
import { attentionSuite } from "../src/suites/attention.js";

const chunked = attentionImpls().find((i) => i.name === "chunked")!;
let unregister: (() => void) | null = null;
afterEach(() => unregister?.());

async function runSuite(impls: string[], chart: string) {
  return attentionSuite.run(
    { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 1 }, log: () => {} },
    { t: [16, 32], tokens: 64, heads: 2, dim: 8, dtype: "f32", impls, backward: true, chart },
  );
}

describe("attention suite", () => {
  it("times correct kernels and writes the chart", async () => {
    const chart = join(mkdtempSync(join(tmpdir(), "bench-")), "attention.svg");
    const results = await runSuite(["chunked", "recurrent", "quadratic", "softmax"], chart);
    expect(results).toHaveLength(8);
    for (const r of results) {
      expect(r.ok).toBe(true);
      expect(r.fwd_ms).toBeGreaterThan(0);
      expect(r.fwdbwd_ms).toBeGreaterThan(0);
      expect(r.rel_err).toBeLessThan(1e-5);
    }
    expect(readFileSync(chart, "utf8")).toMatch(/^<svg[\s\S]*chunked \(cpu\)[\s\S]*<\/svg>$/);
  });

  it("refuses to time a kernel that fails the float64 check", async () => {
    // A classic tail bug: the last token of every sequence gets no output. Right everywhere else.
    unregister = registerAttentionImpl({
      ...chunked,
      name: "broken",
      forward: (x) => {
        const o = chunked.forward(x);
        const [B, H, t, E] = o.shape as [number, number, number, number];
        const values = Float32Array.from(o.dataSync());
        for (let bh = 0; bh < B * H; bh++) values.fill(0, (bh * t + t - 1) * E, (bh * t + t) * E);
        return T.tensor(values, o.shape);
      },
    });
    const chart = join(mkdtempSync(join(tmpdir(), "bench-")), "attention.svg");
    const results = await runSuite(["broken"], chart);
    expect(results).toHaveLength(2);
    for (const r of results) {
      expect(r.ok).toBe(false);
      expect(r.rel_err).toBeGreaterThan(1e-4);
      expect(r.fwd_ms).toBeNull();
      expect(r.fwdbwd_ms).toBeNull();
    }
  });

  it("also refuses a kernel whose gradients are wrong", async () => {
    unregister = registerAttentionImpl({
      ...chunked,
      name: "broken-backward",
      forwardBackward: (x, dO) => {
        const [dq, dk, dv] = chunked.forwardBackward(x, dO);
        return [dq, dk, T.mul(dv, 1.05)];
      },
    });
    const results = await runSuite(["broken-backward"], join(mkdtempSync(join(tmpdir(), "bench-")), "a.svg"));
    expect(results.every((r) => !r.ok && r.fwd_ms === null)).toBe(true);
  });
});
