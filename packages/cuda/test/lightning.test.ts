/**
 * Lightning Attention on the CUDA backend at sizes the conformance suite does not reach: the
 * tensor-core kernels (bf16 and f16; D ∈ {64, 128, 256}) and the general ones, against the CPU's float64
 * recurrence on the same inputs; state carry; decode steps chained against the forward. Needs no
 * TNL. Skipped, with the reason printed, where the CUDA backend cannot start; under
 * LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import * as T from "@lightning-ts/tensor";
import { type Backend, type DType, type Tensor } from "@lightning-ts/tensor";
import { vjp } from "@lightning-ts/autograd";
import { closeness, describeBackends, seeded } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import { host, lightningOracle } from "./lightning-oracle.js";
import "./setup.js";

/** `got` within relative RMS `bound` of `want` (the float64 oracle). */
function checkClose(label: string, got: ArrayLike<number>, want: ArrayLike<number>, bound: number): void {
  expect(closeness(got, want).relRms, label).toBeLessThanOrEqual(bound);
}

/** Relative RMS bound by storage dtype (docs/PERFORMANCE.md: ≤ 5e-3 for bf16 kernels). */
const BOUND: Record<string, number> = { f32: 1e-5, f16: 2e-3, bf16: 5e-3 };

interface Case {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
  dtype: DType;
  state: boolean;
}

await describeBackends("Lightning Attention vs the float64 recurrence", (gpu: () => Backend) => {
  const cases: Case[] = [
    { B: 2, H: 2, T: 200, D: 128, E: 128, dtype: "bf16", state: true },
    { B: 1, H: 3, T: 1000, D: 128, E: 64, dtype: "bf16", state: false },
    { B: 1, H: 2, T: 333, D: 64, E: 96, dtype: "f16", state: true },
    { B: 2, H: 2, T: 257, D: 40, E: 24, dtype: "f32", state: true },
    // The tensor-core shapes (TNL's head widths: D = E = 128, the LRPE layer's D = 256 with E = 128,
    // small models' D = E = 64), bf16 and f16, at odd lengths (tail chunks masked), with and without
    // an initial state, and one long batch-1 sequence that takes the sequence split.
    ...(["bf16", "f16"] as DType[]).flatMap((dtype) =>
      [
        [128, 128],
        [256, 128],
        [64, 64],
      ].flatMap(([D, E]) => [
        ...[1, 63, 65, 513].map((T, i) => ({ B: 2, H: 2, T, D: D, E: E, dtype, state: i % 2 === 0 })),
        { B: 1, H: 2, T: 2049, D: D, E: E, dtype, state: true },
      ]),
    ),
  ];
  async function forwardBackward(c: Case): Promise<void> {
    const rng = seeded(c.T * 7 + c.D);
    const on = { backend: gpu(), dtype: c.dtype, std: 0.3 };
    const q = rng.tensor([c.B, c.H, c.T, c.D], on);
    const k = rng.tensor([c.B, c.H, c.T, c.D], on);
    const v = rng.tensor([c.B, c.H, c.T, c.E], on);
    const dO = rng.tensor([c.B, c.H, c.T, c.E], on);
    const dS = rng.tensor([c.B, c.H, c.D, c.E], { backend: gpu(), std: 0.3 });
    const S0 = c.state ? rng.tensor([c.B, c.H, c.D, c.E], { backend: gpu(), std: 0.3 }) : undefined;
    const slopeValues = T.tnlSlopes(c.H, 0, 2).map(Math.fround);
    const slopes = T.tensor(slopeValues, [c.H], { backend: gpu() });
    const want = lightningOracle(c, await host(q), await host(k), await host(v), slopeValues, S0 ? await host(S0) : null, await host(dO), await host(dS));
    const { output, state } = T.lightningAttention(q, k, v, slopes, { initialState: S0, returnState: true });
    const bound = BOUND[c.dtype];
    checkClose("output", await host(output), want.o, bound);
    checkClose("final state", await host(state), want.S, bound);
    const g = T.lightningAttentionBackward(q, k, v, slopes, dO, dS, { initialState: S0 });
    checkClose("dq", await host(g.dq), want.dq, bound);
    checkClose("dk", await host(g.dk), want.dk, bound);
    checkClose("dv", await host(g.dv), want.dv, bound);
    if (S0) checkClose("dInitialState", await host(g.dInitialState!), want.dS0!, bound);
    for (const t of [q, k, v, dO, dS, S0, slopes, output, state, g.dq, g.dk, g.dv, g.dInitialState]) t?.dispose();
  }

  for (const c of cases) it(`forward, backward ${JSON.stringify(c)}`, () => forwardBackward(c));

  // Batch 1 through the sequence split with segments of many chunks, phase A on sub-segments of
  // them (LIGHTNING_CUDA_LA_SUBSEG): 65 chunks in 3 segments of 22, phase A on 2 of 11 chunks a
  // segment (the stage ring wraps) or 11 of 2. At D = 256 and 128 phase A covers two E-slices a CTA
  // where E is a multiple of 128 (E = 384: three such CTAs a head), or one (LIGHTNING_CUDA_LA_WIDE_STATE=0).
  const splitCases: [number, number, number, boolean][] = [
    [128, 128, 2, true],
    [128, 128, 11, true],
    [128, 128, 2, false],
    [256, 128, 2, true],
    [256, 128, 11, true],
    [256, 384, 2, true],
    [256, 128, 2, false],
    [64, 64, 2, true],
    [64, 64, 11, true],
  ];
  for (const [D, E, sub, wide] of splitCases)
    it(`forward, backward through 3 segments, phase A on ${sub} sub-segments each, D ${D} E ${E}${wide ? "" : ", one E-slice a CTA"}`, async () => {
      process.env.LIGHTNING_CUDA_LA_SEGMENTS = "3";
      process.env.LIGHTNING_CUDA_LA_SUBSEG = String(sub);
      if (!wide) process.env.LIGHTNING_CUDA_LA_WIDE_STATE = "0";
      try {
        await forwardBackward({ B: 1, H: 2, T: 4099, D, E, dtype: "bf16", state: sub === 2 });
      } finally {
        delete process.env.LIGHTNING_CUDA_LA_SEGMENTS;
        delete process.env.LIGHTNING_CUDA_LA_SUBSEG;
        delete process.env.LIGHTNING_CUDA_LA_WIDE_STATE;
      }
    });

  // On Hopper every pass loads its tiles by the copy engine (TMA): the forward, the backward's dq
  // pass, its dv and dk passes in reversed time (the chunk's rows read in forward order and indexed
  // backwards) and phase A of the sequence split; LIGHTNING_CUDA_LA_TMA=0 runs the same loops on
  // cp.async loads. In forward time the same bytes reach the same arithmetic, so the output, the
  // final state and dq must have equal bits. The reversed passes sum each chunk's tokens in the other
  // order, so dk, dv and dS0 may round differently: they must agree to 1e-3 relative RMS, far
  // tighter than either's 5e-3 bound against float64 (the cases above) and far looser than any
  // misplaced row, mask or weight would leave. At odd lengths (rows outside the sequence or the
  // chunk), at each head shape, with an initial state, and through the sequence split. Elsewhere
  // both runs take cp.async.
  const tmaCases: [number, number, number, number, DType][] = [
    [128, 128, 1, 1000, "bf16"],
    [256, 128, 2, 515, "bf16"],
    [64, 64, 2, 130, "f16"],
    [128, 128, 1, 4099, "f16"],
    [256, 128, 1, 3001, "bf16"],
  ];
  for (const [D, E, B, Tn, dtype] of tmaCases)
    it(`TMA loads against cp.async loads: forward, state and every gradient, D ${D} E ${E} B ${B} T ${Tn} ${dtype}`, async () => {
      const rng = seeded(Tn + D);
      const H = 2;
      const on = { backend: gpu(), dtype, std: 0.3 };
      const [q, k, v, dO] = [rng.tensor([B, H, Tn, D], on), rng.tensor([B, H, Tn, D], on), rng.tensor([B, H, Tn, E], on), rng.tensor([B, H, Tn, E], on)];
      const S0 = rng.tensor([B, H, D, E], { backend: gpu(), std: 0.3 });
      const dS = rng.tensor([B, H, D, E], { backend: gpu(), std: 0.3 });
      const slopes = T.tensor(T.tnlSlopes(H, 0, 2).map(Math.fround), [H], { backend: gpu() });
      const run = async (): Promise<Float64Array[]> => {
        const { output, state } = T.lightningAttention(q, k, v, slopes, { initialState: S0, returnState: true });
        const g = T.lightningAttentionBackward(q, k, v, slopes, dO, dS, { initialState: S0 });
        const out = [await host(output), await host(state), await host(g.dq), await host(g.dk), await host(g.dv), await host(g.dInitialState!)];
        for (const t of [output, state, g.dq, g.dk, g.dv, g.dInitialState]) t?.dispose();
        return out;
      };
      const tma = await run();
      process.env.LIGHTNING_CUDA_LA_TMA = "0";
      let plain: Float64Array[];
      try {
        plain = await run();
      } finally {
        delete process.env.LIGHTNING_CUDA_LA_TMA;
      }
      ["output", "final state", "dq"].forEach((label, i) => {
        expect(tma[i].length, label).toBe(plain[i].length);
        expect(tma[i].filter((x, j) => !Object.is(x, plain[i][j])).length, `${label}: elements that differ`).toBe(0);
      });
      const rounding = ["dk", "dv", "dInitialState"].map((label, i) => `${label} ${closeness(tma[i + 3], plain[i + 3]).relRms.toExponential(1)}`);
      console.log(`TMA against cp.async, D ${D} E ${E} T ${Tn} ${dtype}: relative RMS ${rounding.join(", ")}`);
      ["dk", "dv", "dInitialState"].forEach((label, i) => checkClose(label, tma[i + 3], plain[i + 3], 1e-3));
      for (const t of [q, k, v, dO, S0, dS, slopes]) t.dispose();
    });

  // The forward's segment states (attrs.segmentTokens) and the backward that reads them: the
  // states against the CPU's float64 recurrence, and every output and gradient as above. L is the
  // backend's own (its split at B = 1, where the dq pass takes them) or one it does not split by
  // (1,024: the forward runs on those segments, the dq pass makes its own; 8,192 > T: the forward
  // runs unsplit and its one state is the initial state).
  const segmentCases: [number, number, number | "own", boolean][] = [
    [128, 128, "own", true],
    [128, 128, "own", false],
    [128, 128, 1024, true],
    [128, 128, 8192, true],
    [64, 64, 8192, false],
    [256, 128, "own", true],
    [256, 128, 1024, false],
    [64, 64, "own", false],
  ];
  for (const [D, E, asked, state] of segmentCases)
    it(`segment states: forward keeps them every ${asked === "own" ? "(own split)" : asked} tokens, backward reads them, D ${D} E ${E}${state ? ", initial state" : ""}`, async () => {
      const [B, H, Tn] = [1, 2, 4099];
      const rng = seeded(D + E + Tn + (state ? 1 : 0));
      const on = { backend: gpu(), dtype: "bf16" as DType, std: 0.3 };
      const q = rng.tensor([B, H, Tn, D], on);
      const k = rng.tensor([B, H, Tn, D], on);
      const v = rng.tensor([B, H, Tn, E], on);
      const dO = rng.tensor([B, H, Tn, E], on);
      const dS = rng.tensor([B, H, D, E], { backend: gpu(), std: 0.3 });
      const S0 = state ? rng.tensor([B, H, D, E], { backend: gpu(), std: 0.3 }) : undefined;
      const slopeValues = T.tnlSlopes(H, 0, 2).map(Math.fround);
      const slopes = T.tensor(slopeValues, [H], { backend: gpu() });
      const own = gpu().lightningSegmentTokens?.({ dtype: "bf16", B, H, T: Tn, D, E }) ?? 0;
      if (asked === "own") expect(own > 0 && own % 64 === 0, `lightningSegmentTokens ${own}`).toBe(true);
      const L = asked === "own" ? own : asked;
      const attrs = { blockSize: 64, impl: "chunked" as const, hasInitialState: state, segmentTokens: L };
      const inputs = [q, k, v, slopes, ...(S0 ? [S0] : [])];
      const [o, Sf, seg] = T.runOp("lightningAttention", inputs, attrs);
      expect(seg.shape).toEqual([B, H, Math.ceil(Tn / L), D, E]);
      // The float64 states: the CPU's recurrence on the values the GPU tensors hold.
      const cpu = T.createCpuBackend();
      const f64 = async (t: Tensor) => T.tensor(await host(t), t.shape, { dtype: "f64", backend: cpu });
      const cpuInputs = [await f64(q), await f64(k), await f64(v), T.tensor(slopeValues, [H], { backend: cpu }), ...(S0 ? [await f64(S0)] : [])];
      const wantSeg = T.runOp("lightningAttention", cpuInputs, { ...attrs, impl: "recurrent" })[2];
      checkClose("segment states", await host(seg), await wantSeg.data(), BOUND.bf16);
      const want = lightningOracle({ B, H, T: Tn, D, E }, await host(q), await host(k), await host(v), slopeValues, S0 ? await host(S0) : null, await host(dO), await host(dS));
      checkClose("output", await host(o), want.o, BOUND.bf16);
      checkClose("final state", await host(Sf), want.S, BOUND.bf16);
      const [dq, dk, dv, dS0] = T.runOp("lightningAttentionBackward", [q, k, v, slopes, dO, dS, ...(S0 ? [S0] : []), seg], attrs);
      checkClose("dq", await host(dq), want.dq, BOUND.bf16);
      checkClose("dk", await host(dk), want.dk, BOUND.bf16);
      checkClose("dv", await host(dv), want.dv, BOUND.bf16);
      if (S0) checkClose("dInitialState", await host(dS0), want.dS0!, BOUND.bf16);
      for (const t of [q, k, v, dO, dS, S0, slopes, o, Sf, seg, dq, dk, dv, dS0, wantSeg, ...cpuInputs]) t?.dispose();
    });

  it("segment states through autograd: the tape saves them and the backward reads them (B = 1, bf16)", async () => {
    const [B, H, Tn, D, E] = [1, 2, 3001, 128, 128];
    const rng = seeded(4242);
    const on = { backend: gpu(), dtype: "bf16" as DType, std: 0.3 };
    const q = rng.tensor([B, H, Tn, D], on);
    const k = rng.tensor([B, H, Tn, D], on);
    const v = rng.tensor([B, H, Tn, E], on);
    const dO = rng.tensor([B, H, Tn, E], on);
    const slopeValues = T.tnlSlopes(H, 0, 2).map(Math.fround);
    const slopes = T.tensor(slopeValues, [H], { backend: gpu() });
    expect(gpu().lightningSegmentTokens?.({ dtype: "bf16", B, H, T: Tn, D, E }) ?? 0).toBeGreaterThan(0);
    const seen: number[] = [];
    const stop = T.addOpObserver((r) => {
      if (r.op === "lightningAttentionBackward") seen.push(r.inputs.length);
    });
    const pulled = vjp((a: Tensor, b: Tensor, c: Tensor) => T.lightningAttention(a, b, c, slopes), q, k, v);
    const [dq, dk, dv] = pulled.vjp(dO) as Tensor[];
    stop();
    expect(seen).toEqual([7]);
    const want = lightningOracle({ B, H, T: Tn, D, E }, await host(q), await host(k), await host(v), slopeValues, null, await host(dO), new Float64Array(B * H * D * E));
    checkClose("output", await host(pulled.out), want.o, BOUND.bf16);
    checkClose("dq", await host(dq), want.dq, BOUND.bf16);
    checkClose("dk", await host(dk), want.dk, BOUND.bf16);
    checkClose("dv", await host(dv), want.dv, BOUND.bf16);
    for (const t of [q, k, v, dO, slopes, pulled.out, dq, dk, dv]) t.dispose();
  });

  it("segment states: LIGHTNING_CUDA_LA_SEGMENT_STATES=0 names none, another value is refused", () => {
    const dims = { dtype: "bf16" as DType, B: 1, H: 2, T: 4099, D: 128, E: 128 };
    expect(gpu().lightningSegmentTokens!(dims)).toBeGreaterThan(0);
    try {
      process.env.LIGHTNING_CUDA_LA_SEGMENT_STATES = "0";
      expect(gpu().lightningSegmentTokens!(dims)).toBe(0);
      process.env.LIGHTNING_CUDA_LA_SEGMENT_STATES = "yes";
      expect(() => gpu().lightningSegmentTokens!(dims)).toThrow(/^LIGHTNING_CUDA_LA_SEGMENT_STATES: expected 0 or 1, got 'yes'$/);
    } finally {
      delete process.env.LIGHTNING_CUDA_LA_SEGMENT_STATES;
    }
  });

  it("segment states: asked of the f32 kernels, a clear error", () => {
    const on = { backend: gpu(), dtype: "f32" as DType, std: 0.3 };
    const rng = seeded(5);
    const [q, k, v] = [rng.tensor([1, 2, 130, 32], on), rng.tensor([1, 2, 130, 32], on), rng.tensor([1, 2, 130, 32], on)];
    const slopes = T.tensor(T.tnlSlopes(2, 0, 2), [2], { backend: gpu() });
    expect(gpu().lightningSegmentTokens?.({ dtype: "f32", B: 1, H: 2, T: 130, D: 32, E: 32 })).toBe(0);
    expect(() => T.runOp("lightningAttention", [q, k, v, slopes], { blockSize: 64, impl: "chunked", hasInitialState: false, segmentTokens: 64 })).toThrow(
      /segment states are kept by the tensor-core kernels only .* this call runs v1/,
    );
    for (const t of [q, k, v, slopes]) t.dispose();
  });

  it("state carry: [X1; X2] equals X1 → state → X2, and decode steps continue the forward", async () => {
    const rng = seeded(99);
    const [B, H, T1, T2, D, E] = [1, 2, 300, 129, 128, 128];
    const on = { backend: gpu(), dtype: "bf16" as DType, std: 0.3 };
    const q = rng.tensor([B, H, T1 + T2, D], on);
    const k = rng.tensor([B, H, T1 + T2, D], on);
    const v = rng.tensor([B, H, T1 + T2, E], on);
    const slopes = T.tensor(T.tnlSlopes(H, 1, 4), [H], { backend: gpu() });
    const whole = T.lightningAttention(q, k, v, slopes, { returnState: true });
    const part = (x: Tensor, a: number, b: number) => T.slice(x, [0, 0, a, 0], [B, H, b, x.shape[3]]);
    const first = T.lightningAttention(part(q, 0, T1), part(k, 0, T1), part(v, 0, T1), slopes, { returnState: true });
    const second = T.lightningAttention(part(q, T1, T1 + T2), part(k, T1, T1 + T2), part(v, T1, T1 + T2), slopes, { initialState: first.state, returnState: true });
    checkClose("second half", await host(second.output), await host(part(whole.output, T1, T1 + T2)), 5e-3);
    checkClose("state", await host(second.state), await host(whole.state), 5e-3);
    // Three decode steps from the state after T1 tokens reproduce outputs T1, T1+1, T1+2.
    let state = first.state;
    for (let t = T1; t < T1 + 3; t++) {
      const row = (x: Tensor) => T.reshape(part(x, t, t + 1), [B, H, x.shape[3]]);
      const step = T.lightningStep(row(q), row(k), row(v), slopes, state);
      checkClose(`step ${t}`, await host(step.output), await host(row(whole.output)), 1e-2);
      state = step.state;
    }
  });
});
