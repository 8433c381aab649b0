import { conformanceSuite } from "@lightning-ts/testing";
import "./setup.js";

// f16 and bf16 are storage types on every adapter (decoded in the shader), so all three run.
await conformanceSuite({ dtypes: ["f32", "f16", "bf16"] });
