/**
 * `fusedLinear` on CUDA: one kernel of native/gemv.cu for 1 to 4 rows of f16/bf16 (norm or
 * norm·gate in the prologue, residual and/or the product of two weights in the epilogue), the
 * chain of kernels of its decomposition otherwise (5 rows, f32, K not a whole number of 16-byte
 * packs, LIGHTNING_CUDA_GEMV=0), except that at 5–256 rows of f16/bf16 a residual without a second
 * weight is added by cuBLASLt inside the product (one rounding). Checked against the float64 reference and bound of
 * packages/tensor/test/fused-linear-oracle.ts, against the decomposition run on the CPU backend,
 * and bit for bit against the chain of ops run on CUDA where the two must agree: wherever the
 * op falls back, and for the fused kernel without an epilogue (its norm has the rmsNorm kernel's
 * bits, its sums the small-M matmul's); and `qkvuProjection`, fusedLinear's kernel with splitQkvu
 * as its epilogue, against the two. Shapes of the 436M TNL's decode step (1,024 → 4,096,
 * 1,024 → 2,816 twice, 2,816 → 1,024, 1,024 → 1,024, the 50,272-row head) and odd ones; in a
 * recorded CUDA graph, a layer's four in a row, with programmatic dependent launch on and off
 * (LIGHTNING_CUDA_PDL): the same bits either way, and as an eager run. Skipped, with the reason
 * printed, where the CUDA backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 *
 * Letters: x [R, K], w and w2 [N, K], gate [R, K], residual [R, N], y [R, N].
 */
import * as T from "@lightning-ts/tensor";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { chain, expectWithin, type FusedInputs, makeInputs, optionsOf, reference, VARIANTS, type Variant } from "../../tensor/test/fused-linear-oracle.js";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import { withEnv } from "./matmul-oracle.js";
import "./setup.js";

const cpu = T.createCpuBackend();
type Float = "bf16" | "f16" | "f32";
const BYTES: Record<Float, number> = { bf16: 2, f16: 2, f32: 4 };

/** Whether the op runs as one kernel (native/gemv.cu `fusedLinear`): 1–4 rows of f16/bf16, whole 16-byte packs. */
function fusedApplies(R: number, K: number, dtype: Float): boolean {
  return dtype !== "f32" && R >= 1 && R <= 4 && (K * BYTES[dtype]) % 16 === 0 && R * K * BYTES[dtype] + 8 * 16 * 4 <= 99 * 1024;
}

/**
 * Whether the output is rounded once from f32 as the fused kernel rounds it: the kernel's cases, and
 * above its rows (5–256 rows of f16/bf16) a residual without a second weight, which cuBLASLt adds
 * as the product's C operand (native/matmul.cu; at 1–4 rows the kernel's fallback is the chain).
 */
function roundedOnce(R: number, K: number, dtype: Float, v: Variant): boolean {
  return fusedApplies(R, K, dtype) || (dtype !== "f32" && R > 4 && R <= 256 && v.residual && !v.product);
}

async function expectSameBits(got: T.Tensor, want: T.Tensor, label: string): Promise<void> {
  expect([got.dtype, got.shape], label).toEqual([want.dtype, want.shape]);
  const [a, b] = [await got.bytes(), await want.bytes()];
  expect(a.findIndex((x, j) => x !== b[j]), `${label}: first differing byte`).toBe(-1);
}

/** The same inputs on the CPU backend. */
async function onCpu(i: FusedInputs): Promise<FusedInputs> {
  const copy = async (t?: T.Tensor) => (t ? T.tensor(await t.data(), t.shape, { dtype: t.dtype, backend: cpu }) : undefined);
  const [x, w, gate, w2, residual] = await Promise.all([copy(i.x), copy(i.w), copy(i.gate), copy(i.w2), copy(i.residual)]);
  return { x: x!, w: w!, gate, w2, residual };
}

await describeBackends("fusedLinear: the small-M kernel with a norm prologue and a residual/product epilogue", (backend) => {
  const gpu = () => backend() as CudaBackend;
  const rng = seeded(6133);
  // These cases are the small-M kernel's and the chain's: above 4 rows the tensor-core kernel
  // (test/gemv-mma.test.ts) would take the op where LIGHTNING_CUDA_GEMV_MMA=1, so the switch is held
  // off here whatever the process was started with.
  let mmaSwitch: string | undefined;
  beforeAll(() => {
    mmaSwitch = process.env.LIGHTNING_CUDA_GEMV_MMA;
    process.env.LIGHTNING_CUDA_GEMV_MMA = "0";
  });
  afterAll(() => {
    if (mmaSwitch === undefined) delete process.env.LIGHTNING_CUDA_GEMV_MMA;
    else process.env.LIGHTNING_CUDA_GEMV_MMA = mmaSwitch;
  });
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });

  /** One case: the op on CUDA against the reference, the CPU decomposition and (where they must agree) the CUDA chain. */
  async function check(R: number, N: number, K: number, v: Variant, dtype: Float): Promise<void> {
    const frame = T.beginScope();
    try {
      const label = `R ${R}, [N, K] [${N}, ${K}], ${v.name}, ${dtype}`;
      const i = makeInputs(rng, R, K, N, v, dtype, gpu());
      const y = T.fusedLinear(i.x, i.w, optionsOf(i, v));
      expect([y.dtype, y.shape], label).toEqual([dtype, [R, N]]);
      const fused = roundedOnce(R, K, dtype, v);
      const got = Float64Array.from(await y.data());
      expectWithin(got, await reference(i, v, fused ? "fused" : "chain"), `${label}: vs float64`);
      // The CPU runs the decomposition; each side is within its bound of the reference, so the
      // two are within the sum of the bounds of each other.
      const host = await onCpu(i);
      const hostY = T.fusedLinear(host.x, host.w, optionsOf(host, v));
      const hostRef = await reference(host, v, "chain");
      const gpuRef = await reference(i, v, fused ? "fused" : "chain");
      expectWithin(got, { y: Float64Array.from(await hostY.data()), bound: hostRef.bound.map((b, j) => b + gpuRef.bound[j]) }, `${label}: vs the CPU`);
      if (!fused || (!v.product && !v.residual)) await expectSameBits(y, chain(i, v), `${label}: vs the chain on CUDA`);
    } finally {
      T.endScope(frame);
    }
  }

  // [N, K]: the decode step's (qkvu and the head's norm, l1·l2's product, l3's residual, out's
  // norm·gate and residual), then odd N (a lone row, rows past the last tile), K a multiple of 8
  // shorter than a warp's slice, a long K normed in nn.cu's block order, and K with no whole
  // packs (the chain).
  const MODEL: [number, number, Variant][] = [
    [4096, 1024, VARIANTS[1]],
    [2816, 1024, VARIANTS[4]],
    [1024, 2816, VARIANTS[3]],
    [1024, 1024, VARIANTS[5]],
  ];
  const ODD: [number, number][] = [[1031, 40], [37, 1032], [1, 264], [3, 8], [61, 6144], [45, 1031]];
  for (const dtype of ["bf16", "f16", "f32"] as const) {
    it(`the 436M decode step's four at 1–5 rows (${dtype})`, async () => {
      for (let R = 1; R <= 5; R++) for (const [N, K, v] of MODEL) await check(R, N, K, v, dtype);
    }, 300_000);
    it(`every part on and off, odd sizes, 1–5 rows (${dtype})`, async () => {
      for (const v of VARIANTS) for (const R of [1, 2, 3, 4, 5]) for (const [N, K] of ODD) await check(R, N, K, v, dtype);
    }, 300_000);
  }

  for (const dtype of ["bf16", "f16", "f32"] as const) {
    it(`qkvuProjection: fusedLinear then splitQkvu on CUDA, bit for bit, 1–5 rows, LRPE or not, every activation (${dtype})`, async () => {
      // [K, H, hd]: the 436M's (K 1,024, 8 heads of 128), odd ones, K with no whole packs (the chain).
      const shapes: [number, number, number][] = [[1024, 8, 128], [40, 3, 5], [1032, 2, 7], [1031, 2, 7]];
      for (const [K, H, hd] of shapes)
        for (let B = 1; B <= 5; B++)
          for (const withLrpe of [false, true])
            for (const activation of K === 1024 ? (["silu"] as const) : T.QKV_ACTIVATIONS) {
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
                const got = T.qkvuProjection(x, w, { heads: H, activation, ...rope });
                const want = T.splitQkvu(T.fusedLinear(x, w, { norm: {} }), { heads: H, activation, ...rope });
                for (const key of ["q", "k", "v", "u"] as const) {
                  await expectSameBits(got[key], want[key], `${key}: B ${B}, K ${K}, H ${H}, hd ${hd}, ${activation}, ${withLrpe ? "LRPE" : "no LRPE"}, ${dtype}`);
                }
              } finally {
                T.endScope(frame);
              }
            }
    }, 300_000);
  }

  it("the normed vocabulary head, 50,272 × 1,024, at 1 and 4 rows (bf16)", async () => {
    for (const R of [1, 4]) await check(R, 50272, 1024, VARIANTS[1], "bf16");
  }, 300_000);

  it("LIGHTNING_CUDA_GEMV=0 runs the chain (cuBLAS) for every row count; other values of the switches are refused", async () => {
    for (const v of [VARIANTS[5], VARIANTS[4]]) {
      const i = makeInputs(rng, 2, 1024, 1024, v, "bf16", gpu());
      const [y, want] = withEnv("LIGHTNING_CUDA_GEMV", "0", () => [T.fusedLinear(i.x, i.w, optionsOf(i, v)), chain(i, v)]);
      await expectSameBits(y, want, `${v.name}, LIGHTNING_CUDA_GEMV=0`);
    }
    const [x, w] = [rng.tensor([2, 1024], { dtype: "bf16", backend: gpu() }), rng.tensor([4096, 1024], { dtype: "bf16", std: 0.03, backend: gpu() })];
    const [got, want] = withEnv("LIGHTNING_CUDA_GEMV", "0", () => [T.qkvuProjection(x, w, { heads: 8 }), T.splitQkvu(T.fusedLinear(x, w, { norm: {} }), { heads: 8 })]);
    for (const key of ["q", "k", "v", "u"] as const) await expectSameBits(got[key], want[key], `qkvuProjection ${key}, LIGHTNING_CUDA_GEMV=0`);
    const i = makeInputs(rng, 1, 64, 40, VARIANTS[1], "bf16", gpu());
    expect(() => withEnv("LIGHTNING_CUDA_PDL", "yes", () => T.fusedLinear(i.x, i.w, optionsOf(i, VARIANTS[1])))).toThrow(/LIGHTNING_CUDA_PDL: expected 0 or 1, got 'yes'/);
    expect(() => withEnv("LIGHTNING_CUDA_GEMV", "no", () => T.fusedLinear(i.x, i.w, optionsOf(i, VARIANTS[1])))).toThrow(/LIGHTNING_CUDA_GEMV: expected 0 or 1, got 'no'/);
  });

  for (const R of [3, 5]) {
    it(`a layer's four in a recorded graph, with and without PDL: replays read the inputs written before them, the eager bits (bf16, ${R} rows)`, async () => {
      const [M, F, hid] = [1024, 2816, 1024];
      const dtype = "bf16";
      const t = (shape: number[], std = 1) => rng.tensor(shape, { dtype, std, backend: gpu() });
      const [o, u, h] = [t([R, hid]), t([R, hid]), t([R, M], 2)];
      const [wOut, w1, w2, w3, wq] = [t([M, hid], 0.03), t([F, M], 0.03), t([F, M], 0.03), t([M, F], 0.02), t([4 * hid, M], 0.03)];
      const theta = T.tensor(Array.from({ length: hid }, () => 10000 ** -rng.next()), [8, 128], { backend: gpu() });
      const positions = T.tensor(Array.from({ length: R }, () => rng.int(5000)), [R], { backend: gpu() });
      // out (norm·gate, residual) → l1·l2 (norm, product) → l3 (residual) → the next layer's
      // projection and split (norm, LRPE): each reads what the one before wrote, so a missing wait
      // would read stale values.
      const run = () =>
        T.scope(() => {
          const h1 = T.fusedLinear(o, wOut, { norm: { gate: u }, residual: h });
          const g = T.fusedLinear(h1, w1, { norm: {}, second: w2 });
          const h2 = T.fusedLinear(g, w3, { residual: h1 });
          const next = T.qkvuProjection(h2, wq, { heads: 8, theta, positions });
          return [h1, g, h2, next.q, next.k, next.v, next.u];
        });
      for (const pdl of ["1", "0"]) {
        withEnv("LIGHTNING_CUDA_PDL", pdl, () => T.scope(() => void run())); // warm-up outside the recording
        const graph = withEnv("LIGHTNING_CUDA_PDL", pdl, () => gpu().captureGraph(run));
        for (let round = 0; round < 3; round++) {
          for (const input of [o, u, h]) {
            const fresh = T.tensor(rng.array(input.size).map((x) => x || 0.5), input.shape, { dtype, backend: cpu });
            gpu().write(input.handle.storage as CudaStorage, await fresh.bytes());
            fresh.dispose();
          }
          graph.replay();
          const eager = withEnv("LIGHTNING_CUDA_PDL", pdl === "1" ? "0" : "1", run);
          for (const [k, r] of graph.result.entries()) await expectSameBits(r, eager[k], `PDL ${pdl}, replay ${round}, output ${k} vs eager with PDL ${pdl === "1" ? "0" : "1"}`);
          const host = await onCpu({ x: o, w: wOut, gate: u, residual: h });
          const v = VARIANTS[5];
          const ref = await reference(host, v, R <= 4 ? "fused" : "chain");
          expectWithin(Float64Array.from(await graph.result[0].data()), ref, `PDL ${pdl}, replay ${round}: h1 vs float64`);
        }
        graph.dispose();
      }
    }, 120_000);
  }
});
