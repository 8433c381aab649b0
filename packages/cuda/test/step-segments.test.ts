/**
 * lightningStep with prompt segments on CUDA (the suite of packages/tensor/test/step-segments-suite.ts):
 * stepKernelSegments for each step kernel's configuration, and the scalar and vec4 kernels' token
 * loops, each against the same kernel stepping one token a call (bit for bit) and the float64
 * recurrence. LIGHTNING_CUDA_STEP is read at each call, so each block forces one kernel; unset, the
 * kernel is chosen by size. LIGHTNING_CUDA_SEGMENT_SPLIT=1 runs the same kinds in two launches
 * (stepKernelOwnRows, stepKernelSegmentRows). Bad offsets are reported through the device error flag
 * at the next read. Skipped, with the reason printed, where the CUDA backend cannot start.
 */
import { describeBackends } from "@lightning-ts/testing";
import { afterAll, beforeAll } from "vitest";
import { stepSegmentsSuite } from "../../tensor/test/step-segments-suite.js";
import "./setup.js";

/** Sets the environment variables for a block's tests and puts them back after. */
function withEnv(values: Record<string, string | undefined>): void {
  const saved: Record<string, string | undefined> = {};
  beforeAll(() => {
    for (const [name, value] of Object.entries(values)) {
      saved[name] = process.env[name];
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });
  afterAll(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });
}

// "pair" (two heads a block) steps segments as "stream": its one-token steps are not the oracle of that.
for (const kind of [undefined, "block", "narrow", "stream", "rows", "vec4", "scalar"]) {
  await describeBackends(`lightningStep with prompt segments${kind ? `, LIGHTNING_CUDA_STEP=${kind}` : ""}`, (backend) => {
    withEnv({ LIGHTNING_CUDA_STEP: kind, LIGHTNING_CUDA_SEGMENT_SPLIT: undefined });
    stepSegmentsSuite(backend);
  });
}

// The same step in two launches: the kind's one-token kernel over the rows without earlier tokens,
// then its segment kernel over the rows with them.
for (const kind of [undefined, "block", "narrow", "stream", "rows"]) {
  await describeBackends(`lightningStep with prompt segments in two launches${kind ? `, LIGHTNING_CUDA_STEP=${kind}` : ""}`, (backend) => {
    withEnv({ LIGHTNING_CUDA_STEP: kind, LIGHTNING_CUDA_SEGMENT_SPLIT: "1" });
    stepSegmentsSuite(backend);
  });
}
