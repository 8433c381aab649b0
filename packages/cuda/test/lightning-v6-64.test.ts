/**
 * Lightning Attention at D = E = 64 on the wgmma kernels (version 6), the default at this width unless
 * LIGHTNING_CUDA_LA_V6_64=0 (read once per process): this file sets it to 1 before its first attention
 * call, whatever the environment says (vitest runs each test file in its own process). Version 6 picks 2, 3 or 4 stages of loads per
 * CTA from how many CTAs the grid has per SM (KERNELS.md, "v6 at D = E = 64"); the cases are sized
 * from the GPU's SM count to land in each of the three, plus the split of a long batch-1 sequence,
 * at odd lengths, bf16 and f16, with and without an initial state, forward and backward, against
 * the float64 recurrence on the CPU backend. LIGHTNING_CUDA_DEBUG=1 prints the kernel each call ran
 * (on a Hopper GPU: "v6 wgmma D=64 ... N stages"). Skipped, with the reason printed, where the CUDA
 * backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import * as T from "@lightning-ts/tensor";
import { type Backend, type DType } from "@lightning-ts/tensor";
import { closeness, describeBackends, seeded } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import type { CudaBackend } from "../src/index.js";
import { host, lightningOracle } from "./lightning-oracle.js";
import "./setup.js";

/** `got` within relative RMS `bound` of `want` (the float64 oracle). */
function checkClose(label: string, got: ArrayLike<number>, want: ArrayLike<number>, bound: number): void {
  expect(closeness(got, want).relRms, label).toBeLessThanOrEqual(bound);
}

process.env.LIGHTNING_CUDA_LA_V6_64 = "1";
process.env.LIGHTNING_CUDA_DEBUG ??= "1";

const BOUND: Record<string, number> = { f16: 2e-3, bf16: 5e-3 };
const D = 64;
const E = 64;

interface Case {
  label: string;
  B: number;
  H: number;
  T: number;
  dtype: DType;
  state: boolean;
}

/**
 * Batch and head counts whose (b·h) pairs make one CTA each (E = 64, one segment: 2·pairs ≥ SMs)
 * and fill the GPU to about 1, 2 and 3 CTAs per SM: 4, 3 and 2 stages.
 */
function cases(sms: number, dtype: DType): Case[] {
  const perSm = [
    ["4 stages", Math.ceil(sms / 2) + 3],
    ["3 stages", sms + 5],
    ["2 stages", 2 * sms + 7],
  ] as const;
  return [
    ...perSm.map(([label, pairs], i) => ({ label, B: Math.ceil(pairs / (3 + i)), H: 3 + i, T: [257, 193, 130][i], dtype, state: i !== 1 })),
    { label: "sequence split", B: 1, H: 2, T: 2049, dtype, state: true },
    { label: "one chunk", B: 2, H: 2, T: 63, dtype, state: false },
  ];
}

await describeBackends("Lightning Attention, D = E = 64 on version 6", (gpu: () => Backend) => {
  // The SM count is known only once the backend has started, inside the test.
  for (const dtype of ["bf16", "f16"] as DType[]) {
    it(`${dtype}: matches the float64 recurrence where 1, 2 and 3 CTAs share an SM, and through the sequence split`, async () => {
      const sms = (gpu() as CudaBackend).info.smCount;
      for (const c of cases(sms, dtype)) {
        const tag = `${c.label} ${JSON.stringify(c)}`;
        const rng = seeded(c.T * 13 + c.B * c.H);
        const on = { backend: gpu(), dtype: c.dtype, std: 0.3 };
        const q = rng.tensor([c.B, c.H, c.T, D], on);
        const k = rng.tensor([c.B, c.H, c.T, D], on);
        const v = rng.tensor([c.B, c.H, c.T, E], on);
        const dO = rng.tensor([c.B, c.H, c.T, E], on);
        const dS = rng.tensor([c.B, c.H, D, E], { backend: gpu(), std: 0.3 });
        const S0 = c.state ? rng.tensor([c.B, c.H, D, E], { backend: gpu(), std: 0.3 }) : undefined;
        const slopeValues = T.tnlSlopes(c.H, 0, 2).map(Math.fround);
        const slopes = T.tensor(slopeValues, [c.H], { backend: gpu() });
        const want = lightningOracle({ ...c, D, E }, await host(q), await host(k), await host(v), slopeValues, S0 ? await host(S0) : null, await host(dO), await host(dS));
        const { output, state } = T.lightningAttention(q, k, v, slopes, { initialState: S0, returnState: true });
        const bound = BOUND[c.dtype];
        checkClose(`${tag} output`, await host(output), want.o, bound);
        checkClose(`${tag} final state`, await host(state), want.S, bound);
        const g = T.lightningAttentionBackward(q, k, v, slopes, dO, dS, { initialState: S0 });
        checkClose(`${tag} dq`, await host(g.dq), want.dq, bound);
        checkClose(`${tag} dk`, await host(g.dk), want.dk, bound);
        checkClose(`${tag} dv`, await host(g.dv), want.dv, bound);
        if (S0) checkClose(`${tag} dInitialState`, await host(g.dInitialState!), want.dS0!, bound);
        for (const t of [q, k, v, dO, dS, S0, slopes, output, state, g.dq, g.dk, g.dv, g.dInitialState]) t?.dispose();
      }
    });
  }
});
