/**
 * Checkpoints on WebGPU load as f16 where the adapter has `shader-f16` (f32 otherwise), and the
 * TNL fixture's logits from f16 weights follow the f32 ones. Skipped through the runner with the
 * reason printed where the backend cannot start.
 *
 * Tolerance: relative RMS error ≤ 8e-3 over all logits. f16 rounds with unit roundoff
 * u = 2^-11 ≈ 4.9e-4; with weights and the activations between kernels stored in f16 (the kernels
 * compute in f32) each layer adds a few such roundings, and the CPU backend, storing the same way,
 * lands at about 2e-3 (4u) on these inputs. 8e-3 (16u) leaves room for the order of the GPU's sums
 * and stays below the 1e-2 that bf16 (u = 2^-8) is held to.
 */
import { cast, getBackend, setBackend } from "@lightning-ts/tensor";
import { describeBackends } from "@lightning-ts/testing";
import { FIXTURE_DIR, tnlFixture } from "@lightning-ts/testing/tnl-fixture";
import * as tnl from "@lightning-ts/tnl";
import { collectTensors } from "@lightning-ts/tensor";
import { expect, it } from "vitest";
import "./setup.js";

function relativeRms(got: Float32Array, want: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

await describeBackends("TNL checkpoint dtype on load", (backend) => {
  it("loads f16 where the adapter has shader-f16, and its logits follow f32 within 8e-3 relative RMS", async () => {
    const be = backend();
    const previous = getBackend();
    setBackend(be);
    try {
      const hasF16 = be.capabilities.features.includes("shader-f16");
      console.log(`[tnl-load-dtype] ${be.capabilities.device}: shader-f16 ${hasF16 ? "present" : "absent"}`);
      const byDefault = await tnl.loadCheckpoint(FIXTURE_DIR);
      expect(new Set(collectTensors(byDefault.params).map((t) => t.dtype))).toEqual(new Set([hasF16 ? "f16" : "f32"]));
      tnl.disposeParams(byDefault.params);

      const f32 = await tnl.loadCheckpoint(FIXTURE_DIR, { dtype: "f32" });
      const f16 = await tnl.loadCheckpoint(FIXTURE_DIR, { dtype: "f16" });
      const fixture = tnlFixture();
      for (const [name, ids] of [["input_ids", fixture.input_ids], ["input_ids_300", fixture.input_ids_300]] as const) {
        const want = tnl.forward(f32.params, f32.config, ids);
        const half = tnl.forward(f16.params, f16.config, ids);
        expect(half.dtype).toBe("f16");
        const got = cast(half, "f32");
        const err = relativeRms((await got.data()) as Float32Array, (await want.data()) as Float32Array);
        console.log(`[tnl-load-dtype] ${name}: f16 logits vs f32, relative RMS ${err.toExponential(2)}`);
        expect(err).toBeLessThanOrEqual(8e-3);
        // f16 must really have been used: a result equal to f32 would mean the weights were not rounded.
        expect(err).toBeGreaterThan(0);
        for (const t of [want, half, got]) t.dispose();
      }
      tnl.disposeParams(f32.params);
      tnl.disposeParams(f16.params);
    } finally {
      setBackend(previous);
    }
  });
});
