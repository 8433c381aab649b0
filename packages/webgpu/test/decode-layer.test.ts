/**
 * `decodeLayer` on WebGPU, which runs its decomposition (packages/tensor/test/decode-layer-suite.ts):
 * bit for bit the five ops of the TNL decode step's layer on this backend, in place (the state
 * written by lightningStep's in-place kernel, other placed outputs copied over their targets) as
 * out of place, and within each dtype's bound of a float64 run on the host.
 */
import { describeBackends } from "@lightning-ts/testing";
import { decodeLayerSuite } from "../../tensor/test/decode-layer-suite.js";
import "./setup.js";

await describeBackends("decodeLayer", (backend) => decodeLayerSuite(backend, { exact: true }));
