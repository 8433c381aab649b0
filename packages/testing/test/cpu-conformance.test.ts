import { availableBackends, conformanceSuite } from "../src/index.js";
import { expect, it } from "vitest";

// The CPU is the reference: the suite must run on it, never be skipped.
it("the CPU backend starts", async () => {
  const cpu = (await availableBackends()).find((b) => b.name === "cpu");
  expect(cpu && "backend" in cpu ? "started" : cpu).toBe("started");
});

// The CPU backend also offers f64, the dtype of gradient checks.
await conformanceSuite({ dtypes: ["f32", "f64", "f16", "bf16"] });
