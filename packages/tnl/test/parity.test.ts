import { findLeaks } from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { disposeParams, forward, hiddenStates, loadCheckpoint, type TnlModel } from "../src/index.js";
import { FIXTURE_DIR, fixture, maxAbsDiff, readF32 } from "./fixture.js";

let model: TnlModel;
beforeAll(async () => {
  model = await loadCheckpoint(FIXTURE_DIR);
});
afterAll(() => disposeParams(model.params));

describe("parity with the official implementation (tnl-tiny fixture)", () => {
  it("logits for input_ids [2, 37]", async () => {
    const logits = forward(model.params, model.config, fixture.input_ids);
    expect(logits.shape).toEqual([2, 37, 256]);
    const d = maxAbsDiff(await logits.data(), readF32("logits.bin"));
    console.log(`logits.bin max |Δ| = ${d.toExponential(2)}`);
    expect(d).toBeLessThanOrEqual(1e-4);
    logits.dispose();
  });

  it("logits for the 300-token input (crosses the 256-token block)", async () => {
    const logits = forward(model.params, model.config, fixture.input_ids_300);
    const d = maxAbsDiff(await logits.data(), readF32("logits300.bin"));
    console.log(`logits300.bin max |Δ| = ${d.toExponential(2)}`);
    expect(d).toBeLessThanOrEqual(1e-4);
    logits.dispose();
  });

  it("hidden states", async () => {
    const hs = hiddenStates(model.params, model.config, fixture.input_ids);
    expect(hs.length).toBe(3);
    const want = readF32("hidden_states.bin");
    const n = 2 * 37 * 64;
    for (let i = 0; i < 3; i++) {
      const d = maxAbsDiff(await hs[i].data(), want.subarray(i * n, (i + 1) * n));
      console.log(`hidden_states.bin[${i}] max |Δ| = ${d.toExponential(2)}`);
      expect(d).toBeLessThanOrEqual(1e-4);
    }
    hs.forEach((t) => t.dispose());
  });

  it("forward leaves no tensors behind", async () => {
    expect(await findLeaks(() => forward(model.params, model.config, fixture.input_ids))).toEqual([]);
  });
});
