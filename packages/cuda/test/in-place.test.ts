/**
 * In-place primitives on CUDA (the suite of packages/tensor/test/in-place-suite.ts): lightningStep
 * with inPlace, whose kernels (stepKernel, stepKernelVec4 and the other step candidates) read each
 * state element before the same thread writes it, bit for bit against the same step out of place;
 * copyInto through cudaMemcpyAsync on the stream; leadingRows read by the kernels. Skipped, with
 * the reason printed, where the CUDA backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is
 * a failure.
 */
import { describeBackends } from "@lightning-ts/testing";
import { copyIntoSuite, leadingRowsSuite, lightningStepInPlaceSuite } from "../../tensor/test/in-place-suite.js";
import "./setup.js";

await describeBackends("lightningStep in place", lightningStepInPlaceSuite);
await describeBackends("copyInto", copyIntoSuite);
await describeBackends("leadingRows", leadingRowsSuite);
