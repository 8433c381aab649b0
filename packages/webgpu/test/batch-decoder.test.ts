/**
 * BatchDecoder on WebGPU with extra rows (prompt segments in the step; no graphs here): rows that
 * read several tokens in one step give the logits of a prefill of the same tokens on the CPU,
 * within f32's rounding of the two backends (the checks of tnl/test/extra-rows-check.ts).
 */
import { createCpuBackend } from "@lightning-ts/tensor";
import { describeBackends } from "@lightning-ts/testing";
import { FIXTURE_DIR } from "@lightning-ts/testing/tnl-fixture";
import { BatchDecoder, disposeParams, loadCheckpoint } from "@lightning-ts/tnl";
import { expect, it } from "vitest";
import { extraRowsAgainstPrefill } from "../../tnl/test/extra-rows-check.js";
import "./setup.js";

await describeBackends("BatchDecoder with extra rows", (gpu) => {
  it("several tokens a row in one step: the logits of a CPU prefill of the same tokens", async () => {
    const model = await loadCheckpoint(FIXTURE_DIR, { dtype: "f32", backend: gpu() });
    const host = await loadCheckpoint(FIXTURE_DIR, { dtype: "f32", backend: createCpuBackend() });
    const decoder = new BatchDecoder(model.params, model.config, { capacity: 4, extraRows: 12 });
    expect(decoder.graphs).toBe(false);
    await extraRowsAgainstPrefill([decoder], host, gpu(), { atol: 1e-4, rtol: 3e-5 });
    decoder.dispose();
    disposeParams(host.params);
    disposeParams(model.params);
  });
});
