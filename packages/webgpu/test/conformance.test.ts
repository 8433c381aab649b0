/**
 * The backend conformance suite (packages/testing) on the WebGPU backend: Dawn on a Vulkan driver
 * in Node (lavapipe, the CPU driver tools/setup.sh unpacks, where there is no GPU).
 */
import { conformanceSuite } from "@lightning-ts/testing";
import "./setup.js";

// f16 and bf16 are storage types on every adapter (decoded in the shader), so all three run.
await conformanceSuite({ dtypes: ["f32", "f16", "bf16"] });
