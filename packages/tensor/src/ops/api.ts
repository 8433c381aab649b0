/**
 * Moved: the op functions now live in ../api/ops.ts (nothing in ops/ may import the engine or
 * tensors). This re-export stays only for test/rng.test.ts and test/safetensors.test.ts, which
 * still import it, and goes once they import ../src/api/ops.js; test/layers.test.ts allows it as
 * the one exception.
 */
export { fromStorage, randomNormal, randomUniform } from "../api/ops.js";
