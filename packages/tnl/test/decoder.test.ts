/**
 * BatchDecoder against `step` on each sequence alone (the fixture model of the official TNL, LRPE
 * on its first layer): sequences at different positions join and leave between steps (a middle row
 * leaving moves the last row into it), and every step's logits, greedy tokens and copied-out states
 * match the one-sequence reference. The states are updated in place, so the test also checks that
 * a state handed to `add` is left as it was.
 */
import { argmax, findLeaks, type Tensor } from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchDecoder, disposeParams, disposeState, loadCheckpoint, prefill, statesEqual, step, type TnlModel, type TnlState } from "../src/index.js";
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
      for (let r = 0; r < refs.length; r++) {
        const copied = decoder.state(r);
        expect(copied.position).toBe(refs[r].position);
        expect(await statesEqual(copied, refs[r], { atol: 1e-6 })).toBe(true);
        disposeState(copied);
      }
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

  it("refuses bad input by name", () => {
    const decoder = new BatchDecoder(model.params, model.config, { capacity: 1 });
    expect(() => decoder.step([1])).toThrow(/no rows in use/);
    const s = prefilled([3, 4]);
    decoder.add(s);
    expect(() => decoder.add(s)).toThrow(/a state of 1 sequences does not fit in the 0 free rows \(capacity 1\)/);
    expect(() => decoder.step([1, 2])).toThrow(/2 tokens for 1 rows/);
    expect(() => decoder.step([model.config.vocabSize])).toThrow(/outside the vocabulary/);
    expect(() => decoder.step([null])).toThrow(/row 0 has no previous step whose token a null could feed/);
    expect(() => decoder.step([1.5])).toThrow(/token 1.5 of row 0/);
    expect(() => decoder.remove(1)).toThrow(/row must be an integer in \[0, 1\), got 1/);
    expect(() => new BatchDecoder(model.params, model.config, { capacity: 0 })).toThrow(/capacity must be a positive integer/);
    decoder.dispose();
    expect(() => decoder.step([1])).toThrow(/used after dispose/);
    disposeState(s);
  });
});
