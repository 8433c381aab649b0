/**
 * A describe block on a WebGPU backend whose every kernel is plain (`plainKernels`), set as the
 * default backend while it runs and disposed after; skipped, with the reason in its title, where
 * no such backend can start.
 */
import { type Backend, getBackend, setBackend } from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe } from "vitest";
import { createWebGpuBackend, type WebGpuBackend } from "../src/index.js";

export async function describePlainWebGpu(title: string, suite: (backend: () => Backend) => void): Promise<void> {
  let plain: WebGpuBackend | null = null;
  let reason = "";
  try {
    plain = await createWebGpuBackend({ plainKernels: true });
  } catch (err) {
    reason = (err as Error).message;
  }
  (plain ? describe : describe.skip)(`${title}, plain kernels [webgpu${plain ? "" : ` skipped: ${reason}`}]`, () => {
    let previous: Backend | null = null;
    beforeAll(() => {
      previous = getBackend();
      setBackend(plain!);
    });
    afterAll(() => {
      if (previous) setBackend(previous);
      plain?.dispose();
    });
    suite(() => plain!);
  });
}
