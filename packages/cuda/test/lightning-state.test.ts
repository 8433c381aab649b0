/**
 * `lightningState` on CUDA (native/lightning_state.cu): the tensor-core kernel (bf16/f16, D and E
 * multiples of 8) and its plain twin (any D and E, f32 too; LIGHTNING_CUDA_STATE=plain), forward
 * and reversed weights, against the float64 definition S = Σ_t w_t k_tᵀ v_t computed on the host
 * from the same stored inputs, and against the CPU backend's decomposition. Fresh seeded inputs;
 * spans of 1 token, odd lengths, lengths that split into several segments (B·H small), the TNL
 * head shapes (64×64, 128×128, the LRPE layer's 256×128) and odd widths (72×40 partial tiles,
 * 5×7 on the twin). Skipped, with the reason printed, where the CUDA backend cannot start; under
 * LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import * as T from "@lightning-ts/tensor";
import { closeness } from "@lightning-ts/tensor/testing";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { afterEach, beforeEach, expect, it } from "vitest";
import { stateDefinition } from "../../tensor/test/lightning-state-oracle.js";
import "./setup.js";

const cpu = T.createCpuBackend();

/** Relative RMS error against float64: the 16-bit rounding of k·w (half an ulp per product), or f32 sums. */
const BOUND = { bf16: 6e-3, f16: 8e-4, f32: 1e-5 } as const;

await describeBackends("lightningState: the tensor-core kernel and its plain twin", (backend) => {
  const rng = seeded(2741);
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
    delete process.env.LIGHTNING_CUDA_STATE;
  });

  async function check(dims: [number, number, number, number, number], dtype: "bf16" | "f16" | "f32", reverse: boolean, twin: boolean) {
    const [B, H, L, D, E] = dims;
    const label = `[B, H, T, D, E] [${dims.join(", ")}] ${dtype}${reverse ? " reversed" : ""}${twin ? " (plain twin)" : ""}`;
    if (twin) process.env.LIGHTNING_CUDA_STATE = "plain";
    else delete process.env.LIGHTNING_CUDA_STATE;
    const frame = T.beginScope();
    try {
      const k = rng.tensor([B, H, L, D], { dtype, backend: backend() });
      const v = rng.tensor([B, H, L, E], { dtype, backend: backend() });
      // From strong decay to almost none, so both ends of the span count.
      const slopeValues = Array.from({ length: H }, (_, h) => [0.25, 0.0005, 0.02][h % 3]);
      const slopes = T.tensor(slopeValues, [H], { backend: backend() });
      const S = T.lightningState(k, v, slopes, { reverse });
      expect([S.dtype, S.shape], label).toEqual(["f32", [B, H, D, E]]);
      const [kh, vh] = [Float64Array.from(await k.data()), Float64Array.from(await v.data())];
      const got = Float64Array.from(await S.data());
      const want = stateDefinition({ B, H, T: L, D, E }, kh, vh, slopeValues, reverse);
      const c = closeness(got, want);
      expect(c.nonFinite, `${label}: non-finite`).toBe(0);
      expect(c.relRms, `${label}: vs float64 ${JSON.stringify(c)}`).toBeLessThan(BOUND[dtype]);
      // The CPU backend runs the decomposition on the same stored values.
      const onCpu = (t: T.Tensor, data: Float64Array) => T.tensor(data, t.shape, { dtype: t.dtype, backend: cpu });
      const host = T.lightningState(onCpu(k, kh), onCpu(v, vh), T.tensor(slopeValues, [H], { backend: cpu }), { reverse });
      expect(closeness(got, Float64Array.from(host.dataSync())).relRms, `${label}: vs the CPU`).toBeLessThan(2 * BOUND[dtype]);
      host.dispose();
    } finally {
      T.endScope(frame);
    }
  }

  const SHAPES: [number, number, number, number, number][] = [
    [1, 2, 1, 64, 64],
    [2, 3, 63, 128, 128],
    [1, 2, 4099, 128, 128], // several segments per (b, h)
    [1, 1, 3001, 256, 128], // the LRPE layer, segments
    [3, 2, 517, 64, 64],
    [1, 3, 1100, 72, 40], // partial tiles
  ];
  for (const dtype of ["bf16", "f16"] as const) {
    it(`the tensor-core kernel at TNL's head shapes and odd ones (${dtype})`, async () => {
      for (const dims of SHAPES) for (const reverse of [false, true]) await check(dims, dtype, reverse, false);
    }, 300_000);
  }
  it("the plain twin: f32, widths that are not multiples of 8, and bf16 against the same bound", async () => {
    for (const reverse of [false, true]) {
      await check([2, 3, 77, 5, 7], "f32", reverse, false);
      await check([1, 2, 2050, 13, 9], "f32", reverse, false);
      await check([1, 2, 2050, 64, 64], "bf16", reverse, true);
      await check([2, 2, 33, 128, 128], "f16", reverse, true);
    }
  }, 300_000);
});
