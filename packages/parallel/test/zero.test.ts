import { disposeTree, valueAndGrad } from "@lightning-ts/autograd";
import { AdamW } from "@lightning-ts/autograd/optim";
import { assertClose } from "@lightning-ts/tensor/testing";
import { loss, type TnlParams } from "@lightning-ts/tnl";
import { describe, expect, it } from "vitest";
import { shardOwners, stateElements } from "../src/index.js";
import { runGroup } from "./group.js";
import { batches, tinyConfig } from "./tnl-setup.js";
import type { ZeroArgs, ZeroResult } from "./workers/zero.js";
import { globalTargets, loadState, paramsFrom, paramValues, type SavedState, saveState, type Values } from "./zero-setup.js";

/** One process over each whole global batch with the model's own loss: the oracle. */
function singleProcess(globalBatches: number[][][], lr: number, start?: { params: Values; state: SavedState }, saveAt?: number) {
  const config = tinyConfig();
  let params: TnlParams = paramsFrom(start?.params);
  const opt = new AdamW({ lr, weightDecay: 0.01 });
  if (start) {
    const full = loadState(start.state);
    opt.loadStateDict(full);
    disposeTree(full.tensors);
  }
  const losses: number[] = [];
  let saved: { params: Values; state: SavedState } | undefined;
  for (const [step, batch] of globalBatches.entries()) {
    // HF labels: position t predicts labels[t + 1].
    const labels = globalTargets(batch).map((row) => [-100, ...row.slice(0, -1)]);
    const { value, grads } = valueAndGrad((p: TnlParams) => loss(p, config, batch, { labels, blockSize: 4 }))(params);
    losses.push(value.dataSync()[0]);
    params = opt.step(params, grads);
    disposeTree([value, grads]);
    if (step + 1 === saveAt) {
      const state = opt.stateDict();
      saved = { params: paramValues(params), state: saveState(state) };
      disposeTree(state.tensors);
    }
  }
  return { losses, params: paramValues(params), stateElements: stateElements(opt), saved };
}

const expectLosses = (got: number[], want: number[], label: string) =>
  got.forEach((l, step) => expect(Math.abs(l - want[step]) / want[step], `${label}: step ${step} loss ${l} vs ${want[step]}`).toBeLessThanOrEqual(1e-5));

const expectParams = (got: Values, want: Values, label: string) => {
  expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
  for (const [path, values] of Object.entries(want)) assertClose(got[path], values, { rtol: 1e-5, atol: 1e-5, label: `${label}: ${path}` });
};

describe("shardOwners", () => {
  it("gives the largest parameter to the least loaded rank, the same on every call", () => {
    const params = paramsFrom();
    const owners = shardOwners(params, 3);
    expect(shardOwners(params, 3)).toEqual(owners);
    expect(new Set(owners.values())).toEqual(new Set([0, 1, 2]));
    expect([...shardOwners(params, 1).values()].every((r) => r === 0)).toBe(true);
    disposeTree(params);
  });

  it("names a bad world size", () => {
    expect(() => shardOwners({}, 0)).toThrow(/worldSize must be a positive integer, got 0/);
  });
});

describe("ZeRO-1 on the CPU collective equals plain data parallel and one process", () => {
  const lr = 3e-3;
  for (const { n, rows, T } of [
    { n: 2, rows: 5, T: 11 },
    { n: 3, rows: 7, T: 9 },
  ]) {
    it(`${n} ranks, ${rows} rows of ${T} tokens: losses, parameters, and 1/${n} of the optimizer state per rank`, async () => {
      const config = tinyConfig();
      const global = batches(200 * n + rows, 4, rows, T, config.vocabSize);
      const zero = await runGroup<ZeroResult, ZeroArgs>("zero", n, { batches: global, lr });
      const plain = await runGroup<ZeroResult, ZeroArgs>("zero", n, { batches: global, lr, plain: true });
      const ref = singleProcess(global, lr);
      for (const [r, z] of zero.entries()) {
        expect(z.leaked, `rank ${r}: tensors left alive`).toBe(0);
        expectLosses(z.losses, ref.losses, `rank ${r}`);
        // The same summed gradient through the same update: the bits of plain data parallel.
        expect(z.params, `rank ${r} vs plain data parallel`).toEqual(plain[r].params);
        expectParams(z.params, ref.params, `rank ${r} vs one process`);
      }
      // Every slot element lives on exactly one rank, and each rank holds about 1/n of them
      // (whole parameters: at most one parameter's slots over the even share).
      const total = ref.stateElements;
      expect(zero.reduce((s, z) => s + z.stateElements, 0)).toBe(total);
      const largest = Math.max(...Object.values(ref.params).map((v) => v.length)) * 2;
      for (const z of zero) expect(z.stateElements).toBeLessThanOrEqual(total / n + largest);
      for (const p of plain) expect(p.stateElements).toBe(total);
    });
  }
});

describe("ZeRO-1 checkpoints keep the one-process format", () => {
  const lr = 3e-3;
  it("the gathered state is one process's; it resumes on 1 rank, and one process's state resumes on 3 ranks", async () => {
    const config = tinyConfig();
    const global = batches(911, 5, 7, 9, config.vocabSize);
    const ref = singleProcess(global, lr, undefined, 2);
    const saved = ref.saved!;
    const [rank0] = await runGroup<ZeroResult, ZeroArgs>("zero", 2, { batches: global.slice(0, 2), lr, gatherAt: 2 });
    const [plain0] = await runGroup<ZeroResult, ZeroArgs>("zero", 2, { batches: global.slice(0, 2), lr, gatherAt: 2, plain: true });
    const gathered = rank0.gathered!;
    // The state plain data parallel holds on every rank, bit for bit, in one process's layout.
    expect(gathered).toEqual(plain0.gathered);
    expect(gathered.meta).toEqual(saved.state.meta);
    expect(Object.keys(gathered.tensors)).toEqual(Object.keys(saved.state.tensors));

    // 2 ranks → 1 process.
    const resumedOne = singleProcess(global.slice(2), lr, { params: rank0.params, state: gathered });
    expectLosses(resumedOne.losses, ref.losses.slice(2), "resumed on one process");
    expectParams(resumedOne.params, ref.params, "resumed on one process");
    // 1 process → 3 ranks under ZeRO-1.
    const resumedThree = await runGroup<ZeroResult, ZeroArgs>("zero", 3, { batches: global.slice(2), lr, start: saved });
    for (const [r, z] of resumedThree.entries()) {
      expect(z.leaked, `rank ${r}: tensors left alive`).toBe(0);
      expectLosses(z.losses, ref.losses.slice(2), `resumed on 3 ranks, rank ${r}`);
      expectParams(z.params, ref.params, `resumed on 3 ranks, rank ${r}`);
    }
  });
});

describe("ZeRO-1 skips a non-finite step on every rank", () => {
  it("3 ranks: a NaN step in the middle leaves parameters and state as if it had not been", async () => {
    const config = tinyConfig();
    const global = batches(577, 3, 5, 7, config.vocabSize);
    const skipped = await runGroup<ZeroResult, ZeroArgs>("zero", 3, { batches: global, lr: 3e-3, nanAt: 1, gatherAt: 3 });
    const without = await runGroup<ZeroResult, ZeroArgs>("zero", 3, { batches: [global[0], global[2]], lr: 3e-3, gatherAt: 2 });
    for (const [r, z] of skipped.entries()) {
      expect(z.leaked, `rank ${r}: tensors left alive`).toBe(0);
      expect(z.losses).toEqual(without[r].losses);
      expect(z.params).toEqual(without[r].params);
    }
    expect(skipped[0].gathered).toEqual(without[0].gathered);
  });
});
