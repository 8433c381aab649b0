/**
 * The TNL fixture forward on webgpu (f32): the logits of the official PyTorch TNL on random weights
 * (@lightning-ts/testing: fixtures/tnl-tiny) reproduced by the model running on this backend.
 * Skipped through the runner with the reason printed where the backend cannot start; where it is
 * required (test/setup.ts: LIGHTNING_WEBGPU_REQUIRED=1) that is a failing test.
 */
import { describeBackends } from "@lightning-ts/testing";
import { fixtureLogitDiffs } from "@lightning-ts/testing/tnl-fixture";
import * as tnl from "@lightning-ts/tnl";
import { expect, it } from "vitest";
import "./setup.js";

await describeBackends("TNL fixture forward", (backend) => {
  it("reproduces the official logits for input_ids [2, 37] and the 300-token input", async () => {
    for (const [file, d] of Object.entries(await fixtureLogitDiffs(backend(), tnl))) {
      console.log(`[tnl-fixture] webgpu ${file} max |Δ| = ${d.toExponential(2)}`);
      expect(d).toBeLessThanOrEqual(1e-4);
    }
  });
});
