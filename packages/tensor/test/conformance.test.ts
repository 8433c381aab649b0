import { conformanceSuite } from "@lightning-ts/testing";

// The CPU backend also offers f64, the dtype of gradient checks.
await conformanceSuite({ dtypes: ["f32", "f64", "f16", "bf16"] });
