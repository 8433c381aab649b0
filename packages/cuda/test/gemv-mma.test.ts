/**
 * `fusedLinear` on the tensor-core kernel of native/gemv_mma.cu (5–64 rows of f16/bf16, where
 * LIGHTNING_CUDA_GEMV_MMA=1; off by default): checked against the float64 reference and bound of
 * packages/tensor/test/fused-linear-oracle.ts (one rounding, f32 sums), at the odd shapes also
 * against the decomposition run on the CPU backend, at 5, 8, 17, 33 and 64 rows (every tile
 * count of 8 tokens, full and partial) and at 65, above the range, where the op must run the
 * chain of ops bit for bit. Shapes of the 436M TNL's decode step (1,024 → 4,096 normed, 1,024 → 2,816 twice
 * with the product, 2,816 → 1,024 with the residual, 1,024 → 1,024 with norm·gate and residual)
 * and odd ones (N not a whole block, K not a whole stage, K > 4,096 normed in nn.cu's block order,
 * K with no whole 16-byte packs: the chain). `qkvuProjection` on the same kernel with splitQkvu as
 * its epilogue against fusedLinear then splitQkvu, bit for bit. BatchDecoder at 5–7 rows (the
 * fixture model: d 64, GLU 176): graph replays with the eager bits, logits within bf16 rounding of
 * the CPU's. Then a layer's four in a recorded CUDA graph, with
 * programmatic dependent launch on and off: the replay's bits are the eager run's. Skipped, with
 * the reason printed, where the CUDA backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is
 * a failure.
 *
 * Letters: x [R, K], w and w2 [N, K], gate [R, K], residual [R, N], y [R, N].
 */
import * as T from "@lightning-ts/tensor";
import { assertClose, describeBackends, seeded } from "@lightning-ts/testing";
import { FIXTURE_DIR } from "@lightning-ts/testing/tnl-fixture";
import { BatchDecoder, disposeParams, disposeState, loadCheckpoint, prefill, type TnlState } from "@lightning-ts/tnl";
import { afterEach, beforeEach, expect, it } from "vitest";
import { chain, expectWithin, type FusedInputs, makeInputs, optionsOf, reference, VARIANTS, type Variant } from "../../tensor/test/fused-linear-oracle.js";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import "./setup.js";

const cpu = T.createCpuBackend();
type Half = "bf16" | "f16";
type Switch = "LIGHTNING_CUDA_GEMV_MMA" | "LIGHTNING_CUDA_PDL";

/** Sets environment variables the native side reads at each launch, for the calls of `fn`. */
function withEnv<R>(vars: Partial<Record<Switch, string>>, fn: () => R): R {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(before)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
const MMA = { LIGHTNING_CUDA_GEMV_MMA: "1" } as const;

/** Whether the tensor-core kernel takes the op: 5–64 rows of f16/bf16, K a whole number of 16-byte packs. */
function mmaApplies(R: number, K: number): boolean {
  return R >= 5 && R <= 64 && K % 8 === 0;
}

async function expectSameBits(got: T.Tensor, want: T.Tensor, label: string): Promise<void> {
  expect([got.dtype, got.shape], label).toEqual([want.dtype, want.shape]);
  const [a, b] = [await got.bytes(), await want.bytes()];
  expect(a.findIndex((x, j) => x !== b[j]), `${label}: first differing byte`).toBe(-1);
}

async function onCpu(i: FusedInputs): Promise<FusedInputs> {
  const copy = async (t?: T.Tensor) => (t ? T.tensor(await t.data(), t.shape, { dtype: t.dtype, backend: cpu }) : undefined);
  const [x, w, gate, w2, residual] = await Promise.all([copy(i.x), copy(i.w), copy(i.gate), copy(i.w2), copy(i.residual)]);
  return { x: x!, w: w!, gate, w2, residual };
}

await describeBackends("fusedLinear on tensor cores (native/gemv_mma.cu, LIGHTNING_CUDA_GEMV_MMA=1)", (backend) => {
  const gpu = () => backend() as CudaBackend;
  const rng = seeded(7411);
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });

  /**
   * One case with the switch on: within the float64 bound, within the CPU decomposition's (with
   * `withCpu`: the host's float64 sums and its chain take seconds at the model's shapes), the same
   * bits on a second run (a fixed order of sums); where the kernel does not apply, the bits of the
   * chain on CUDA. Returns whether the result differs from the switch-off run's anywhere.
   */
  async function check(R: number, N: number, K: number, v: Variant, dtype: Half, withCpu: boolean): Promise<boolean> {
    const frame = T.beginScope();
    try {
      const label = `R ${R}, [N, K] [${N}, ${K}], ${v.name}, ${dtype}`;
      const i = makeInputs(rng, R, K, N, v, dtype, gpu());
      const [y, again] = withEnv(MMA, () => [T.fusedLinear(i.x, i.w, optionsOf(i, v)), T.fusedLinear(i.x, i.w, optionsOf(i, v))]);
      const off = withEnv({ LIGHTNING_CUDA_GEMV_MMA: "0" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, v)));
      expect([y.dtype, y.shape], label).toEqual([dtype, [R, N]]);
      const fused = mmaApplies(R, K);
      const got = Float64Array.from(await y.data());
      const gpuRef = await reference(i, v, fused ? "fused" : "chain");
      expectWithin(got, gpuRef, `${label}: vs float64`);
      if (withCpu) {
        const host = await onCpu(i);
        const hostY = T.fusedLinear(host.x, host.w, optionsOf(host, v));
        const hostRef = await reference(host, v, "chain");
        expectWithin(got, { y: Float64Array.from(await hostY.data()), bound: hostRef.bound.map((b, j) => b + gpuRef.bound[j]) }, `${label}: vs the CPU`);
      }
      await expectSameBits(again, y, `${label}: a second run`);
      if (!fused) await expectSameBits(y, chain(i, v), `${label}: outside the kernel's range, the chain on CUDA`);
      const [a, b] = [await y.bytes(), await off.bytes()];
      return a.some((x, j) => x !== b[j]);
    } finally {
      T.endScope(frame);
    }
  }

  // Every count of 8-token tiles, full and partial, and one row above the range.
  const ROWS = [5, 8, 17, 33, 64, 65];
  const MODEL_ROWS: Record<Half, number[]> = { bf16: ROWS, f16: [5, 17, 64, 65] };
  // [N, K, variant]: the decode step's four matmuls at their shapes and parts.
  const MODEL: [number, number, Variant][] = [
    [4096, 1024, VARIANTS[1]],
    [2816, 1024, VARIANTS[4]],
    [1024, 2816, VARIANTS[3]],
    [1024, 1024, VARIANTS[5]],
  ];
  // [N, K]: a lone row, N not a whole block (of 32 rows, 16 with the product), K shorter than a
  // stage of 128 and not a whole one, K > 4,096 (nn.cu's block-order norm), K with no whole packs.
  const ODD: [number, number][] = [[1031, 40], [37, 1032], [1, 264], [45, 8], [19, 6152], [45, 1031]];
  for (const dtype of ["bf16", "f16"] as const) {
    it(`the 436M decode step's four at ${MODEL_ROWS[dtype].join(", ")} rows (${dtype})`, async () => {
      let differs = false;
      for (const R of MODEL_ROWS[dtype]) for (const [N, K, v] of MODEL) differs = (await check(R, N, K, v, dtype, false)) || differs;
      // The switch must choose the kernel: its sums and one rounding give other bits than the chain somewhere.
      expect(differs, "some output differs from LIGHTNING_CUDA_GEMV_MMA=0's").toBe(true);
    }, 600_000);
    // Each variant and odd shape at one row count, the counts taken in turn: every pair of the
    // three lists meets.
    it(`every part on and off, odd sizes, 5–65 rows (${dtype})`, async () => {
      for (const [vi, v] of VARIANTS.entries())
        for (const [si, [N, K]] of ODD.entries()) await check(ROWS[(vi + si) % ROWS.length], N, K, v, dtype, true);
    }, 600_000);
  }

  for (const dtype of ["bf16", "f16"] as const) {
    it(`qkvuProjection: the kernel with splitQkvu as its epilogue gives fusedLinear then splitQkvu bit for bit, 5–65 rows (${dtype})`, async () => {
      // [K, H, hd]: the 436M's (K 1,024, 8 heads of 128: N 4,096) and odd ones; every activation
      // with and without LRPE, the row counts taken in turn.
      const shapes: [number, number, number][] = [[1024, 8, 128], [40, 3, 5], [1032, 2, 7], [1031, 2, 7]];
      let turn = 0;
      for (const [K, H, hd] of shapes)
        for (const withLrpe of [false, true])
          for (const activation of K === 1024 ? (["silu"] as const) : T.QKV_ACTIVATIONS) {
            const B = ROWS[turn++ % ROWS.length];
            const frame = T.beginScope();
            try {
              const x = rng.tensor([B, K], { dtype, std: 2, backend: gpu() });
              const w = rng.tensor([4 * H * hd, K], { dtype, std: 1 / Math.sqrt(K), backend: gpu() });
              const rope = withLrpe
                ? {
                    theta: T.tensor(Array.from({ length: H * hd }, () => 10000 ** -rng.next()), [H, hd], { backend: gpu() }),
                    positions: T.tensor(Array.from({ length: B }, () => rng.int(5000)), [B], { backend: gpu() }),
                  }
                : {};
              const [got, want] = withEnv(MMA, () => [
                T.qkvuProjection(x, w, { heads: H, activation, ...rope }),
                T.splitQkvu(T.fusedLinear(x, w, { norm: {} }), { heads: H, activation, ...rope }),
              ]);
              for (const key of ["q", "k", "v", "u"] as const)
                await expectSameBits(got[key], want[key], `${key}: B ${B}, K ${K}, H ${H}, hd ${hd}, ${activation}, ${withLrpe ? "LRPE" : "no LRPE"}, ${dtype}`);
            } finally {
              T.endScope(frame);
            }
          }
    }, 300_000);
  }

  it("off by default and with 0, the chain's bits; f32 and 65 rows stay on the chain; other values are refused", async () => {
    for (const [R, dtype] of [[8, "bf16"], [64, "f16"], [8, "f32"], [65, "bf16"]] as const) {
      const v = VARIANTS[5];
      const i = makeInputs(rng, R, 1024, 1024, v, dtype, gpu());
      const want = chain(i, v);
      await expectSameBits(withEnv({ LIGHTNING_CUDA_GEMV_MMA: "" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, v))), want, `R ${R} ${dtype}, unset`);
      await expectSameBits(withEnv({ LIGHTNING_CUDA_GEMV_MMA: "0" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, v))), want, `R ${R} ${dtype}, 0`);
      if (dtype === "f32" || R > 64) await expectSameBits(withEnv(MMA, () => T.fusedLinear(i.x, i.w, optionsOf(i, v))), want, `R ${R} ${dtype}, 1`);
    }
    const i = makeInputs(rng, 8, 64, 40, VARIANTS[1], "bf16", gpu());
    expect(() => withEnv({ LIGHTNING_CUDA_GEMV_MMA: "yes" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, VARIANTS[1])))).toThrow(
      /LIGHTNING_CUDA_GEMV_MMA: expected 0 or 1, got 'yes'/,
    );
  });

  it("BatchDecoder at 5–7 rows: graph replays give the eager bits, the CPU's logits within bf16 rounding", async () => {
    const floats = async (t: T.Tensor) => Float64Array.from(await t.data());
    const model = await loadCheckpoint(FIXTURE_DIR, { dtype: "bf16", backend: gpu() });
    const host = await loadCheckpoint(FIXTURE_DIR, { dtype: "bf16", backend: cpu });
    const V = model.config.vocabSize;
    /** `fn` with the CPU as the default backend (the token ids a step makes go there). */
    const onCpu = <R>(fn: () => R): R => {
      const was = T.getBackend();
      T.setBackend(cpu);
      try {
        return fn();
      } finally {
        T.setBackend(was);
      }
    };
    const prompts = [[5, 9, 14], [2], [7, 7, 30, 41], [3, 11], [99, 100, 4], [8], [12, 13, 1]];
    const prefilled = (p: number[], params: typeof model.params): TnlState => {
      const r = prefill(params, model.config, [p], { logits: "last" });
      r.logits.dispose();
      return r.state;
    };
    const defaultBackend = T.getBackend();
    T.setBackend(gpu());
    const withGraphs = new BatchDecoder(model.params, model.config, { capacity: 8 });
    const eager = new BatchDecoder(model.params, model.config, { capacity: 8, graphs: false });
    // One CPU decoder a row, so that each row's reference is the plain batch-1 step.
    const hosts = prompts.map(() => onCpu(() => new BatchDecoder(host.params, host.config, { capacity: 1, graphs: false })));
    const refs = prompts.map((p) => prefilled(p, model.params));
    for (const [r, s] of refs.entries()) {
      withGraphs.add(s);
      eager.add(s);
      onCpu(() => {
        const state = prefilled(prompts[r], host.params);
        hosts[r].add(state);
        disposeState(state);
      });
    }
    for (let k = 0; k < 4; k++) {
      if (k === 2) {
        // 7 rows → 6: the rows move, the bucket stays.
        withGraphs.remove(0);
        eager.remove(0);
        hosts.splice(0, 1, hosts.pop()!)[0].dispose();
      }
      const tokens = hosts.map((_, r) => (17 * k + 5 * r + 1) % V);
      const [a, b] = withEnv(MMA, () => [withGraphs.step(tokens), eager.step(tokens)]);
      const la = await floats(a.logits);
      expect(Array.from(la), `step ${k}: graph vs eager`).toEqual(Array.from(await floats(b.logits)));
      for (const [r, h] of hosts.entries()) {
        const want = await floats(onCpu(() => h.step([tokens[r]])).logits);
        const big = Math.max(...Array.from(want, Math.abs));
        assertClose(la.subarray(r * V, (r + 1) * V), want, { atol: 0.05 * big, rtol: 4e-2, label: `step ${k} row ${r} vs the CPU` });
      }
    }
    refs.forEach(disposeState);
    hosts.forEach((h) => h.dispose());
    withGraphs.dispose();
    eager.dispose();
    disposeParams(model.params);
    disposeParams(host.params);
    T.setBackend(defaultBackend);
  }, 120_000);

  for (const R of [8, 64]) {
    it(`a layer's four in a recorded graph, with and without PDL: replays read the inputs written before them, the eager bits (bf16, ${R} rows)`, async () => {
      const [M, F, hid] = [1024, 2816, 1024];
      const dtype = "bf16";
      const t = (shape: number[], std = 1) => rng.tensor(shape, { dtype, std, backend: gpu() });
      const [o, u, h] = [t([R, hid]), t([R, hid]), t([R, M], 2)];
      const [wOut, w1, w2, w3, wq] = [t([M, hid], 0.03), t([F, M], 0.03), t([F, M], 0.03), t([M, F], 0.02), t([4 * hid, M], 0.03)];
      const theta = T.tensor(Array.from({ length: hid }, () => 10000 ** -rng.next()), [8, 128], { backend: gpu() });
      const positions = T.tensor(Array.from({ length: R }, () => rng.int(5000)), [R], { backend: gpu() });
      // out (norm·gate, residual) → l1·l2 (norm, product) → l3 (residual) → the next layer's
      // projection with its split: each reads what the one before wrote, so a missing wait would
      // read stale values.
      const run = () =>
        T.scope(() => {
          const h1 = T.fusedLinear(o, wOut, { norm: { gate: u }, residual: h });
          const g = T.fusedLinear(h1, w1, { norm: {}, second: w2 });
          const h2 = T.fusedLinear(g, w3, { residual: h1 });
          const next = T.qkvuProjection(h2, wq, { heads: 8, theta, positions });
          return [h1, g, h2, next.q, next.k, next.v, next.u];
        });
      for (const pdl of ["1", "0"]) {
        withEnv({ ...MMA, LIGHTNING_CUDA_PDL: pdl }, () => T.scope(() => void run())); // warm-up outside the recording
        const graph = withEnv({ ...MMA, LIGHTNING_CUDA_PDL: pdl }, () => gpu().captureGraph(run));
        for (let round = 0; round < 3; round++) {
          for (const input of [o, u, h]) {
            const fresh = T.tensor(rng.array(input.size).map((x) => x || 0.5), input.shape, { dtype, backend: cpu });
            gpu().write(input.handle.storage as CudaStorage, await fresh.bytes());
            fresh.dispose();
          }
          graph.replay();
          const eager = withEnv({ ...MMA, LIGHTNING_CUDA_PDL: pdl === "1" ? "0" : "1" }, run);
          for (const [k, r] of graph.result.entries()) await expectSameBits(r, eager[k], `PDL ${pdl}, replay ${round}, output ${k} vs eager with PDL ${pdl === "1" ? "0" : "1"}`);
          const ref = await reference(await onCpu({ x: o, w: wOut, gate: u, residual: h }), VARIANTS[5], "fused");
          expectWithin(Float64Array.from(await graph.result[0].data()), ref, `PDL ${pdl}, replay ${round}: h1 vs float64`);
        }
        graph.dispose();
      }
    }, 300_000);
  }
});
