/**
 * The backend conformance suite (packages/testing) on the CUDA backend, beside the CPU. Where the
 * backend cannot start (no addon, no GPU) the CUDA half is skipped with the reason printed; under
 * `pnpm test:gpu` (LIGHTNING_CUDA_REQUIRED=1) that is a failure instead.
 */
import { conformanceSuite, registerTestBackend } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import { createCudaBackend, cudaUnavailableReason } from "../src/index.js";

registerTestBackend({ name: "cuda", create: () => createCudaBackend() });

if (process.env.LIGHTNING_CUDA_REQUIRED === "1") {
  it("the CUDA backend starts (LIGHTNING_CUDA_REQUIRED=1)", () => {
    expect(cudaUnavailableReason()).toBeNull();
  });
}

await conformanceSuite({ dtypes: ["f32", "f16", "bf16"] });
