/**
 * The TNL fixture forward on CUDA (f32): the logits of the official PyTorch TNL on random weights
 * (@lightning-ts/testing: fixtures/tnl-tiny) reproduced by the model running on the GPU. Skipped with
 * the reason printed where the backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that fails.
 */
import { describe, expect, it } from "vitest";
import { fixtureLogitDiffs } from "@lightning-ts/testing/tnl-fixture";
import * as tnl from "@lightning-ts/tnl";
import { createCudaBackend, cudaUnavailableReason } from "../src/index.js";

const reason = cudaUnavailableReason();
if (reason) console.log(`[tnl-fixture] skipping the TNL fixture on cuda: ${reason}`);
if (reason && process.env.LIGHTNING_CUDA_REQUIRED === "1") throw new Error(`LIGHTNING_CUDA_REQUIRED=1 but CUDA cannot start: ${reason}`);

describe.skipIf(reason !== null)("TNL fixture forward on cuda", () => {
  it("reproduces the official logits for input_ids [2, 37] and the 300-token input", async () => {
    const backend = createCudaBackend();
    for (const [file, d] of Object.entries(await fixtureLogitDiffs(backend, tnl))) {
      console.log(`[tnl-fixture] cuda ${file} max |Δ| = ${d.toExponential(2)}`);
      expect(d).toBeLessThanOrEqual(1e-4);
    }
    backend.dispose();
  });
});
