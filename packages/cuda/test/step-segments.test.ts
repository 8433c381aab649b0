/**
 * lightningStep with prompt segments on CUDA (the suite of packages/tensor/test/step-segments-suite.ts):
 * stepKernelSegments for each step kernel's configuration, and the scalar and vec4 kernels' token
 * loops, each against the same kernel stepping one token a call (bit for bit) and the float64
 * recurrence. LIGHTNING_CUDA_STEP is read at each call, so each block forces one kernel; unset, the
 * kernel is chosen by size. Bad offsets are reported through the device error flag at the next
 * read. Skipped, with the reason printed, where the CUDA backend cannot start.
 */
import { describeBackends } from "@lightning-ts/testing";
import { afterAll, beforeAll } from "vitest";
import { stepSegmentsSuite } from "../../tensor/test/step-segments-suite.js";
import "./setup.js";

// "pair" (two heads a block) steps segments as "stream": its one-token steps are not the oracle of that.
for (const kind of [undefined, "block", "narrow", "stream", "rows", "vec4", "scalar"]) {
  await describeBackends(`lightningStep with prompt segments${kind ? `, LIGHTNING_CUDA_STEP=${kind}` : ""}`, (backend) => {
    let saved: string | undefined;
    beforeAll(() => {
      saved = process.env.LIGHTNING_CUDA_STEP;
      if (kind) process.env.LIGHTNING_CUDA_STEP = kind;
      else delete process.env.LIGHTNING_CUDA_STEP;
    });
    afterAll(() => {
      if (saved === undefined) delete process.env.LIGHTNING_CUDA_STEP;
      else process.env.LIGHTNING_CUDA_STEP = saved;
    });
    stepSegmentsSuite(backend);
  });
}
