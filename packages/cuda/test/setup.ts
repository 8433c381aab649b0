/**
 * Makes the CUDA backend the one under test in this package (the CPU suite runs in
 * packages/testing). Under LIGHTNING_CUDA_REQUIRED=1 (`pnpm test:gpu`) it must start.
 */
import { registerTestBackend } from "@lightning-ts/testing";
import { createCudaBackend } from "../src/index.js";

registerTestBackend({
  name: "cuda",
  create: () => createCudaBackend(),
  requiredBy: process.env.LIGHTNING_CUDA_REQUIRED === "1" ? "LIGHTNING_CUDA_REQUIRED=1" : null,
});
