/** Registers the WebGPU backend with the shared test helpers, once per test file. */
import { registerTestBackend } from "@lightning-ts/testing";
import { createWebGpuBackend } from "../src/index.js";

registerTestBackend({ name: "webgpu", create: () => createWebGpuBackend() });
