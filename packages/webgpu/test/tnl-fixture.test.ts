/**
 * The TNL fixture forward on WebGPU: the logits of the official PyTorch TNL on random weights
 * (@lightning-ts/testing: fixtures/tnl-tiny) reproduced by the model running on this backend. Skips with
 * a printed reason when no WebGPU adapter is found.
 */
import { type Backend } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { fixtureLogitDiffs } from "@lightning-ts/testing/tnl-fixture";
import * as tnl from "@lightning-ts/tnl";
import { createWebGpuBackend } from "../src/index.js";

let backend: Backend | null = null;
let reason: string | null = null;
try {
  backend = await createWebGpuBackend();
} catch (err) {
  reason = (err as Error).message;
}
if (reason) console.log(`[tnl-fixture] skipping the TNL fixture on webgpu: ${reason}`);

describe.skipIf(reason !== null)("TNL fixture forward on webgpu", () => {
  it("reproduces the official logits for input_ids [2, 37] and the 300-token input", async () => {
    for (const [file, d] of Object.entries(await fixtureLogitDiffs(backend!, tnl))) {
      console.log(`[tnl-fixture] webgpu ${file} max |Δ| = ${d.toExponential(2)}`);
      expect(d).toBeLessThanOrEqual(1e-4);
    }
  });
});
