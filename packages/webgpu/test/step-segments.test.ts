/**
 * lightningStep with prompt segments on WebGPU (the suite of packages/tensor/test/step-segments-suite.ts):
 * the vectorised step's token loop (E a multiple of 4) and the plain step's (any E, and every E with
 * `plainKernels`), each against the same kernel stepping one token a call (bit for bit) and the
 * float64 recurrence. Bad offsets are reported through the error buffer at the next read.
 */
import { describeBackends } from "@lightning-ts/testing";
import { stepSegmentsSuite } from "../../tensor/test/step-segments-suite.js";
import { describePlainWebGpu } from "./plain-backend.js";
import "./setup.js";

await describeBackends("lightningStep with prompt segments", stepSegmentsSuite);

// The same with every kernel plain: the scalar step's token loop at every shape.
await describePlainWebGpu("lightningStep with prompt segments", stepSegmentsSuite);
