/**
 * The backend conformance suite (packages/testing) on the CUDA backend. Where the backend cannot
 * start (no addon, no GPU) the suite is skipped with the reason printed; under `pnpm test:gpu`
 * (LIGHTNING_CUDA_REQUIRED=1) that is a failure instead.
 */
import { conformanceSuite } from "@lightning-ts/testing";
import "./setup.js";

await conformanceSuite({ dtypes: ["f32", "f16", "bf16"] });
