/**
 * BatchDecoders with extra rows against a prefill of the same tokens on the CPU (shared by the CUDA
 * and WebGPU test files): three fresh rows step through EXTRA_ROW_PLANS in every decoder given
 * (their logits and greedy tokens bit for bit alike: e.g. graph replays and eager steps), each
 * row's logits match a CPU prefill of the row's tokens from its own state within `bounds` (atol
 * relative to the largest logit), and each greedy token is its row's argmax.
 */
import * as T from "@lightning-ts/tensor";
import { assertClose } from "@lightning-ts/testing";
import { type BatchDecoder, disposeState, initState, prefill, type TnlModel, type TnlState } from "@lightning-ts/tnl";
import { expect } from "vitest";

/** Earlier tokens of rows 0, 1, 2 a step: 12 in the first step, then a few, some rows none. */
export const EXTRA_ROW_PLANS = [
  [[5, 9, 14, 2], [], [7, 7, 30, 41, 3, 11, 99, 100]],
  [[1], [4, 4, 4], []],
  [[], [], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70]],
  [[8, 9], [10], [11, 12]],
];

const floats = async (t: T.Tensor) => Float64Array.from(await t.data());

export async function extraRowsAgainstPrefill(decoders: readonly BatchDecoder[], host: TnlModel, gpu: T.Backend, bounds: { atol: number; rtol: number }): Promise<void> {
  const cpu = host.params.embed.backend;
  const onCpu = <R>(fn: () => R): R => {
    T.setBackend(cpu);
    try {
      return fn();
    } finally {
      T.setBackend(gpu);
    }
  };
  T.setBackend(gpu);
  const V = host.config.vocabSize;
  const hostStates: TnlState[] = [];
  for (let r = 0; r < 3; r++) {
    for (const d of decoders) d.addFresh();
    hostStates.push(onCpu(() => initState(host.config, 1)));
  }
  for (const [k, before] of EXTRA_ROW_PLANS.entries()) {
    const tokens = before.map((_, r) => (17 * k + 5 * r + 1) % V);
    const outs = decoders.map((d) => d.step(tokens, { before }));
    const logits = await floats(outs[0].logits);
    const greedy = Array.from(await outs[0].greedy.data());
    for (const [i, other] of outs.slice(1).entries()) {
      expect(Array.from(await floats(other.logits)), `step ${k}: decoder ${i + 1}'s logits vs decoder 0's`).toEqual(Array.from(logits));
      expect(Array.from(await other.greedy.data())).toEqual(greedy);
    }
    for (let r = 0; r < before.length; r++) {
      const row = logits.subarray(r * V, (r + 1) * V);
      expect(greedy[r], `greedy, step ${k} row ${r}`).toBe(row.indexOf(Math.max(...row)));
      const onHost = onCpu(() => prefill(host.params, host.config, [[...before[r], tokens[r]]], { state: hostStates[r], logits: "last" }));
      const want = await floats(onHost.logits);
      const big = Math.max(...Array.from(want, Math.abs));
      assertClose(row, want, { atol: bounds.atol * big, rtol: bounds.rtol, label: `step ${k} row ${r} vs a prefill on the CPU` });
      onHost.logits.dispose();
      disposeState(hostStates[r]);
      hostStates[r] = onHost.state;
    }
  }
  hostStates.forEach(disposeState);
}
