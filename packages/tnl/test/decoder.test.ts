/**
 * BatchDecoder against `step` on each sequence alone (the fixture model of the official TNL, LRPE
 * on its first layer): sequences at different positions join and leave between steps (a middle row
 * leaving moves the last row into it), and every step's logits, greedy tokens and copied-out states
 * match the one-sequence reference. The states are updated in place, so the test also checks that
 * a state handed to `add` is left as it was. Then, on fresh seeded weights of odd sizes, sequences
 * that start empty (`addFresh`, into rows that held other sequences) or from a prefilled state join
 * and leave in a seeded random order, each row checked against its sequence decoded alone; and a
 * join or a leave is one `copyMany` on the backend, whatever the number of layers.
 */
import { argmax, findLeaks, getBackend, type Tensor } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/tensor/testing";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  BatchDecoder,
  disposeParams,
  disposeState,
  initParams,
  initState,
  loadCheckpoint,
  makeConfig,
  prefill,
  statesEqual,
  step,
  type TnlModel,
  type TnlState,
} from "../src/index.js";
import { FIXTURE_DIR, fixture, maxAbsDiff } from "./fixture.js";

let model: TnlModel;
beforeAll(async () => {
  model = await loadCheckpoint(FIXTURE_DIR);
});
afterAll(() => disposeParams(model.params));

const ids = fixture.input_ids; // [2, 37]

function prefilled(prompt: number[]): TnlState {
  const r = prefill(model.params, model.config, [prompt], { logits: "last" });
  r.logits.dispose();
  return r.state;
}

/** Each decoder row holds the state (and position) of the reference sequence of its index. */
async function expectRowsHold(decoder: BatchDecoder, refs: readonly TnlState[]): Promise<void> {
  for (let r = 0; r < refs.length; r++) {
    const copied = decoder.state(r);
    expect(copied.position).toBe(refs[r].position);
    expect(await statesEqual(copied, refs[r], { atol: 1e-6 })).toBe(true);
    disposeState(copied);
  }
}

async function rowsOf(t: Tensor): Promise<Float32Array> {
  return Float32Array.from(await t.data());
}

describe("BatchDecoder", () => {
  it("equals step on each sequence alone while sequences join and leave", async () => {
    const V = model.config.vocabSize;
    const leaks = await findLeaks(async () => {
      const decoder = new BatchDecoder(model.params, model.config, { capacity: 5 });
      // The reference: each sequence's own state, advanced by `step`.
      const refs: TnlState[] = [];
      const join = (prompt: number[]) => {
        const s = prefilled(prompt);
        const row = decoder.add(s);
        expect(row).toBe(refs.length);
        refs.push(s);
      };
      join(ids[0].slice(0, 3));
      join(ids[1].slice(0, 1));
      join(ids[1].slice(4, 21));
      const before = await rowsOf(refs[2].kv[0]);
      let token = 7;
      for (let k = 0; k < 6; k++) {
        if (k === 2) {
          // The middle row leaves: the last moves into its place.
          expect(decoder.remove(1)).toBe(2);
          disposeState(refs.splice(1, 1, refs.pop()!)[0]);
          join(ids[0].slice(9, 14));
        }
        if (k === 4) {
          expect(decoder.remove(decoder.size - 1)).toBe(-1);
          disposeState(refs.pop()!);
        }
        const tokens = refs.map((_, r) => (token + 13 * r + k) % V);
        token += 5;
        const out = decoder.step(tokens);
        expect(out.logits.shape).toEqual([refs.length, V]);
        const logits = await rowsOf(out.logits);
        const greedy = Array.from(await out.greedy.data());
        for (let r = 0; r < refs.length; r++) {
          const single = step(model.params, model.config, refs[r], [tokens[r]]);
          const want = await rowsOf(single.logits);
          expect(maxAbsDiff(logits.slice(r * V, (r + 1) * V), want), `step ${k}, row ${r}`).toBeLessThan(1e-5);
          const best = argmax(single.logits, -1);
          expect(greedy[r], `greedy of step ${k}, row ${r}`).toBe((await best.data())[0]);
          best.dispose();
          single.logits.dispose();
          // The state given to `add` is the caller's: the decoder's in-place steps leave it alone.
          if (k === 0 && r === 2) expect(await rowsOf(refs[r].kv[0])).toEqual(before);
          disposeState(refs[r]);
          refs[r] = single.state;
        }
      }
      await expectRowsHold(decoder, refs);
      refs.forEach(disposeState);
      decoder.dispose();
      decoder.dispose(); // twice is harmless
    });
    expect(leaks).toEqual([]);
  });

  it("feeds a null row the token its previous step picked, rows moving and joining in between", async () => {
    // Twin decoders on the same rows: one is given the tokens read back from its last step, the
    // other `null` (the argmax copied on the device). Their logits must agree bit for bit.
    const V = model.config.vocabSize;
    const leaks = await findLeaks(async () => {
      const given = new BatchDecoder(model.params, model.config, { capacity: 4 });
      const chained = new BatchDecoder(model.params, model.config, { capacity: 4 });
      const join = (prompt: number[]) => {
        const s = prefilled(prompt);
        expect(given.add(s)).toBe(chained.add(s));
        disposeState(s);
      };
      join(ids[0].slice(0, 5));
      join(ids[1].slice(2, 9));
      join(ids[0].slice(11, 12));
      let picked = [3, 91, 17].map((t) => t % V);
      let tokens: (number | null)[] = picked;
      for (let k = 0; k < 5; k++) {
        const a = given.step(picked);
        const b = chained.step(tokens);
        expect(Array.from(await b.logits.data()), `step ${k}`).toEqual(Array.from(await a.logits.data()));
        picked = Array.from(await a.greedy.data());
        expect(Array.from(await b.greedy.data())).toEqual(picked);
        tokens = picked.map(() => null);
        if (k === 1) {
          // Row 0 leaves (the last row moves in and keeps its picked token); a new row joins and
          // must be given its token.
          for (const d of [given, chained]) expect(d.remove(0)).toBe(2);
          picked = [picked[2], picked[1]];
          join(ids[1].slice(20, 26));
          picked.push(44 % V);
          tokens = [null, null, picked[2]];
        }
        if (k === 3) {
          // One more row than the last step had: the copied argmax covers only the rows it ran.
          join(ids[0].slice(30, 33));
          picked.push(58 % V);
          tokens = [null, null, null, picked[3]];
        }
      }
      given.dispose();
      chained.dispose();
    });
    expect(leaks).toEqual([]);
  });

  it("equals each sequence decoded alone while fresh and prefilled sequences join and leave in a random order (random weights, odd sizes)", async () => {
    const c = makeConfig({ vocabSize: 61, dModel: 30, numLayers: 5, numHeads: 3, gluDim: 46, lrpeLayers: [0, 3] });
    const params = initParams(c, { seed: 11 });
    const rng = seeded(12);
    const V = c.vocabSize;
    const leaks = await findLeaks(async () => {
      const decoder = new BatchDecoder(params, c, { capacity: 5 });
      /** Row r's sequence alone: its state, advanced by `step`. */
      const refs: TnlState[] = [];
      let joins = 0;
      const join = () => {
        if (joins++ % 2 === 0) {
          expect(decoder.addFresh()).toBe(refs.length);
          refs.push(initState(c, 1));
        } else {
          const prompt = Array.from({ length: 1 + rng.int(9) }, () => 3 + rng.int(V - 3));
          const r = prefill(params, c, [prompt], { logits: "last" });
          r.logits.dispose();
          expect(decoder.add(r.state)).toBe(refs.length);
          refs.push(r.state);
        }
      };
      for (let k = 0; k < 24; k++) {
        // Leave: a random row (the last moves into it); join: into the freed rows, which hold stale states.
        const leaving = refs.length > 1 && rng.int(3) === 0 ? 1 + rng.int(Math.min(2, refs.length - 1)) : 0;
        for (let i = 0; i < leaving; i++) {
          const row = rng.int(refs.length);
          const last = refs.length - 1;
          expect(decoder.remove(row)).toBe(row === last ? -1 : last);
          disposeState(refs[row]);
          if (row !== last) refs[row] = refs[last];
          refs.pop();
        }
        while (refs.length < decoder.capacity && (refs.length === 0 || rng.int(2) === 0)) join();
        const tokens = refs.map(() => rng.int(V));
        const out = decoder.step(tokens);
        const logits = await rowsOf(out.logits);
        const greedy = Array.from(await out.greedy.data());
        for (let r = 0; r < refs.length; r++) {
          const single = step(params, c, refs[r], [tokens[r]]);
          const want = await rowsOf(single.logits);
          expect(maxAbsDiff(logits.slice(r * V, (r + 1) * V), want), `step ${k}, row ${r}`).toBeLessThan(1e-5);
          const best = argmax(single.logits, -1);
          expect(greedy[r], `greedy of step ${k}, row ${r}`).toBe((await best.data())[0]);
          best.dispose();
          single.logits.dispose();
          disposeState(refs[r]);
          refs[r] = single.state;
        }
      }
      expect(joins).toBeGreaterThan(8);
      await expectRowsHold(decoder, refs);
      refs.forEach(disposeState);
      decoder.dispose();
    });
    expect(leaks).toEqual([]);
    disposeParams(params);
  });

  it("reads several tokens of a row in one step (extraRows) as a prefill of them reads them", async () => {
    // Random weights of odd sizes with LRPE on two layers: each token row carries its own position.
    const c = makeConfig({ vocabSize: 53, dModel: 26, numLayers: 4, numHeads: 2, gluDim: 38, lrpeLayers: [0, 2] });
    const params = initParams(c, { seed: 21 });
    const rng = seeded(22);
    const V = c.vocabSize;
    const leaks = await findLeaks(async () => {
      const decoder = new BatchDecoder(params, c, { capacity: 4, extraRows: 11 });
      expect(decoder.extraRows).toBe(11);
      // Row 0 from the empty state, rows 1 and 2 from prefilled prompts; row 3 joins later.
      const refs: TnlState[] = [initState(c, 1)];
      decoder.addFresh();
      for (const n of [3, 6]) {
        const r = prefill(params, c, [Array.from({ length: n }, () => rng.int(V))], { logits: "last" });
        r.logits.dispose();
        decoder.add(r.state);
        refs.push(r.state);
      }
      for (let k = 0; k < 7; k++) {
        if (k === 3) {
          decoder.addFresh();
          refs.push(initState(c, 1));
        }
        // Up to 11 earlier tokens in all, some rows none; the first step gives row 0 the whole budget.
        let budget = decoder.extraRows;
        const before = refs.map((_, r) => {
          const n = k === 0 ? (r === 0 ? budget : 0) : Math.min(budget, rng.int(5));
          budget -= n;
          return Array.from({ length: n }, () => rng.int(V));
        });
        const tokens = refs.map(() => rng.int(V));
        const out = decoder.step(tokens, { before });
        const logits = await rowsOf(out.logits);
        const greedy = Array.from(await out.greedy.data());
        for (let r = 0; r < refs.length; r++) {
          const all = [...before[r], tokens[r]];
          const alone = prefill(params, c, [all], { state: refs[r], logits: "last" });
          const want = await rowsOf(alone.logits);
          expect(maxAbsDiff(logits.slice(r * V, (r + 1) * V), want), `step ${k}, row ${r} (${all.length} tokens)`).toBeLessThan(1e-5);
          const best = argmax(alone.logits, -1);
          expect(greedy[r], `greedy of step ${k}, row ${r}`).toBe((await best.data())[0]);
          best.dispose();
          alone.logits.dispose();
          disposeState(refs[r]);
          refs[r] = alone.state;
        }
        // A middle row leaving between steps: the last row (and its position) moves into it.
        if (k === 5) {
          decoder.remove(1);
          disposeState(refs[1]);
          refs[1] = refs.pop()!;
        }
      }
      await expectRowsHold(decoder, refs);
      refs.forEach(disposeState);
      decoder.dispose();
    });
    expect(leaks).toEqual([]);
    disposeParams(params);
  });

  it("refuses earlier tokens beyond extraRows, outside the vocabulary or not in lists", () => {
    const decoder = new BatchDecoder(model.params, model.config, { capacity: 2, extraRows: 3 });
    decoder.addFresh();
    decoder.addFresh();
    const V = model.config.vocabSize;
    expect(() => decoder.step([1, 2], { before: [[1, 2], [3, 4]] })).toThrow(/before holds 4 tokens, more than the decoder's extraRows \(3\)/);
    expect(() => decoder.step([1, 2], { before: [[1, V]] })).toThrow(/token \d+ at before\[0\]\[1\] is outside the vocabulary/);
    expect(() => decoder.step([1, 2], { before: [[1], [2], [3]] })).toThrow(/before must be an array of at most 2 token lists/);
    expect(() => decoder.step([1, 2], { before: [5 as never] })).toThrow(/before\[0\] must be an array of token ids/);
    expect(() => new BatchDecoder(model.params, model.config, { capacity: 1, extraRows: -1 })).toThrow(/extraRows must be a non-negative integer/);
    decoder.dispose();
    const plain = new BatchDecoder(model.params, model.config, { capacity: 1 });
    plain.addFresh();
    expect(() => plain.step([1], { before: [[2]] })).toThrow(/before holds 1 tokens, more than the decoder's extraRows \(0\)/);
    plain.dispose();
  });

  it("joins and leaves with one copyMany on the backend, and a fresh join allocates nothing", () => {
    const c = makeConfig({ vocabSize: 37, dModel: 18, numLayers: 7, numHeads: 3, gluDim: 22 });
    const params = initParams(c, { seed: 13 });
    const be = getBackend();
    const decoder = new BatchDecoder(params, c, { capacity: 3 });
    const copyMany = vi.spyOn(be, "copyMany");
    const copyWithin = vi.spyOn(be, "copyWithin");
    const allocate = vi.spyOn(be, "allocate");
    const write = vi.spyOn(be, "write");
    try {
      const count = (fn: () => unknown) => {
        for (const spy of [copyMany, copyWithin, allocate, write]) spy.mockClear();
        fn();
        return { copyMany: copyMany.mock.calls.length, copyWithin: copyWithin.mock.calls.length, allocate: allocate.mock.calls.length, write: write.mock.calls.length };
      };
      const none = { copyWithin: 0, allocate: 0, write: 0 };
      expect(count(() => decoder.addFresh())).toEqual({ copyMany: 1, ...none });
      expect(count(() => decoder.addFresh())).toEqual({ copyMany: 1, ...none });
      // One copy a layer, in one call.
      expect(copyMany.mock.calls[0][0]).toHaveLength(c.numLayers);
      const s = initState(c, 1);
      expect(count(() => decoder.add(s))).toEqual({ copyMany: 1, ...none });
      disposeState(s);
      decoder.step([1, 2, 3]);
      // A middle row leaving: every layer's row and the picked token move in one call.
      expect(count(() => decoder.remove(0))).toEqual({ copyMany: 1, ...none });
      expect(copyMany.mock.calls[0][0]).toHaveLength(c.numLayers + 1);
      expect(count(() => decoder.remove(1))).toEqual({ copyMany: 0, ...none });
    } finally {
      for (const spy of [copyMany, copyWithin, allocate, write]) spy.mockRestore();
      decoder.dispose();
      disposeParams(params);
    }
  });

  it("refuses bad input by name", () => {
    const decoder = new BatchDecoder(model.params, model.config, { capacity: 1 });
    expect(() => decoder.step([1])).toThrow(/no rows in use/);
    const s = prefilled([3, 4]);
    decoder.add(s);
    expect(() => decoder.add(s)).toThrow(/a state of 1 sequences does not fit in the 0 free rows \(capacity 1\)/);
    expect(() => decoder.addFresh()).toThrow(/BatchDecoder\.addFresh: no free row \(all 1 in use\)/);
    expect(() => decoder.step([1, 2])).toThrow(/2 tokens for 1 rows/);
    expect(() => decoder.step([model.config.vocabSize])).toThrow(/outside the vocabulary/);
    expect(() => decoder.step([null])).toThrow(/row 0 has no previous step whose token a null could feed/);
    expect(() => decoder.step([1.5])).toThrow(/token 1.5 of row 0/);
    expect(() => decoder.remove(1)).toThrow(/row must be an integer in \[0, 1\), got 1/);
    expect(() => new BatchDecoder(model.params, model.config, { capacity: 0 })).toThrow(/capacity must be a positive integer/);
    decoder.dispose();
    expect(() => decoder.step([1])).toThrow(/used after dispose/);
    expect(() => decoder.addFresh()).toThrow(/used after dispose/);
    disposeState(s);
  });
});
