/**
 * The small-M matrix-vector kernel that `matmul` runs for x·wᵀ with 1 to 4 rows of x
 * (native/gemv.cu), against a float64 oracle and against its plain twin, cuBLAS, which
 * LIGHTNING_CUDA_GEMV=0 selects: the widths of the 436M TNL's decode step (1,024 × 4,096,
 * 2,816 × 1,024, 1,024 × 2,816, the 50,272-row head), odd ones, rows of w that do not fill whole
 * 16-byte packs (left to cuBLAS), M just above the limit, bf16, f16 and f32; and the kernel inside
 * a recorded CUDA graph, as serving replays it. Skipped, with the reason printed, where the CUDA backend
 * cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 *
 * Letters: x (M, K), w (N, K), y (M, N).
 *
 * Error bounds: matmul-oracle.ts (the kernel sums in f32 in chains no longer than K/32 + 24: a
 * lane's slice of K, the warp's shuffles, the K-split partial sums; cuBLAS takes depth K).
 */
import * as T from "@lightning-ts/tensor";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { afterEach, beforeEach, expect, it } from "vitest";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import { boundAt, expectWithin, type Float, operand as sharedOperand, oracle, withEnv } from "./matmul-oracle.js";
import "./setup.js";

const cpu = T.createCpuBackend();
const DTYPES: Float[] = ["bf16", "f16", "f32"];
/** The most rows of x the kernel takes (GEMV_MAX_M of native/gemv.cuh). */
const MAX_M = 4;

const withGemv = <R>(value: "0" | "1", fn: () => R): R => withEnv("LIGHTNING_CUDA_GEMV", value, fn);

const gemvDepth = (K: number) => Math.ceil(K / 32) + 24;
const BYTES: Record<Float, number> = { bf16: 2, f16: 2, f32: 4 };
/**
 * Whether `matmul` takes the kernel for x (M, K)·wᵀ (native/gemv.cu `gemv`): M ≤ 4, rows of w on
 * 16-byte boundaries, x and the partial sums within the 100 KB of shared memory a block may take.
 * Elsewhere both settings run cuBLAS, and the looser bound applies.
 */
function kernelApplies(M: number, K: number, dtype: Float): boolean {
  const sums = 2 ** Math.ceil(Math.log2((M <= 4 ? 2 : 4) * M));
  return M <= MAX_M && (K * BYTES[dtype]) % 16 === 0 && M * K * BYTES[dtype] + 8 * sums * 4 <= 100 * 1024;
}

await describeBackends("small-M matrix-vector kernel (x·wᵀ, M ≤ 4) vs float64 and cuBLAS", (backend) => {
  const gpu = () => backend() as CudaBackend;
  const rng = seeded(3191);
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });

  const operand = (shape: [number, number], dtype: Float) => sharedOperand(rng, gpu(), shape, dtype);

  /** x·wᵀ with the kernel and with cuBLAS, each against the oracle, and against each other. */
  async function check(M: number, [N, K]: [number, number], dtype: Float, w?: [T.Tensor, Float64Array]) {
    const label = `M ${M}, [N, K] [${N}, ${K}] ${dtype}`;
    const [wg, wv] = w ?? (await operand([N, K], dtype));
    const [xg, xv] = await operand([M, K], dtype);
    const fast = Float64Array.from(await withGemv("1", () => T.matmul(xg, wg, { transB: true })).data());
    const plain = Float64Array.from(await withGemv("0", () => T.matmul(xg, wg, { transB: true })).data());
    const want = oracle(xv, wv, M, N, K);
    const kernelBound = (i: number) => boundAt(want, i, dtype, kernelApplies(M, K, dtype) ? gemvDepth(K) : K);
    const cublasBound = (i: number) => boundAt(want, i, dtype, K);
    expectWithin(fast, want.y, kernelBound, `${label}: LIGHTNING_CUDA_GEMV=1 vs float64`);
    expectWithin(plain, want.y, cublasBound, `${label}: cuBLAS vs float64`);
    // Each within its bound of y, so within the sum of the two of each other.
    expectWithin(fast, plain, (i) => kernelBound(i) + cublasBound(i), `${label}: kernel vs cuBLAS`);
  }

  for (const dtype of DTYPES) {
    // [N, K]: the decode step's projections, then odd N (rows past the last tile, a lone row), K
    // a multiple of 8 but shorter than one warp's slice, K with a tail the packs do not cover, and
    // a long K whose x fills most of the shared memory a block may take (f32 at M ≥ 5: cuBLAS).
    const shapes: [number, number][] = [
      [4096, 1024], [2816, 1024], [1024, 2816], [1024, 1024], [1031, 40], [37, 1032], [1, 264], [3, 8],
      [37, 1031], [1031, 37], [515, 1028], [301, 6144],
    ];
    it(`M = 1 … ${MAX_M} and ${MAX_M + 1} (cuBLAS) over decode widths and odd ones (${dtype})`, async () => {
      for (let M = 1; M <= MAX_M + 1; M++)
        for (const s of shapes) {
          const frame = T.beginScope();
          try {
            await check(M, s, dtype);
          } finally {
            T.endScope(frame);
          }
        }
    }, 300_000);
  }

  it("the vocabulary head, 50,272 × 1,024, at M = 1, 4 and 8 (bf16)", async () => {
    const w = await operand([50272, 1024], "bf16");
    for (const M of [1, 4, 8]) {
      const frame = T.beginScope();
      try {
        await check(M, [50272, 1024], "bf16", w);
      } finally {
        T.endScope(frame);
      }
    }
  }, 300_000);

  it("the switch reaches the native side: the kernel and cuBLAS sum in different orders", async () => {
    // f32 sums of 2,816 products in two orders: some of the 4,096 outputs differ in their last bits
    // (were they all equal, LIGHTNING_CUDA_GEMV would not be choosing the path).
    const [x] = await operand([MAX_M, 2816], "f32");
    const [w] = await operand([1024, 2816], "f32");
    const fast = await withGemv("1", () => T.matmul(x, w, { transB: true })).bytes();
    const plain = await withGemv("0", () => T.matmul(x, w, { transB: true })).bytes();
    expect(fast.some((b, i) => b !== plain[i])).toBe(true);
    // Where the kernel does not apply (K = 1,031 is no whole number of 16-byte packs, M = 9 is above
    // the limit, a batch of two, x of 128 KB), both settings run cuBLAS: the same bits.
    const cases = [[[3, 1031], [37, 1031]], [[9, 64], [40, 64]], [[2, 3, 64], [40, 64]], [[8, 8192], [40, 8192]]] as const;
    for (const [xs, ws] of cases) {
      const [a] = await operand([xs.slice(0, -1).reduce((p, q) => p * q, 1), xs[xs.length - 1]], "f16");
      const xt = T.reshape(a, [...xs]);
      const [b] = await operand([ws[0], ws[1]], "f16");
      const on = await withGemv("1", () => T.matmul(xt, b, { transB: true })).bytes();
      const off = await withGemv("0", () => T.matmul(xt, b, { transB: true })).bytes();
      expect(on.findIndex((v, i) => v !== off[i]), `x [${xs.join(", ")}] · w [${ws.join(", ")}]ᵀ: first differing byte`).toBe(-1);
    }
  });

  it("a value of LIGHTNING_CUDA_GEMV other than 0 or 1 is refused, naming the variable", async () => {
    const [x] = await operand([2, 64], "bf16");
    const [w] = await operand([40, 64], "bf16");
    expect(() => withEnv("LIGHTNING_CUDA_GEMV", "yes", () => T.matmul(x, w, { transB: true }))).toThrow(/LIGHTNING_CUDA_GEMV: expected 0 or 1, got 'yes'/);
  });

  for (const dtype of ["bf16", "f32"] as const) {
    it(`in a recorded graph: replays read the x written before them, the eager bits (${dtype})`, async () => {
      const [M, N, K] = [3, 2816, 1024];
      const [x] = await operand([M, K], dtype);
      const [w, wv] = await operand([N, K], dtype);
      const run = () => T.matmul(x, w, { transB: true });
      T.scope(() => void run()); // warm-up (shared-memory limit and occupancy set) outside the recording
      const graph = gpu().captureGraph(run);
      for (let round = 0; round < 3; round++) {
        const fresh = T.tensor(rng.array(M * K).map((v) => v || 0.5), [M, K], { dtype, backend: cpu });
        gpu().write(x.handle.storage as CudaStorage, await fresh.bytes());
        graph.replay();
        const eager = run();
        const [replayed, again] = [await graph.result.bytes(), await eager.bytes()];
        expect(replayed.findIndex((b, i) => b !== again[i]), `replay ${round} vs eager: first differing byte`).toBe(-1);
        const want = oracle(Float64Array.from(await fresh.data()), wv, M, N, K);
        const got = Float64Array.from(await graph.result.data());
        expectWithin(got, want.y, (i) => boundAt(want, i, dtype, gemvDepth(K)), `replay ${round} vs float64`);
        fresh.dispose();
      }
      graph.dispose();
    });
  }
});
