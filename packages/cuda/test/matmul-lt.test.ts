/**
 * cuBLASLt for x·wᵀ at 5–256 rows in 16 bits (native/matmul.cu `lt::gemm`: the decode step's
 * products above the small-M kernel's rows), against the float64 oracle and against its plain twin,
 * cublasGemmEx (`LIGHTNING_CUDA_LT=0`): the 436M TNL's decode widths and odd ones, both planning
 * modes (`heuristic`, the default: cuBLASLt's first candidate; `tune`: its candidates timed), every
 * layout of the operands, 257 rows (past the limit: cublasGemmEx either way), and a plan replayed
 * inside a recorded CUDA graph. Split-K candidates may add their partial sums only in f32, so every
 * cuBLASLt result keeps the bound of a K-long f32 sum and one rounding (matmul-oracle.ts).
 * cublasGemmEx's default choice does not (at M 200, N 523, K 1,031 with a transposed it adds
 * split-K partial sums in bf16, 5× that bound on the H200): it is held to the looser bound of one
 * more rounding to the storage dtype of sums as large as Σ|x·w|. Skipped, with the reason printed,
 * where the CUDA backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import * as T from "@lightning-ts/tensor";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import { boundAt, expectWithin, operand as sharedOperand, oracle, withEnv } from "./matmul-oracle.js";
import "./setup.js";

const cpu = T.createCpuBackend();
type Half = "bf16" | "f16";
const MODES = ["0", "heuristic", "tune"] as const;
const UNIT = { bf16: 2 ** -8, f16: 2 ** -11 } as const;

await describeBackends("cuBLASLt products at 5–256 rows (x·wᵀ) vs float64 and cublasGemmEx", (backend) => {
  const gpu = () => backend() as CudaBackend;
  const rng = seeded(7411);
  // These products are cuBLASLt's and cublasGemmEx's: at 5–64 rows the skinny kernel
  // (test/skinny.test.ts) would take x·wᵀ first, so its switch is held off here.
  let skinnySwitch: string | undefined;
  beforeAll(() => {
    skinnySwitch = process.env.LIGHTNING_CUDA_SKINNY;
    process.env.LIGHTNING_CUDA_SKINNY = "0";
  });
  afterAll(() => {
    if (skinnySwitch === undefined) delete process.env.LIGHTNING_CUDA_SKINNY;
    else process.env.LIGHTNING_CUDA_SKINNY = skinnySwitch;
  });
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });

  const operand = (shape: [number, number], dtype: Half) => sharedOperand(rng, gpu(), shape, dtype);

  /** The transpose of a row-major (r, c) array. */
  function transposed(v: Float64Array, r: number, c: number): Float64Array {
    const out = new Float64Array(v.length);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = v[i * c + j];
    return out;
  }

  /**
   * y (M, N) = op(a)·op(b) in every mode, each against float64 and the modes against each other;
   * the operands are stored as x (M, K) and w (N, K), or transposed where `ta` / `tb` say.
   */
  async function check(M: number, N: number, K: number, dtype: Half, ta = false, tb = true) {
    const label = `M ${M}, N ${N}, K ${K}, ${dtype}${ta ? ", a transposed" : ""}${tb ? "" : ", b as (K, N)"}`;
    const [a, av] = await operand(ta ? [K, M] : [M, K], dtype);
    const [b, bv] = await operand(tb ? [N, K] : [K, N], dtype);
    const want = oracle(ta ? transposed(av, K, M) : av, tb ? bv : transposed(bv, K, N), M, N, K);
    const bound = (i: number) => boundAt(want, i, dtype, K);
    // cublasGemmEx may round split-K partial sums to the storage dtype before adding them.
    const gemmExBound = (i: number) => bound(i) + UNIT[dtype] * want.scale[i];
    const got: Float64Array[] = [];
    const [aBytes, bBytes] = [await a.bytes(), await b.bytes()];
    for (const mode of MODES) {
      const y = withEnv("LIGHTNING_CUDA_LT", mode, () => T.matmul(a, b, { transA: ta, transB: tb }));
      got.push(Float64Array.from(await y.data()));
      expectWithin(got[got.length - 1], want.y, mode === "0" ? gemmExBound : bound, `${label}: LIGHTNING_CUDA_LT=${mode} vs float64`);
    }
    // Planning times candidates into y: the operands must come out as they went in.
    const [aAfter, bAfter] = [await a.bytes(), await b.bytes()];
    expect(aAfter.findIndex((v, i) => v !== aBytes[i]), `${label}: first changed byte of a`).toBe(-1);
    expect(bAfter.findIndex((v, i) => v !== bBytes[i]), `${label}: first changed byte of b`).toBe(-1);
    // Each within its bound of y, so within the sum of the two of cublasGemmEx's (the first).
    for (let m = 1; m < MODES.length; m++) expectWithin(got[m], got[0], (i) => bound(i) + gemmExBound(i), `${label}: ${MODES[m]} vs cublasGemmEx`);
  }

  for (const dtype of ["bf16", "f16"] as const) {
    it(`decode widths and odd ones at 5, 37, 64 and 256 rows, and 257 (past the limit) (${dtype})`, async () => {
      // [N, K]: the 436M decode step's qkvu, out, l1·l2 and l3 products, then N past the last tile,
      // K shorter than a tile, and K not a multiple of 8 (alignment the fast candidates lack).
      const shapes: [number, number][] = [[4096, 1024], [1024, 1024], [5632, 1024], [1024, 2816], [1031, 40], [37, 1032], [515, 1029]];
      for (const M of [5, 37, 64, 256, 257])
        for (const [N, K] of shapes) {
          if (M >= 256 && N * K > 4096 * 1024) continue; // the float64 oracle's time, not the GPU's
          const frame = T.beginScope();
          try {
            await check(M, N, K, dtype);
          } finally {
            T.endScope(frame);
          }
        }
    }, 600_000);
  }

  it("every layout of the operands (a or its transpose, b as (N, K) or (K, N)), 37 and 200 rows (bf16)", async () => {
    for (const M of [37, 200])
      for (const ta of [false, true])
        for (const tb of [false, true]) {
          const frame = T.beginScope();
          try {
            await check(M, 523, 1031, "bf16", ta, tb);
          } finally {
            T.endScope(frame);
          }
        }
  }, 300_000);

  it("a value of LIGHTNING_CUDA_LT other than heuristic, tune or 0 is refused, naming the variable", async () => {
    const [x] = await operand([9, 64], "bf16");
    const [w] = await operand([40, 64], "bf16");
    expect(() => withEnv("LIGHTNING_CUDA_LT", "fast", () => T.matmul(x, w, { transB: true }))).toThrow(/LIGHTNING_CUDA_LT: expected heuristic, tune or 0, got 'fast'/);
  });

  it("in a recorded graph: the timed plan made eagerly is replayed, reading the x written before each replay (bf16)", async () => {
    const [M, N, K] = [64, 2816, 1024];
    const [x] = await operand([M, K], "bf16");
    const [w, wv] = await operand([N, K], "bf16");
    // The timed plan: made by the eager call outside the recording, replayed by the recording.
    const run = () => withEnv("LIGHTNING_CUDA_LT", "tune", () => T.matmul(x, w, { transB: true }));
    T.scope(() => void run());
    const graph = gpu().captureGraph(run);
    for (let round = 0; round < 3; round++) {
      const fresh = T.tensor(rng.array(M * K).map((v) => v || 0.5), [M, K], { dtype: "bf16", backend: cpu });
      gpu().write(x.handle.storage as CudaStorage, await fresh.bytes());
      graph.replay();
      const eager = run();
      const [replayed, again] = [await graph.result.bytes(), await eager.bytes()];
      expect(replayed.findIndex((b, i) => b !== again[i]), `replay ${round} vs eager: first differing byte`).toBe(-1);
      const want = oracle(Float64Array.from(await fresh.data()), wv, M, N, K);
      expectWithin(Float64Array.from(await graph.result.data()), want.y, (i) => boundAt(want, i, "bf16", K), `replay ${round} vs float64`);
      fresh.dispose();
    }
    graph.dispose();
  }, 300_000);
});
