/**
 * Makes the WebGPU backend the one under test in this package (the CPU suite runs in
 * packages/testing). It must start under LIGHTNING_WEBGPU_REQUIRED=1 (`pnpm test:gpu`), and where
 * the set-up installed a Vulkan driver for it (VK_ICD_FILENAMES, as in CI): a skipped suite there
 * would hide a broken backend. LIGHTNING_WEBGPU_REQUIRED=0 lets it skip.
 */
import { registerTestBackend } from "@lightning-ts/testing";
import { createWebGpuBackend } from "../src/index.js";

function requiredBy(env: NodeJS.ProcessEnv): string | null {
  if (env.LIGHTNING_WEBGPU_REQUIRED === "1") return "LIGHTNING_WEBGPU_REQUIRED=1";
  if (env.LIGHTNING_WEBGPU_REQUIRED !== "0" && env.VK_ICD_FILENAMES) return `the Vulkan driver at VK_ICD_FILENAMES=${env.VK_ICD_FILENAMES}`;
  return null;
}

registerTestBackend({ name: "webgpu", create: () => createWebGpuBackend(), requiredBy: requiredBy(process.env) });
