/**
 * probeCopy (the large-buffer probe of the copy benchmark) copies bit for bit in both chunk orders,
 * at sizes that leave a partial chunk and, in the scattered order, a partial row of chunks; and it
 * names the argument it refuses.
 */
import * as T from "@lightning-ts/tensor";
import { afterAll, describe, expect, it } from "vitest";
import { createWebGpuBackend, probeCopy, type WebGpuBackend } from "../src/index.js";

let backend: WebGpuBackend | null = null;
let reason = "";
try {
  backend = await createWebGpuBackend();
} catch (err) {
  reason = (err as Error).message;
  if (process.env.LIGHTNING_WEBGPU_REQUIRED === "1" || (process.env.LIGHTNING_WEBGPU_REQUIRED !== "0" && process.env.VK_ICD_FILENAMES)) throw err;
  console.log(`[probe] WebGPU skipped: ${reason}`);
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
const storage = (t: T.Tensor) => t.handle.storage as GPUBuffer;

describe.skipIf(!backend)("probeCopy", () => {
  afterAll(() => backend?.dispose());

  it("copies bit for bit in linear and scattered order, odd sizes, over a destination that held other data", async () => {
    const be = backend!;
    let seed = 700;
    // 16-byte vectors: under one chunk (1,024), a partial last chunk, and more than 1,024 chunks
    // (the scattered order's rows) with a partial row.
    for (const vectors of [3, 1025, 1024 * 1031 + 7]) {
      const words = vectors * 4;
      const x = T.randomUniform([words], { seed: seed++, backend: be, low: -1, high: 1 });
      const want = bits(Float32Array.from(await x.data()));
      for (const order of ["linear", "scattered"] as const) {
        // The destination starts as other random values, one word longer than the copy: that word must stay.
        const y = T.randomUniform([words + 1], { seed: seed++, backend: be, low: -1, high: 1 });
        const before = bits(Float32Array.from(await y.data()));
        probeCopy(be, storage(x), storage(y), words * 4, order);
        const got = bits(Float32Array.from(await y.data()));
        expect(got.subarray(0, words).findIndex((w, i) => w !== want[i]), `${order}, ${vectors} vectors`).toBe(-1);
        expect(got[words], `${order}, ${vectors} vectors: the word after the copy`).toBe(before[words]);
        y.dispose();
      }
      x.dispose();
    }
    for (const key of ["probe_copy:linear", "probe_copy:scattered"]) expect(be.runtime.pipelineKeys()).toContain(key);
  });

  it("names the argument it refuses", () => {
    const be = backend!;
    const x = T.randomUniform([64], { seed: 1, backend: be });
    expect(() => probeCopy(be, storage(x), storage(x), 20, "linear")).toThrow(/argument 'bytes' expected a positive multiple of 16, got 20/);
    expect(() => probeCopy(be, storage(x), storage(x), 2 ** 20, "linear")).toThrow(/argument 'src' expected a buffer of at least 1048576 bytes/);
    expect(() => probeCopy(be, storage(x), storage(x), 256, "sideways" as "linear")).toThrow(/argument 'order' expected 'linear' or 'scattered', got 'sideways'/);
    x.dispose();
  });
});
