/**
 * Model FLOP utilisation: 6 · parameters · tokens/s (a forward and a backward pass, attention not
 * counted, as docs/PERFORMANCE.md §2 counts it) over the device's peak rate. The peak is `--peak-tflops`
 * when given; otherwise, per backend:
 * - cuda: 790 TFLOP/s, the dense bf16 matmul rate measured on the H200 (docs/PERFORMANCE.md §2), the
 *   figure the project's MFU targets are stated against;
 * - cpu, webgpu: the f32 matmul rate of this machine, measured at start (a fraction of a second).
 */
import type { Backend } from "@lightning-ts/tensor";
import { matmul, randomNormal } from "@lightning-ts/tensor";

export const CUDA_PEAK_TFLOPS = 790;

export interface Peak {
  tflops: number;
  /** Where the figure came from, for the log and the summary. */
  source: string;
}

/** FLOPs of training on one token: 6 per parameter. */
export const mfu = (parameters: number, tokensPerSecond: number, peakTflops: number): number => (6 * parameters * tokensPerSecond) / (peakTflops * 1e12);

export async function peakTflops(backend: Backend, given: number | null): Promise<Peak> {
  if (given !== null) return { tflops: given, source: "--peak-tflops" };
  if (backend.name === "cuda") return { tflops: CUDA_PEAK_TFLOPS, source: "cuda default: bf16 matmul rate measured on the H200" };
  const n = backend.name === "cpu" ? 512 : 2048;
  const tflops = await measureMatmulTflops(backend, n);
  return { tflops, source: `${backend.name} default: f32 ${n}×${n} matmul rate measured at start` };
}

/** The rate of square f32 matmuls of size `n` on `backend`, in TFLOP/s, over about `seconds`. */
export async function measureMatmulTflops(backend: Backend, n: number, seconds = 0.2): Promise<number> {
  const a = randomNormal([n, n], { seed: 1, backend });
  const b = randomNormal([n, n], { seed: 2, backend });
  try {
    const once = async (reps: number) => {
      for (let i = 0; i < reps; i++) matmul(a, b).dispose();
      await backend.sync();
    };
    await once(1); // warm-up: pipelines, worker threads, buffer pools
    let reps = 0;
    let batch = 1;
    const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000) {
      await once(batch);
      reps += batch;
      batch *= 2;
    }
    return (2 * n ** 3 * reps) / ((performance.now() - t0) / 1000) / 1e12;
  } finally {
    a.dispose();
    b.dispose();
  }
}
