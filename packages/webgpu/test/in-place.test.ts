/**
 * In-place primitives on WebGPU (the suite of packages/tensor/test/in-place-suite.ts): lightningStep
 * with inPlace (the state bound once, read-write) bit for bit against the two-buffer kernel,
 * copyInto through copyBufferToBuffer and through the byte-merging kernel for unaligned 16- and
 * 8-bit ranges, and leadingRows read by the kernels.
 */
import { describeBackends } from "@lightning-ts/testing";
import { copyIntoManySuite, copyIntoSuite, leadingRowsSuite, lightningStepInPlaceSuite } from "../../tensor/test/in-place-suite.js";
import "./setup.js";

await describeBackends("lightningStep in place", lightningStepInPlaceSuite);
await describeBackends("copyInto", copyIntoSuite);
await describeBackends("copyIntoMany", copyIntoManySuite);
await describeBackends("leadingRows", leadingRowsSuite);
