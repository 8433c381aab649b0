/**
 * The page script of the browser end-to-end test: creates the WebGPU backend from navigator.gpu and
 * runs a subset of the conformance suite (through the vitest stand-in), leaving the results in
 * `window.__results` for the test to read.
 */
import { conformanceSuite, registerTestBackend } from "@lightning-ts/testing";
import { createWebGpuBackend } from "../src/index.js";
import { runCollected } from "../scripts/vitest-shim.js";

/** Cases small enough for a software GPU: one of each kernel family, in f32. */
const SUBSET = [/unary ops .*\(f32\)/, /binary ops .* \(f32\)/, /reductions .* \(f32\)/, /matmul .* \(f32\)/, /softmax, logSoftmax.*\(f32\)/, /lightningAttention .* \(f32\)/, /randomUniform/, /comparisons/, /movement .* \(bf16\)/];

export interface PageReport {
  device?: string;
  error?: string;
  results: { name: string; ok: boolean; ms: number; error?: string }[];
}
const page = globalThis as { __results?: PageReport };

async function main(): Promise<void> {
  try {
    const be = await createWebGpuBackend();
    registerTestBackend({ name: "webgpu", create: () => be });
    await conformanceSuite({ dtypes: ["f32", "bf16"] });
    const results = await runCollected((name) => name.includes("[webgpu]") && SUBSET.some((re) => re.test(name)));
    page.__results = { device: be.capabilities.device, results };
  } catch (err) {
    page.__results = { error: String((err as Error).stack ?? err), results: [] };
  }
}

void main();
