import { disposeState, loadCheckpoint, prefill, step } from "@lightning-ts/tnl";
import { describe, expect, it } from "vitest";
import { batchStep } from "../src/batch-step.js";
import { writeTinyModel } from "./tiny-model.js";

describe("batchStep", () => {
  it("equals the package's step for each row, rows at different positions", async () => {
    const tiny = await writeTinyModel();
    const model = await loadCheckpoint(tiny.dir);
    const prompts = [[5, 9, 14], [7], [3, 3, 8, 20, 31, 2]];
    const states = prompts.map((p) => {
      const r = prefill(model.params, model.config, [p], { logits: "last" });
      r.logits.dispose();
      return r.state;
    });
    const tokens = [11, 12, 13];
    const batched = batchStep(model, states, tokens);
    const all = (await batched.logits.data()) as Float32Array;
    const V = model.config.vocabSize;
    for (let b = 0; b < prompts.length; b++) {
      const single = step(model.params, model.config, states[b]!, [tokens[b]!]);
      const want = (await single.logits.data()) as Float32Array;
      const got = all.slice(b * V, (b + 1) * V);
      let worst = 0;
      for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      expect(worst).toBeLessThan(1e-5);
      expect(batched.states[b]!.position).toBe(single.state.position);
      single.logits.dispose();
      disposeState(single.state);
    }
    batched.logits.dispose();
    batched.states.forEach(disposeState);
    states.forEach(disposeState);
  });
});
