/**
 * lightningStep with prompt segments on WebGPU (the suite of packages/tensor/test/step-segments-suite.ts):
 * the vectorised step's token loop (E a multiple of 4) and the plain step's (any E, and every E with
 * `plainKernels`), each against the same kernel stepping one token a call (bit for bit) and the
 * float64 recurrence. Bad offsets are reported through the error buffer at the next read.
 */
import { type Backend, getBackend, setBackend } from "@lightning-ts/tensor";
import { describeBackends } from "@lightning-ts/testing";
import { afterAll, beforeAll, describe } from "vitest";
import { stepSegmentsSuite } from "../../tensor/test/step-segments-suite.js";
import { createWebGpuBackend, type WebGpuBackend } from "../src/index.js";
import "./setup.js";

await describeBackends("lightningStep with prompt segments", stepSegmentsSuite);

// The same with every kernel plain: the scalar step's token loop at every shape.
let plain: WebGpuBackend | null = null;
let reason = "";
try {
  plain = await createWebGpuBackend({ plainKernels: true });
} catch (err) {
  reason = (err as Error).message;
}
(plain ? describe : describe.skip)(`lightningStep with prompt segments, plain kernels [webgpu${plain ? "" : ` skipped: ${reason}`}]`, () => {
  let previous: Backend | null = null;
  beforeAll(() => {
    previous = getBackend();
    setBackend(plain!);
  });
  afterAll(() => {
    if (previous) setBackend(previous);
    plain?.dispose();
  });
  stepSegmentsSuite(() => plain!);
});
