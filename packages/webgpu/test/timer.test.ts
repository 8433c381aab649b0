/**
 * The WebGPU kernel timer (timestamp queries at compute-pass boundaries): marks around kernels give
 * device time after a sync, never before; passes in order give non-negative, additive times, also
 * past the 2,048 passes of one query set; `profileOps` runs on WebGPU with it. Sizes are seeded and
 * odd; lavapipe (the CPU Vulkan driver of CI) has `timestamp-query` too.
 */
import * as T from "@lightning-ts/tensor";
import { formatProfile, profileOps } from "@lightning-ts/tensor";
import { afterAll, describe, expect, it } from "vitest";
import { createWebGpuBackend, type WebGpuBackend } from "../src/index.js";

let gpu: WebGpuBackend | null = null;
let reason = "";
try {
  gpu = await createWebGpuBackend();
  if (!gpu.capabilities.features.includes("timestamp-query")) {
    reason = `the adapter (${gpu.capabilities.device}) has no timestamp-query`;
    gpu.dispose();
    gpu = null;
  }
} catch (err) {
  reason = (err as Error).message;
  if (process.env.LIGHTNING_WEBGPU_REQUIRED === "1" || (process.env.LIGHTNING_WEBGPU_REQUIRED !== "0" && process.env.VK_ICD_FILENAMES)) throw err;
}
if (!gpu) console.log(`[timer] WebGPU timer tests skipped: ${reason}`);

/** mulberry32: seeded values in [-1, 1), never all zero. */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  });
}

const suite = gpu ? describe : describe.skip;

suite(`WebGPU kernel timer${gpu ? "" : ` [skipped: ${reason}]`}`, () => {
  const be = gpu!;
  const timer = () => be.timer!;
  const matrix = (rows: number, cols: number, seed: number) => T.tensor(values(rows * cols, seed), [rows, cols], { backend: be });
  afterAll(() => gpu?.dispose());

  it("times a matmul in device time, readable only after a sync", async () => {
    const a = matrix(97, 301, 1);
    const b = matrix(301, 253, 2);
    const t0 = performance.now();
    const start = timer().mark();
    const c = T.matmul(a, b);
    const end = timer().mark();
    expect(() => timer().elapsedMs(start, end)).toThrow(/not read back yet; await backend.sync\(\)/);
    await be.sync();
    const wall = performance.now() - t0;
    const ms = timer().elapsedMs(start, end);
    expect(ms).toBeGreaterThan(0);
    // The kernel ran inside the host's submit-and-wait.
    expect(ms).toBeLessThanOrEqual(wall);
    timer().release!([start, end]);
    expect(() => timer().elapsedMs(start, end)).toThrow(/mark \d+ is not a live mark/);
    for (const t of [a, b, c]) t.dispose();
  });

  it("gives 0 between marks with no kernel, and more time to more work", async () => {
    const small = [matrix(33, 35, 3), matrix(35, 31, 4)];
    const big = [matrix(263, 271, 5), matrix(271, 257, 6)];
    // Warm the pipelines, so neither timing includes a compile.
    T.matmul(small[0], small[1]).dispose();
    await be.sync();
    const m = [timer().mark(), timer().mark()];
    const s = T.matmul(small[0], small[1]);
    m.push(timer().mark());
    const g = T.matmul(big[0], big[1]);
    m.push(timer().mark());
    await be.sync();
    expect(timer().elapsedMs(m[0], m[1])).toBe(0);
    const smallMs = timer().elapsedMs(m[1], m[2]);
    const bigMs = timer().elapsedMs(m[2], m[3]);
    // 90 times the multiply-adds.
    expect(bigMs).toBeGreaterThan(smallMs);
    // A span covers the passes inside it and the gap between them.
    expect(timer().elapsedMs(m[1], m[3])).toBeGreaterThanOrEqual(smallMs + bigMs);
    timer().release!(m);
    for (const t of [...small, ...big, s, g]) t.dispose();
  });

  it("keeps passes in order past one query set (2,100 timed kernels), and again after going idle", async () => {
    const x = T.tensor(values(1027, 7), [1027], { backend: be });
    for (let round = 0; round < 2; round++) {
      const marks = [timer().mark()];
      const outs: T.Tensor[] = [];
      for (let i = 0; i < 2100; i++) {
        outs.push(T.add(x, x));
        marks.push(timer().mark());
        // Now and then a sync in between: read backs then come in pieces.
        if (i === 700 || i === 2049) await be.sync();
      }
      await be.sync();
      let sum = 0;
      for (let i = 0; i + 1 < marks.length; i++) {
        const ms = timer().elapsedMs(marks[i], marks[i + 1]);
        expect(ms).toBeGreaterThanOrEqual(0);
        sum += ms;
        // Two neighbouring kernels: the span from the first's start to the second's end holds both.
        if (i + 2 < marks.length) expect(timer().elapsedMs(marks[i], marks[i + 2]) + 1e-9).toBeGreaterThanOrEqual(ms + timer().elapsedMs(marks[i + 1], marks[i + 2]));
      }
      expect(timer().elapsedMs(marks[0], marks[marks.length - 1]) + 1e-9).toBeGreaterThanOrEqual(sum);
      expect(sum).toBeGreaterThan(0);
      timer().release!(marks);
      for (const t of outs) t.dispose();
    }
    // The values still right with the passes split by marks.
    const y = T.add(x, x);
    const want = values(1027, 7);
    expect(Array.from(await y.data())).toEqual(Array.from(want, (v) => Math.fround(v + v)));
    y.dispose();
    x.dispose();
  });

  it("profileDispatches times each kernel of an op: the three of the Lightning forward by segment walks", async () => {
    const [B, H, t, D] = [2, 3, 197, 12];
    const [q, k, v] = [1, 2, 3].map((seed) => T.tensor(values(B * H * t * D, 10 + seed), [B, H, t, D], { backend: be }));
    const slopes = T.tensor(Float32Array.from(T.tnlSlopes(H, 0, 2)), [H], { backend: be });
    const t0 = performance.now();
    const rows = await be.profileDispatches(() => T.scope(() => void T.lightningAttention(q, k, v, slopes)));
    const wall = performance.now() - t0;
    expect(rows).not.toBeNull();
    const keys = rows!.map((r) => r.key).sort();
    // The default forward, `walk-rows2`, at D = 12: its walk (one stage ahead below D = 97) and
    // totals (two ahead, a 64 × 64 tile) kernels carry their variant in the key.
    expect(keys).toEqual(["lightning_walk:no_touch:rows", "lightning_walk_scan", "lightning_walk_totals64:no_touch:ahead2"]);
    for (const r of rows!) {
      expect(r.calls).toBe(1);
      expect(r.ms).toBeGreaterThan(0);
    }
    expect(rows!.reduce((a, r) => a + r.ms, 0)).toBeLessThanOrEqual(wall);
    // Largest first, and dispatches share passes again afterwards (one pass between two marks).
    expect(rows!.map((r) => r.ms)).toEqual([...rows!.map((r) => r.ms)].sort((x, y) => y - x));
    const a = timer().mark();
    T.scope(() => void T.lightningAttention(q, k, v, slopes));
    const b = timer().mark();
    await be.sync();
    expect(be.runtime.timer!.passTimes(a, b).map((p) => p.keys)).toEqual([["lightning_walk_totals64:no_touch:ahead2", "lightning_walk_scan", "lightning_walk:no_touch:rows"]]);
    timer().release!([a, b]);
    // A throwing fn leaves the passes unsplit.
    await expect(be.profileDispatches(() => void T.reshape(q, [7]))).rejects.toThrow(/reshape/);
    expect(be.runtime.splitPasses).toBe(false);
    for (const x of [q, k, v, slopes]) x.dispose();
  });

  it("lets profileOps time WebGPU kernels per op", async () => {
    const a = matrix(129, 67, 8);
    const b = matrix(67, 95, 9);
    const { result, profile } = await profileOps(be, () => T.scope(() => T.add(T.matmul(a, b), 1)));
    const ops = profile.rows.map((r) => r.op);
    expect(ops).toContain("matmul");
    expect(profile.rows.find((r) => r.op === "matmul")!.ms).toBeGreaterThan(0);
    expect(profile.totalMs).toBeGreaterThan(0);
    expect(profile.totalMs).toBeLessThanOrEqual(profile.wallMs);
    expect(formatProfile(profile)).toContain("on webgpu");
    result.dispose();
    for (const t of [a, b]) t.dispose();
  });
});
