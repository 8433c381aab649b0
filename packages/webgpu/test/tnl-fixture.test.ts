/**
 * The TNL fixture forward on WebGPU: the logits of the official PyTorch TNL on random weights
 * (packages/tnl/test/fixtures/tnl-tiny) reproduced by the model running on this backend. Skips with a
 * printed reason until @lightning-ts/tnl and its fixture exist, or when no WebGPU adapter is found.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { getBackend, setBackend, type Backend } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { createWebGpuBackend } from "../src/index.js";

const tnlTest = fileURLToPath(new URL("../../tnl/test/", import.meta.url));
let reason: string | null = null;
if (!existsSync(`${tnlTest}fixture.ts`) || !existsSync(fileURLToPath(new URL("../../tnl/src/index.ts", import.meta.url)))) {
  reason = "packages/tnl or its test fixture is not there yet";
}
let backend: Backend | null = null;
if (!reason) {
  try {
    backend = await createWebGpuBackend();
  } catch (err) {
    reason = (err as Error).message;
  }
}
if (reason) console.log(`[tnl-fixture] skipping the TNL fixture on webgpu: ${reason}`);

describe.skipIf(reason !== null)("TNL fixture forward on webgpu", () => {
  it("reproduces the official logits for input_ids [2, 37] and the 300-token input", async () => {
    const tnl = await import("@lightning-ts/tnl");
    const fx = (await import(/* @vite-ignore */ `${tnlTest}fixture.ts`)) as typeof import("../../tnl/test/fixture.js");
    const previous = getBackend();
    setBackend(backend!);
    try {
      const model = await tnl.loadCheckpoint(fx.FIXTURE_DIR);
      for (const [ids, file] of [[fx.fixture.input_ids, "logits.bin"], [fx.fixture.input_ids_300, "logits300.bin"]] as const) {
        const logits = tnl.forward(model.params, model.config, ids);
        const d = fx.maxAbsDiff(await logits.data(), fx.readF32(file));
        console.log(`[tnl-fixture] webgpu ${file} max |Δ| = ${d.toExponential(2)}`);
        expect(d).toBeLessThanOrEqual(1e-4);
        logits.dispose();
      }
      tnl.disposeParams(model.params);
    } finally {
      setBackend(previous);
    }
  });
});
