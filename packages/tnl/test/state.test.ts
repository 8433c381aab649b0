import { findLeaks, narrow, type Tensor } from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cloneState,
  deserializeState,
  disposeParams,
  disposeState,
  forward,
  initState,
  loadCheckpoint,
  prefill,
  selectRows,
  serializeState,
  stateDistance,
  statesEqual,
  step,
  stepRows,
  type TnlModel,
} from "../src/index.js";
import { FIXTURE_DIR, fixture, maxAbsDiff } from "./fixture.js";

let model: TnlModel;
beforeAll(async () => {
  model = await loadCheckpoint(FIXTURE_DIR);
});
afterAll(() => disposeParams(model.params));

const ids = fixture.input_ids; // [2, 37]
const BLOCK = 8; // small, so that every split below crosses block boundaries cheaply
const cols = (from: number, to: number) => ids.map((r) => r.slice(from, to));

/** Logits of positions [from, to) of a [B, T, V] tensor, as one flat array. */
async function positions(logits: Tensor, from: number, to: number): Promise<Float32Array> {
  const x = narrow(logits, 1, from, to - from);
  const d = (await x.data()) as Float32Array;
  x.dispose();
  return d;
}

describe("stepRows: independent sequences at different positions in one batch", () => {
  it("equals step for each row alone, with LRPE, and leaves nothing alive", async () => {
    const prompts = [ids[0].slice(0, 3), ids[1].slice(0, 1), ids[1].slice(5, 17)];
    const states = prompts.map((p) => {
      const r = prefill(model.params, model.config, [p], { logits: "last" });
      r.logits.dispose();
      return r.state;
    });
    const tokens = [11, 12, 13];
    const leaks = await findLeaks(async () => {
      const batched = stepRows(model.params, model.config, states, tokens);
      const all = (await batched.logits.data()) as Float32Array;
      const V = model.config.vocabSize;
      for (let b = 0; b < prompts.length; b++) {
        const single = step(model.params, model.config, states[b], [tokens[b]]);
        expect(maxAbsDiff(all.slice(b * V, (b + 1) * V), (await single.logits.data()) as Float32Array)).toBeLessThan(1e-5);
        expect(batched.states[b].position).toBe(prompts[b].length + 1);
        expect(await statesEqual(batched.states[b], single.state, { atol: 1e-6 })).toBe(true);
        single.logits.dispose();
        disposeState(single.state);
      }
      batched.logits.dispose();
      batched.states.forEach(disposeState);
    });
    expect(leaks).toEqual([]);
    states.forEach(disposeState);
  });

  it("rejects a mismatch between states and tokens", () => {
    const s = initState(model.config, 1);
    expect(() => stepRows(model.params, model.config, [s], [1, 2])).toThrow(/stepRows: 1 states for 2 tokens/);
    disposeState(s);
  });
});

describe("recurrent state", () => {
  it("prefill n then m steps equals one forward over n + m (LRPE layer included)", async () => {
    const n = 13;
    const m = 11; // the prefill ends inside the second 8-token block; the steps run across positions 16 and 24
    const full = forward(model.params, model.config, cols(0, n + m), { blockSize: BLOCK });
    const { logits, state: prefilled } = prefill(model.params, model.config, cols(0, n), { blockSize: BLOCK });
    let state = prefilled;
    let worst = maxAbsDiff(await logits.data(), await positions(full, 0, n));
    logits.dispose();
    for (let t = n; t < n + m; t++) {
      const next = step(model.params, model.config, state, ids.map((r) => r[t]));
      worst = Math.max(worst, maxAbsDiff(await next.logits.data(), await positions(full, t, t + 1)));
      next.logits.dispose();
      disposeState(state);
      state = next.state;
    }
    expect(state.position).toBe(n + m);
    console.log(`prefill(${n}) + ${m} steps vs forward(${n + m}): max |Δ| = ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-4);
    disposeState(state);
    full.dispose();
  });

  it("prefill in chunks equals one prefill, for logits and final state", async () => {
    const whole = prefill(model.params, model.config, cols(0, 37), { blockSize: BLOCK });
    const a = prefill(model.params, model.config, cols(0, 19), { blockSize: BLOCK });
    const b = prefill(model.params, model.config, cols(19, 37), { blockSize: BLOCK, state: a.state });
    expect(b.state.position).toBe(37);
    expect(maxAbsDiff(await b.logits.data(), await positions(whole.logits, 19, 37))).toBeLessThan(1e-4);
    expect(await stateDistance(b.state, whole.state)).toBeLessThan(1e-4);
    for (const r of [whole, a, b]) {
      r.logits.dispose();
      disposeState(r.state);
    }
  });

  it("step from initState equals prefill of one token; state shapes follow LRPE", () => {
    const s0 = initState(model.config, 2);
    expect(s0.kv.map((t) => t.shape)).toEqual([
      [2, 4, 32, 16],
      [2, 4, 16, 16],
    ]);
    const a = step(model.params, model.config, s0, [5, 6]);
    const b = prefill(model.params, model.config, [[5], [6]]);
    expect(a.logits.shape).toEqual([2, 256]);
    expect(maxAbsDiff(a.logits.dataSync(), b.logits.dataSync())).toBeLessThan(1e-5);
    for (const s of [s0, a.state, b.state]) disposeState(s);
    a.logits.dispose();
    b.logits.dispose();
  });

  it("serialise → deserialise, clone and selectRows round trip; equality sees a difference", async () => {
    const { logits, state } = prefill(model.params, model.config, cols(0, 10));
    logits.dispose();
    const bytes = await serializeState(state);
    const back = deserializeState(bytes, model.config);
    expect(back.position).toBe(10);
    expect(await statesEqual(back, state)).toBe(true);
    const copy = cloneState(state);
    expect(await statesEqual(copy, state)).toBe(true);
    expect(copy.kv[0]).not.toBe(state.kv[0]);

    // A forked copy evolves independently and no longer equals the original.
    const moved = step(model.params, model.config, copy, [1, 2]);
    moved.logits.dispose();
    expect(await statesEqual(moved.state, state)).toBe(false);
    expect(await statesEqual(copy, state)).toBe(true); // step left its input alone

    const swapped = selectRows(state, [1, 0, 1]);
    const row1 = selectRows(state, [1]);
    expect(swapped.kv[0].shape[0]).toBe(3);
    const first = selectRows(swapped, [0]);
    expect(await statesEqual(first, row1)).toBe(true);
    expect(await statesEqual(swapped, state)).toBe(false);

    for (const s of [state, back, copy, moved.state, swapped, row1, first]) disposeState(s);
  });

  it("a state that does not fit is refused with a clear error", async () => {
    const s = initState(model.config, 1);
    expect(() => step(model.params, model.config, s, [1, 2])).toThrow(/batch 2/);
    const bytes = await serializeState(s);
    expect(() => deserializeState(bytes, { ...model.config, numLayers: 3, lrpe: [true, false, false] })).toThrow(/2 layers, the model has 3/);
    expect(() => deserializeState(new Uint8Array(16))).toThrow();
    disposeState(s);
  });

  it("prefill and step leave no tensors behind", async () => {
    expect(
      await findLeaks(() => {
        const a = prefill(model.params, model.config, cols(0, 5));
        const b = step(model.params, model.config, a.state, [3, 4]);
        return [a, b];
      }),
    ).toEqual([]);
  });
});
