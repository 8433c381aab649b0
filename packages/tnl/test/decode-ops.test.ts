/**
 * The decode step on the fused ops (decodeLayer, fusedLinear): what a BatchDecoder step
 * dispatches (1 op per layer, counted through the engine's op observer, which sees a composite op
 * and not the ops of its decomposition; reshapes are handles, not kernels), and, for every
 * activation a config may name, with LRPE on every layer and in
 * f32 and f64, prefill and then steps equal to one forward over the whole sequence, which takes
 * the unfused (T > 1) path.
 */
import { addOpObserver, scope } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { BatchDecoder, disposeParams, disposeState, forward, initParams, makeConfig, prefill, step, type TnlActivation } from "../src/index.js";
import { maxAbsDiff } from "./fixture.js";

/** Ops dispatched by `fn` by name (reshapes left out: they launch nothing), and their total. */
function countOps(fn: () => unknown): { total: number; ops: Record<string, number>; inPlace: Record<string, number> } {
  const ops: Record<string, number> = {};
  const inPlace: Record<string, number> = {};
  const stop = addOpObserver((r) => {
    if (r.op !== "reshape") ops[r.op] = (ops[r.op] ?? 0) + 1;
    if (r.inPlace) inPlace[r.op] = (inPlace[r.op] ?? 0) + 1;
  });
  try {
    scope(() => void fn());
  } finally {
    stop();
  }
  return { total: Object.values(ops).reduce((a, b) => a + b, 0), ops, inPlace };
}

describe("the fused decode step", () => {
  it("dispatches 1 op per layer in a BatchDecoder step (the 385M's 24 layers and 8 heads, LRPE on layer 0, at small widths)", () => {
    const c = makeConfig({ vocabSize: 97, dModel: 48, numLayers: 24, numHeads: 8, gluDim: 88 });
    const params = initParams(c, { seed: 3 });
    const decoder = new BatchDecoder(params, c, { capacity: 4 });
    for (const prompt of [[1, 2], [3], [4, 5, 6]]) {
      const r = prefill(params, c, [prompt], { logits: "last" });
      r.logits.dispose();
      decoder.add(r.state);
      disposeState(r.state);
    }
    const { total, ops, inPlace } = countOps(() => decoder.step([7, 8, 9]));
    const L = c.numLayers;
    // Per layer: decodeLayer (qkvuProjection, lightningStep and three fusedLinear in its
    // decomposition), the new state written over the decoder's. Per step: the embedding, its scale
    // (fill, mul), the normed output head and the greedy argmax.
    expect(ops).toEqual({
      embedding: 1,
      fill: 1,
      mul: 1,
      decodeLayer: L,
      fusedLinear: 1,
      argmax: 1,
    });
    expect(total).toBe(L + 5);
    expect(inPlace).toEqual({ decodeLayer: L });
    decoder.dispose();
    disposeParams(params);
  });

  const ACTIVATIONS: TnlActivation[] = ["silu", "swish", "relu", "1+elu", "none"];
  for (const activation of ACTIVATIONS) {
    for (const dtype of ["f32", "f64"] as const) {
      it(`prefill then steps equal one forward (${activation}, LRPE on every layer, ${dtype})`, async () => {
        const c = makeConfig({ vocabSize: 61, dModel: 30, numLayers: 3, numHeads: 3, gluDim: 46, activation, lrpeLayers: [0, 1, 2] });
        const params = initParams(c, { seed: 5, dtype });
        const seq = [[3, 17, 4, 40, 9, 1, 33], [60, 2, 2, 8, 15, 7, 20]];
        const n = 3;
        const whole = forward(params, c, seq); // [2, 7, V]
        const all = Float64Array.from(await whole.data());
        const V = c.vocabSize;
        const T = seq[0].length;
        let { state } = prefill(params, c, seq.map((r) => r.slice(0, n)), { logits: "last" });
        for (let t = n; t < T; t++) {
          const r = step(params, c, state, seq.map((row) => row[t]));
          const got = Float64Array.from(await r.logits.data());
          for (let b = 0; b < 2; b++) {
            const want = all.subarray((b * T + t) * V, (b * T + t + 1) * V);
            expect(maxAbsDiff(got.subarray(b * V, (b + 1) * V), want), `row ${b}, position ${t}`).toBeLessThan(dtype === "f64" ? 1e-12 : 2e-5);
          }
          r.logits.dispose();
          disposeState(state);
          state = r.state;
        }
        disposeState(state);
        whole.dispose();
        disposeParams(params);
      });
    }
  }
});
