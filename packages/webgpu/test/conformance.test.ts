import { availableBackends, conformanceSuite } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import "./setup.js";

// Where the set-up installed a Vulkan driver (tools/setup.sh, as in CI), a skipped WebGPU suite
// would hide a broken backend: it must start.
if (process.env.VK_ICD_FILENAMES) {
  it("the webgpu backend starts on the installed Vulkan driver", async () => {
    const webgpu = (await availableBackends()).find((b) => b.name === "webgpu");
    expect(webgpu && "reason" in webgpu ? webgpu.reason : "started").toBe("started");
  });
}

// f16 and bf16 are storage types on every adapter (decoded in the shader), so all three run.
await conformanceSuite({ dtypes: ["f32", "f16", "bf16"] });
