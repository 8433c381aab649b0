/**
 * The fused AdamW kernel (native/optim.cu) against the CPU backend, which runs the op's
 * decomposition: f32 parameters and moments, f32 or bf16 gradients, with and without the bf16/f16
 * copy of the new parameter, odd sizes (vector body and scalar tail), chained over several steps
 * with the bias corrections of t = 1, 2, 3, 10 and 1000. The kernel does the decomposition's f32
 * ops in its order without FMA contraction, so it is expected to agree to the bit; within an ulp
 * of each result's terms is the bound that must hold. Then AdamW itself on bf16 parameters, CUDA
 * against CPU. Skipped, with the reason printed, where the CUDA backend cannot start; under
 * LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import { AdamW } from "@lightning-ts/autograd/optim";
import * as T from "@lightning-ts/tensor";
import { type AdamwOptions, type Backend, type DType, type Tensor } from "@lightning-ts/tensor";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import "./setup.js";

const cpu = T.createCpuBackend({ threads: 1 });

const SIZES = [[1], [3], [7], [4097], [65, 129], [1000, 3]];
const STEPS = [1, 2, 3, 10, 1000];
const SETTINGS: Omit<AdamwOptions, "step">[] = [
  { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 },
  { lr: 3e-2, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0 },
];

/** The same values as tensors on both backends. */
function pair(values: ArrayLike<number>, shape: number[], dtype: DType, gpu: Backend): [Tensor, Tensor] {
  return [T.tensor(values, shape, { dtype, backend: cpu }), T.tensor(values, shape, { dtype, backend: gpu })];
}

interface Compared {
  /** Elements whose bits differ. */
  differ: number;
  /** Largest |gpu − cpu| over ulp(max(|cpu|, 2⁻¹²⁶)). */
  ulps: number;
}

async function compare(a: Tensor, b: Tensor): Promise<Compared> {
  const [x, y] = [await a.data(), await b.data()];
  let differ = 0;
  let ulps = 0;
  for (let i = 0; i < x.length; i++) {
    if (Object.is(x[i], y[i])) continue;
    differ++;
    const ulp = 2 ** (Math.floor(Math.log2(Math.max(Math.abs(x[i]), 2 ** -126))) - 23);
    ulps = Math.max(ulps, Number.isNaN(x[i]) || Number.isNaN(y[i]) ? Infinity : Math.abs(x[i] - y[i]) / ulp);
  }
  return { differ, ulps };
}

await describeBackends("adamwUpdate kernel vs the CPU", (gpu: () => Backend) => {
  for (const gradDType of ["f32", "bf16"] as const) {
    for (const castTo of [undefined, "bf16", "f16"] as const) {
      it(`f32 param, ${gradDType} grad, castTo ${castTo ?? "none"}: odd sizes, chained steps`, async () => {
        const differences: string[] = [];
        for (const [si, shape] of SIZES.entries()) {
          for (const [oi, settings] of SETTINGS.entries()) {
            const rng = seeded(1000 * si + 10 * oi + (castTo ? 1 : 0));
            const n = shape.reduce((a, b) => a * b, 1);
            let [pc, pg] = pair(rng.array(n), shape, "f32", gpu());
            let [mc, mg] = pair(new Float64Array(n), shape, "f32", gpu());
            let [vc, vg] = pair(new Float64Array(n), shape, "f32", gpu());
            for (const step of STEPS) {
              const [gc, gg] = pair(rng.array(n, 0.1), shape, gradDType, gpu());
              const attrs = { ...settings, step, castTo };
              const want = T.adamwUpdate(pc, gc, mc, vc, attrs);
              const got = T.adamwUpdate(pg, gg, mg, vg, attrs);
              const outputs: [string, Tensor, Tensor][] = [
                ["param", want.param, got.param],
                ["expAvg", want.expAvg, got.expAvg],
                ["expAvgSq", want.expAvgSq, got.expAvgSq],
              ];
              if (castTo) {
                expect(got.half?.dtype).toBe(castTo);
                outputs.push(["half", want.half!, got.half!]);
              } else {
                expect(got.half).toBeUndefined();
              }
              for (const [name, a, b] of outputs) {
                const c = await compare(a, b);
                const label = `${name} ${shape.join("x")} settings ${oi} t=${step}`;
                // The half copy is the param rounded once: a param one f32 ulp off may round to the
                // neighbouring half value, 2¹⁶ (bf16) or 2¹³ (f16) f32 ulps away.
                expect(c.ulps, `${label}: ${c.differ} elements differ`).toBeLessThanOrEqual(name === "half" ? 2 ** 16 : 1);
                if (c.differ > 0) differences.push(`${label}: ${c.differ} of ${n} elements, up to ${c.ulps} ulp`);
              }
              for (const t of [pc, pg, mc, mg, vc, vg, gc, gg]) t.dispose();
              [pc, mc, vc] = [want.param, want.expAvg, want.expAvgSq];
              [pg, mg, vg] = [got.param, got.expAvg, got.expAvgSq];
              want.half?.dispose();
              got.half?.dispose();
            }
            for (const t of [pc, pg, mc, mg, vc, vg]) t.dispose();
          }
        }
        if (differences.length > 0) console.log(`[adamwUpdate] not bit-identical to the CPU:\n  ${differences.join("\n  ")}`);
        expect(differences, "the kernel does the decomposition's f32 ops in its order: bit-identical expected").toEqual([]);
      });
    }
  }

  it("AdamW on bf16 parameters: CUDA state and weights equal the CPU's over three steps", async () => {
    const shapes: Record<string, number[]> = { w: [33, 65], b: [65], norm: [1] };
    const run = async (backend: Backend) => {
      const r = seeded(5);
      let params: Record<string, Tensor> = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, T.tensor(r.array(s.reduce((a, b) => a * b, 1)), s, { dtype: "bf16", backend })]));
      const opt = new AdamW({ lr: 1e-2, weightDecay: 0.1 }, [{ name: "no_decay", match: /^(b|norm)$/, weightDecay: 0 }]);
      for (let step = 0; step < 3; step++) {
        const g = seeded(100 + step);
        const grads = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, T.tensor(g.array(s.reduce((a, b) => a * b, 1)), s, { dtype: "bf16", backend })]));
        params = opt.step(params, grads);
        for (const t of Object.values(grads)) t.dispose();
      }
      const state = opt.stateDict();
      const out: Record<string, number[]> = {};
      for (const [k, t] of Object.entries({ ...params, ...state.tensors })) out[`${k} ${t.dtype}`] = Array.from(await t.data());
      for (const t of [...Object.values(params), ...Object.values(state.tensors)]) t.dispose();
      opt.dispose();
      return out;
    };
    const [want, got] = [await run(cpu), await run(gpu())];
    expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
    // Bit-identical expected; the bound allows an f32 ulp of the state, and the neighbouring bf16 value of a weight.
    for (const k of Object.keys(want)) {
      const rel = k.endsWith("bf16") ? 2 ** -7 : 2 ** -22;
      got[k].forEach((v, i) => expect(Math.abs(v - want[k][i]), `${k}[${i}]: ${v} vs ${want[k][i]}`).toBeLessThanOrEqual(rel * Math.max(1e-3, Math.abs(want[k][i]))));
    }
  });
});
