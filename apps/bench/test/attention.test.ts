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

  it("checks a sample of whole sequences when T is long: the last head of the last batch entry too", async () => {
    // Only the last sequence (b = B − 1, h = H − 1) is wrong, by a decay slip in its last head.
    // At B·T = 2·16,384 the budget covers two of the four sequences; they must include that one.
    unregister = registerAttentionImpl({
      ...chunked,
      name: "broken-last-head",
      forward: (x) => {
        const o = chunked.forward(x);
        const [B, H, t, E] = o.shape as [number, number, number, number];
        const values = Float32Array.from(o.dataSync());
        const last = B * H - 1;
        for (let i = last * t * E; i < (last + 1) * t * E; i++) values[i] *= 1.01;
        return T.tensor(values, o.shape);
      },
    });
    const results = await attentionSuite.run(
      { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 1 }, log: () => {} },
      { t: [16384], tokens: 32768, heads: 2, dim: 4, dtype: "f32", impls: ["chunked", "broken-last-head"], backward: false, chart: join(mkdtempSync(join(tmpdir(), "bench-")), "a.svg") },
    );
    expect(results.map((r) => [r.impl, r.ok])).toEqual([["chunked", true], ["broken-last-head", false]]);
    expect(results[1].rel_err).toBeGreaterThan(1e-4);
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
