/**
 * assertClose, seeded and the float64 oracles live in @lightning-ts/tensor/testing: this package
 * hands out those very functions, from its index and from the modules its conformance suite imports.
 */
import * as core from "@lightning-ts/tensor/testing";
import { expect, it } from "vitest";
import * as close from "../src/close.js";
import * as index from "../src/index.js";
import * as O from "../src/oracle.js";
import * as random from "../src/random.js";

it("the index re-exports the tensor core's test utilities unchanged", () => {
  expect(index.assertClose).toBe(core.assertClose);
  expect(index.closeness).toBe(core.closeness);
  expect(index.seeded).toBe(core.seeded);
  expect(index.oracle).toBe(core.oracle);
  expect(close.assertClose).toBe(core.assertClose);
  expect(close.closeness).toBe(core.closeness);
  expect(random.seeded).toBe(core.seeded);
});

it("./oracle.js holds every oracle of the tensor core, the same functions", () => {
  expect(Object.keys(O).sort()).toEqual(Object.keys(core.oracle).sort());
  for (const [name, fn] of Object.entries(core.oracle)) expect(O[name as keyof typeof O], name).toBe(fn);
});
