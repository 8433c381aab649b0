/**
 * The segment states of Lightning Attention on the CPU (`segmentTokens`): the forward's third output,
 * the states entering tokens 0, L, 2L, …, against the float64 recurrence, with the output and final
 * state bit for bit those of the call without it, for every impl and dtype; the backward given them
 * (which it ignores) against the backward without; and `lightningAttention()`, which runs the op with
 * the segment length its backend names and frees the states it does not return.
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim, L tokens per segment.
 */
import { describe, expect, it } from "vitest";
import * as T from "../src/index.js";
import { assertClose } from "../src/testing/index.js";
import { firstDifference, type Impl, scoped, type SegmentDims, segmentInputs, segmentStatesBackwardSuite, segmentStatesOracle } from "./lightning-segments-suite.js";

const IMPLS: Impl[] = ["chunked", "recurrent", "quadratic"];
const cpu = T.getBackend();
const values = async (t: T.Tensor) => Float64Array.from(await t.data());

/** T on both sides of the boundaries of L = 64 and 128; odd heads. */
const FORWARD_CASES: SegmentDims[] = [
  { B: 1, H: 2, T: 1, D: 3, E: 5 },
  { B: 2, H: 1, T: 63, D: 5, E: 3 },
  { B: 1, H: 3, T: 64, D: 3, E: 5 },
  { B: 1, H: 2, T: 65, D: 5, E: 7 },
  { B: 2, H: 3, T: 200, D: 3, E: 5 },
];

/** f64 states are computed and stored in float64; the others are float64 sums rounded once to f32. */
const TOL: Record<string, { atol: number; rtol: number }> = { f64: { atol: 1e-12, rtol: 1e-12 }, f32: { atol: 1e-7, rtol: 1e-6 }, bf16: { atol: 1e-7, rtol: 1e-6 } };

describe("lightningAttention with segmentTokens on the CPU: the segment states", () => {
  for (const c of FORWARD_CASES) {
    for (const L of [64, 128]) {
      it(`B=${c.B} H=${c.H} T=${c.T} D=${c.D} E=${c.E} L=${L}: every impl and dtype, with and without an initial state`, async () => {
        let seed = 10 * c.T + L;
        for (const dtype of ["f64", "f32", "bf16"] as const) {
          for (const withInit of [false, true]) {
            await scoped(async () => {
              const x = segmentInputs(cpu, c, dtype, seed++);
              const s0 = withInit ? x.s0 : undefined;
              const inputs = [x.q, x.k, x.v, x.slopes, ...(s0 ? [s0] : [])];
              const want = segmentStatesOracle(c, await values(x.k), await values(x.v), x.slopeValues, s0 ? await values(s0) : undefined, L);
              for (const impl of IMPLS) {
                const label = `${impl} ${dtype}${withInit ? ", initial state" : ""}`;
                const attrs = { blockSize: 37, impl, hasInitialState: withInit };
                const [o, S] = T.runOp("lightningAttention", inputs, attrs);
                const got = T.runOp("lightningAttention", inputs, { ...attrs, segmentTokens: L });
                expect(got.length).toBe(3);
                const [o2, S2, states] = got;
                expect(states.shape, label).toEqual([c.B, c.H, Math.ceil(c.T / L), c.D, c.E]);
                expect(states.dtype, label).toBe(dtype === "f64" ? "f64" : "f32");
                expect(firstDifference(await values(o2), await values(o)), `${label}: output`).toBe(-1);
                expect(firstDifference(await values(S2), await values(S)), `${label}: final state`).toBe(-1);
                assertClose(await values(states), want, { ...TOL[dtype], label: `${label}: segment states` });
              }
            });
          }
        }
      });
    }
  }

  it("T = 0 gives no segment states, [B, H, 0, D, E]", async () => {
    for (const dtype of ["f64", "f32"] as const) {
      await scoped(async () => {
        const x = segmentInputs(cpu, { B: 2, H: 3, T: 0, D: 5, E: 3 }, dtype, 3);
        const [o, S, states] = T.runOp("lightningAttention", [x.q, x.k, x.v, x.slopes, x.s0], { blockSize: 64, impl: "chunked", hasInitialState: true, segmentTokens: 64 });
        expect(o.shape).toEqual([2, 3, 0, 3]);
        expect(states.shape).toEqual([2, 3, 0, 5, 3]);
        expect(firstDifference(await values(S), await values(x.s0))).toBe(-1);
      });
    }
  });
});

describe("lightningAttentionBackward with the segment states on the CPU", () => segmentStatesBackwardSuite(() => cpu, IMPLS));

describe("lightningAttention() on a backend that keeps segment states", () => {
  /** A CPU backend that names L for every call, and records what it was asked. */
  function advertising(L: number) {
    const asked: T.LightningDimsInfo[] = [];
    const backend = Object.assign(T.createCpuBackend({ threads: 1 }), {
      lightningSegmentTokens: (dims: T.LightningDimsInfo) => {
        asked.push(dims);
        return L;
      },
    });
    return { backend, asked };
  }

  /** The lightningAttention records of the ops `fn` runs. */
  function recorded(fn: () => void): T.OpRecord<"lightningAttention">[] {
    const records: T.OpRecord<"lightningAttention">[] = [];
    const stop = T.addOpObserver((r) => r.op === "lightningAttention" && records.push(r as T.OpRecord<"lightningAttention">));
    try {
      fn();
    } finally {
      stop();
    }
    return records;
  }

  it("runs the op with segmentTokens = L, returns what it returned without them and frees the states", async () => {
    const { backend, asked } = advertising(64);
    const c = { B: 1, H: 3, T: 130, D: 5, E: 7 };
    const x = segmentInputs(backend, c, "f32", 77);
    for (const withInit of [false, true]) {
      const initialState = withInit ? x.s0 : undefined;
      asked.length = 0;
      const tensors = T.liveTensorCount();
      const bytes = backend.memory().liveBytes;
      let result!: { output: T.Tensor; state: T.Tensor };
      const [record, ...more] = recorded(() => {
        result = T.lightningAttention(x.q, x.k, x.v, x.slopes, { returnState: true, initialState });
      });
      expect(more).toEqual([]);
      expect(asked).toEqual([{ dtype: "f32", ...c }]);
      expect(record.attrs.segmentTokens).toBe(64);
      expect(record.outputs.map((t) => t.shape)).toEqual([
        [1, 3, 130, 7],
        [1, 3, 5, 7],
        [1, 3, 3, 5, 7],
      ]);
      // Only the output and the final state are left alive.
      expect(record.outputs[2].isDisposed).toBe(true);
      expect(T.liveTensorCount()).toBe(tensors + 2);
      expect(backend.memory().liveBytes).toBe(bytes + (c.T * c.E + c.D * c.E) * c.H * 4);
      const [o, S] = T.runOp("lightningAttention", [x.q, x.k, x.v, x.slopes, ...(initialState ? [initialState] : [])], { blockSize: 64, impl: "chunked", hasInitialState: withInit });
      expect(firstDifference(await values(result.output), await values(o))).toBe(-1);
      expect(firstDifference(await values(result.state), await values(S))).toBe(-1);
      for (const t of [result.output, result.state, o, S]) t.dispose();
      expect(backend.memory().liveBytes).toBe(bytes);
    }
    // Only the chunked form runs the backend's split: the reference forms are not asked.
    asked.length = 0;
    const [reference] = recorded(() => T.lightningAttention(x.q, x.k, x.v, x.slopes, { impl: "recurrent" }).dispose());
    expect(asked).toEqual([]);
    expect("segmentTokens" in reference.attrs).toBe(false);
    for (const t of [x.q, x.k, x.v, x.slopes, x.s0, x.dO, x.dS]) t.dispose();
    backend.dispose();
  });

  it("returnSegmentStates hands the kept states and their L to the caller, for a backward by hand", async () => {
    const { backend } = advertising(64);
    const c = { B: 1, H: 2, T: 150, D: 3, E: 5 };
    for (const [be, L] of [[backend, 64], [cpu, 0]] as const) {
      const x = segmentInputs(be, c, "f32", 31);
      const f = T.lightningAttention(x.q, x.k, x.v, x.slopes, { returnSegmentStates: true, initialState: x.s0 });
      expect(f.segmentTokens).toBe(L);
      if (L) {
        expect(f.segmentStates!.shape).toEqual([1, 2, 3, 3, 5]);
        const want = T.runOp("lightningAttention", [x.q, x.k, x.v, x.slopes, x.s0], { blockSize: 64, impl: "chunked", hasInitialState: true, segmentTokens: L })[2];
        expect(firstDifference(await values(f.segmentStates!), await values(want))).toBe(-1);
        const given = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { initialState: x.s0, segmentStates: f.segmentStates, segmentTokens: f.segmentTokens });
        const plain = T.lightningAttentionBackward(x.q, x.k, x.v, x.slopes, x.dO, x.dS, { initialState: x.s0 });
        for (const key of ["dq", "dk", "dv", "dInitialState"] as const) expect(firstDifference(await values(given[key]!), await values(plain[key]!)), key).toBe(-1);
        for (const g of [given, plain]) for (const t of [g.dq, g.dk, g.dv, g.dInitialState]) t?.dispose();
        want.dispose();
      } else {
        expect(f.segmentStates).toBeUndefined();
      }
      for (const t of [f.output, f.state, f.segmentStates, x.q, x.k, x.v, x.slopes, x.s0, x.dO, x.dS]) t?.dispose();
    }
    backend.dispose();
  });

  it("carries no segmentTokens where the backend names none (absent, or 0)", () => {
    const { backend } = advertising(0);
    for (const be of [backend, cpu]) {
      const x = segmentInputs(be, { B: 2, H: 1, T: 65, D: 3, E: 5 }, "f32", 5);
      const [record] = recorded(() => T.lightningAttention(x.q, x.k, x.v, x.slopes).dispose());
      expect(record.attrs).toEqual({ blockSize: 64, impl: "chunked", hasInitialState: false });
      expect(record.outputs).toHaveLength(2);
      for (const t of [x.q, x.k, x.v, x.slopes, x.s0, x.dO, x.dS]) t.dispose();
    }
    backend.dispose();
  });
});
