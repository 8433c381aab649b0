/**
 * assertClose, seeded and the float64 oracles live in @lightning-ts/tensor/testing: this package
 * hands out those very functions from its index.
 */
import * as core from "@lightning-ts/tensor/testing";
import { expect, it } from "vitest";
import * as index from "../src/index.js";

it("the index re-exports the tensor core's test utilities unchanged", () => {
  expect(index.assertClose).toBe(core.assertClose);
  expect(index.closeness).toBe(core.closeness);
  expect(index.seeded).toBe(core.seeded);
  expect(index.oracle).toBe(core.oracle);
});
