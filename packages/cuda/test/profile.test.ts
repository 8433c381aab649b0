/**
 * profileOps on the CUDA backend: GPU time per op from CUDA events, the kernel table restored, and
 * the events pooled (a second profile of the same work makes no new ones). Skipped, with the
 * reason printed, where the CUDA backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import * as T from "@lightning-ts/tensor";
import type { Backend } from "@lightning-ts/tensor";
import { describeBackends } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import type { CudaBackend } from "../src/index.js";
import "./setup.js";

await describeBackends("profileOps with CUDA events", (gpu: () => Backend) => {
  it("times each kernel on the device, restores the table and reuses its events", async () => {
    const cuda = gpu() as CudaBackend;
    const a = T.randomNormal([1024, 1024], { seed: 1, backend: cuda, dtype: "bf16" });
    const work = () =>
      T.scope(() => {
        let x = a;
        for (let i = 0; i < 4; i++) x = T.add(T.matmul(x, a), a); // 4 matmul, 4 add
        return T.sum(T.cast(x, "f32")).dataSync()[0]; // cast, sum
      });
    const table = { ...(cuda.kernels as Record<string, unknown>) };

    const before = cuda.timer.created;
    const first = await T.profileOps(cuda, work);
    expect(Number.isFinite(first.result)).toBe(true);
    const calls = Object.fromEntries(first.profile.rows.map((r) => [r.op, r.calls]));
    expect(calls).toEqual({ matmul: 4, add: 4, cast: 1, sum: 1 });
    // A 1024³ bf16 matmul is 2.1 GFLOP: well above a microsecond, well below a second on any GPU.
    const matmul = first.profile.rows.find((r) => r.op === "matmul")!;
    expect(matmul.ms / matmul.calls).toBeGreaterThan(1e-3);
    expect(matmul.ms / matmul.calls).toBeLessThan(1000);
    expect(first.profile.rows[0].ms).toBeGreaterThanOrEqual(first.profile.rows.at(-1)!.ms);
    for (const [op, k] of Object.entries(cuda.kernels as Record<string, unknown>)) expect(k, op).toBe(table[op]);
    console.log(T.formatProfile(first.profile));

    // Two events per kernel call, made at most once: the second profile takes them from the pool.
    const made = cuda.timer.created;
    expect(made - before).toBeLessThanOrEqual(2 * 10);
    await T.profileOps(cuda, work);
    expect(cuda.timer.created).toBe(made);
    a.dispose();
  });

  it("resetPeakMemory starts a new peak at the live bytes", async () => {
    const cuda = gpu() as CudaBackend;
    const big = T.zeros([64, 1024, 1024], { backend: cuda });
    big.dispose();
    await cuda.sync();
    expect(cuda.memory().peakBytes).toBeGreaterThanOrEqual(256 * 2 ** 20);
    cuda.resetPeakMemory();
    expect(cuda.memory().peakBytes).toBe(cuda.memory().liveBytes);
  });
});
