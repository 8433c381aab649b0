import { vjp } from "@lightning-ts/autograd";
import { lightningAttention, type Tensor } from "@lightning-ts/tensor";
import { assertClose } from "@lightning-ts/tensor/testing";
import { describe, expect, it } from "vitest";
import { runGroup } from "./group.js";
import { type SpArgs, spInputs } from "./sp-inputs.js";
import type { SpRankResult } from "./workers/sp-attention.js";

/** Rank slices [B, H, L, X] (flat) joined along T into [B, H, T, X]. */
function joinT(parts: number[][], B: number, H: number, L: number, X: number): number[] {
  const n = parts.length;
  const out = new Array<number>(B * H * n * L * X);
  parts.forEach((p, r) => {
    for (let bh = 0; bh < B * H; bh++) {
      for (let t = 0; t < L; t++) {
        for (let x = 0; x < X; x++) out[((bh * n * L) + r * L + t) * X + x] = p[(bh * L + t) * X + x];
      }
    }
  });
  return out;
}

/** The one-rank result (kernel `impl`) with the same cotangents. */
function reference(a: SpArgs, impl: "chunked" | "recurrent") {
  const x = spInputs(a);
  const s0 = a.withInitialState ? x.s0 : undefined;
  const { out, vjp: pull } = vjp(
    (q: Tensor, k: Tensor, v: Tensor, init: Tensor) =>
      lightningAttention(q, k, v, x.slopes, { returnState: true, impl, blockSize: a.blockSize, initialState: s0 ? init : undefined }),
    x.q,
    x.k,
    x.v,
    x.s0,
  );
  const [dq, dk, dv, dS0] = pull({ output: x.dO, state: x.dS });
  const read = (t: Tensor | null) => Array.from(t!.dataSync());
  return { output: read(out.output), state: read(out.state), dq: read(dq), dk: read(dk), dv: read(dv), dS0: s0 ? read(dS0) : null };
}

async function check(n: number, a: SpArgs, oracle: "chunked" | "recurrent", rtol: number): Promise<SpRankResult[]> {
  const ranks = await runGroup<SpRankResult, SpArgs>("sp-attention", n, a);
  const ref = reference(a, oracle);
  const L = a.T / n;
  const join = (key: "output" | "dq" | "dk" | "dv", X: number) => joinT(ranks.map((r) => r[key]), a.B, a.H, L, X);
  const opts = (label: string) => ({ rtol, atol: Infinity, label: `${n} ranks ${a.dtype} T=${a.T}: ${label}` });
  assertClose(join("output", a.E), ref.output, opts("output"));
  assertClose(ranks[n - 1].state, ref.state, opts("final state (last rank)"));
  assertClose(join("dq", a.D), ref.dq, opts("dq"));
  assertClose(join("dk", a.D), ref.dk, opts("dk"));
  assertClose(join("dv", a.E), ref.dv, opts("dv"));
  if (a.withInitialState) assertClose(ranks[0].dS0!, ref.dS0!, opts("d initial state (rank 0)"));
  expect(ranks.slice(1).every((r) => r.dS0 === null)).toBe(true);
  return ranks;
}

describe("sequence-parallel Lightning Attention (LASP-2) on the CPU collective", () => {
  // T/N odd and not a multiple of the block, D ≠ E, several heads, batch > 1.
  const base = { B: 2, H: 3, D: 5, E: 7, blockSize: 4, withInitialState: false };
  it("2 ranks, T/N = 9, strong decay: equals one-rank chunked Lightning (f32), forward and backward", () => check(2, { ...base, T: 18, dtype: "f32", seed: 9 }, "chunked", 1e-5));
  it("3 ranks, T/N = 7, an initial state on rank 0 (f32)", () => check(3, { ...base, T: 21, dtype: "f32", seed: 12, withInitialState: true }, "chunked", 1e-5));
  it("4 ranks, T/N = 5, weak decay (f32)", () => check(4, { ...base, T: 20, dtype: "f32", seed: 14 }, "chunked", 1e-5));
  it("3 ranks in float64 against the float64 recurrence", () => check(3, { ...base, T: 15, dtype: "f64", seed: 13, withInitialState: true }, "recurrent", 1e-11));
  it("2 ranks, T/N = 2,048: the rank's state in lightningState's 1,024-token chunks (f32)", () => check(2, { ...base, B: 1, H: 2, T: 4096, blockSize: 64, dtype: "f32", seed: 16 }, "chunked", 1e-5));
  it("4 ranks, T/N = 1 (f32)", () => check(4, { ...base, B: 1, H: 2, T: 4, dtype: "f32", seed: 15 }, "chunked", 1e-5));
  // The bf16 bound (5e-3 relative RMS against one rank); the states pass between ranks in f32.
  it("2 ranks in bf16, an initial state, T/N = 65: one-rank chunked Lightning within 5e-3", () =>
    check(2, { ...base, T: 130, dtype: "bf16", seed: 18, withInitialState: true }, "chunked", 5e-3));
  it("3 ranks in bf16, T/N = 43", () => check(3, { ...base, T: 129, dtype: "bf16", seed: 19 }, "chunked", 5e-3));
  // A backend that keeps its forward's segment states (CUDA at batch 1): each rank's backward is
  // given them (7 inputs, 8 with rank 0's initial state or a later rank's incoming state).
  it.each([false, true])("2 ranks whose backend keeps segment states of 64 tokens, T/N = 131, initial state %s (f32)", async (withInitialState) => {
    const a = { ...base, B: 1, H: 2, T: 262, blockSize: 64, dtype: "f32" as const, seed: 21, withInitialState, segmentTokens: 64 };
    const ranks = await check(2, a, "chunked", 1e-5);
    expect(ranks.map((r) => r.backwardInputs)).toEqual([[withInitialState ? 8 : 7], [8]]);
  });
});
