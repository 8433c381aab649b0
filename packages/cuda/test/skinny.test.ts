/**
 * The skinny product kernel (native/skinny.cu: x·wᵀ at 5–64 rows of f16/bf16, the decode step's
 * products above the small-M kernel's rows, with fusedLinear's residual added before the one
 * rounding) against the float64 oracle and against its twin, cuBLASLt (`LIGHTNING_CUDA_SKINNY=0`):
 * the 436M TNL's decode widths at every token-tile count (5, 8, 9, 17, 33, 64 rows), odd N and K
 * (past the last tile, shorter than a step, a share of k that ends inside a step), each split of k
 * over a cluster the planner picks, the same bits on every call and in a recorded graph, and the
 * shapes it leaves to cuBLAS. Every result keeps the bound of a K-long f32 sum and one rounding
 * (matmul-oracle.ts). Skipped, with the reason printed, where the CUDA backend cannot start; under
 * LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 *
 * Letters: x (M, K), w (N, K), r (M, N) the residual, y (M, N).
 */
import * as T from "@lightning-ts/tensor";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { afterEach, beforeEach, expect, it } from "vitest";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import { boundAt, expectWithin, operand as sharedOperand, oracle, withEnv } from "./matmul-oracle.js";
import "./setup.js";

const cpu = T.createCpuBackend();
type Half = "bf16" | "f16";

await describeBackends("skinny products at 5–64 rows (x·wᵀ, + residual) vs float64 and cuBLASLt", (backend) => {
  const gpu = () => backend() as CudaBackend;
  const rng = seeded(9127);
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });

  const operand = (shape: [number, number], dtype: Half) => sharedOperand(rng, gpu(), shape, dtype);

  async function expectSameBits(got: T.Tensor, want: T.Tensor, label: string): Promise<void> {
    const [a, b] = [await got.bytes(), await want.bytes()];
    expect(a.findIndex((v, i) => v !== b[i]), `${label}: first differing byte`).toBe(-1);
  }

  /**
   * y = x·wᵀ (+ r) with the kernel and with cuBLASLt, each against float64; two calls of the
   * kernel give the same bits. Returns whether the kernel's bits differ from cuBLASLt's.
   */
  async function check(M: number, N: number, K: number, dtype: Half, residual: boolean): Promise<boolean> {
    const label = `M ${M}, N ${N}, K ${K}, ${dtype}${residual ? ", + residual" : ""}`;
    const [x, xv] = await operand([M, K], dtype);
    const [w, wv] = await operand([N, K], dtype);
    const want = oracle(xv, wv, M, N, K);
    let r: T.Tensor | undefined;
    if (residual) {
      const [rt, rv] = await operand([M, N], dtype);
      r = rt;
      for (let i = 0; i < rv.length; i++) {
        want.y[i] += rv[i];
        want.scale[i] += Math.abs(rv[i]);
      }
    }
    const run = () => (r ? T.fusedLinear(x, w, { residual: r }) : T.matmul(x, w, { transB: true }));
    const bound = (i: number) => boundAt(want, i, dtype, residual ? K + 1 : K);
    const [y, again, lt] = [withEnv("LIGHTNING_CUDA_SKINNY", "1", run), withEnv("LIGHTNING_CUDA_SKINNY", "1", run), withEnv("LIGHTNING_CUDA_SKINNY", "0", run)];
    expectWithin(Float64Array.from(await y.data()), want.y, bound, `${label}: kernel vs float64`);
    expectWithin(Float64Array.from(await lt.data()), want.y, bound, `${label}: cuBLASLt vs float64`);
    await expectSameBits(again, y, `${label}: a second call`);
    const [a, b] = [await y.bytes(), await lt.bytes()];
    return a.some((v, i) => v !== b[i]);
  }

  for (const dtype of ["bf16", "f16"] as const) {
    it(`the 436M decode products and odd shapes at 5, 8, 9, 17, 33 and 64 rows, with and without a residual (${dtype})`, async () => {
      // [N, K]: qkvu, out, l1 (and l2), l3 of the 436M decode step (each split of k the planner
      // picks: clusters of 4, 8, 4 and 8), then N past the last tile with K shorter than a step,
      // a narrow N over a long K, and a share of k ending inside a step.
      const shapes: [number, number][] = [[4096, 1024], [1024, 1024], [2816, 1024], [1024, 2816], [1031, 40], [37, 1032], [523, 1000]];
      let differs = 0;
      for (const M of [5, 8, 9, 17, 33, 64])
        for (const [N, K] of shapes) {
          const frame = T.beginScope();
          try {
            if (await check(M, N, K, dtype, false)) differs++;
            if (M === 5 || M === 64 || N < 1024) await check(M, N, K, dtype, true);
          } finally {
            T.endScope(frame);
          }
        }
      // The switch chooses a different path: its sums are added in another order than cuBLASLt's.
      expect(differs, "products whose bits differ from cuBLASLt's").toBeGreaterThan(0);
    }, 900_000);
  }

  it("shapes it leaves to cuBLAS give cuBLAS's bits: 4 and 65 rows, K not a multiple of 8, a share of k too long for its registers, f32", async () => {
    const cases: [number, number, number, Half | "f32"][] = [
      [4, 1024, 1024, "bf16"],
      [65, 1024, 1024, "bf16"],
      [17, 523, 1031, "bf16"],
      [9, 256, 8192, "bf16"],
      [17, 523, 1024, "f32"],
    ];
    for (const [M, N, K, dtype] of cases) {
      const frame = T.beginScope();
      try {
        const x = T.tensor(rng.array(M * K), [M, K], { dtype, backend: gpu() });
        const w = T.tensor(rng.array(N * K), [N, K], { dtype, backend: gpu() });
        const run = () => T.matmul(x, w, { transB: true });
        await expectSameBits(withEnv("LIGHTNING_CUDA_SKINNY", "1", run), withEnv("LIGHTNING_CUDA_SKINNY", "0", run), `M ${M}, N ${N}, K ${K}, ${dtype}`);
      } finally {
        T.endScope(frame);
      }
    }
  }, 300_000);

  it("a value of LIGHTNING_CUDA_SKINNY other than 0 or 1 is refused, naming the variable", async () => {
    const [x] = await operand([9, 64], "bf16");
    const [w] = await operand([40, 64], "bf16");
    expect(() => withEnv("LIGHTNING_CUDA_SKINNY", "fast", () => T.matmul(x, w, { transB: true }))).toThrow(/LIGHTNING_CUDA_SKINNY: expected 0 or 1, got 'fast'/);
  });

  for (const pdl of ["1", "0"])
    it(`in a recorded graph (programmatic dependent launch ${pdl === "1" ? "on" : "off"}): a layer's products in a row, replays read the x written before them, the eager bits (bf16, 64 rows)`, async () => {
      const [M, D, F] = [64, 1024, 2816];
      const [x] = await operand([M, D], "bf16");
      const [wq] = await operand([D, D], "bf16");
      const [wo] = await operand([D, D], "bf16");
      const [w1] = await operand([F, D], "bf16");
      const [w3] = await operand([D, F], "bf16");
      // Each product reads the one before: a kernel that started before its input was written would differ.
      const products = () => {
        const q = T.matmul(x, wq, { transB: true });
        const o = T.fusedLinear(q, wo, { residual: x });
        const h = T.matmul(o, w1, { transB: true });
        return T.fusedLinear(h, w3, { residual: o });
      };
      const run = () => withEnv("LIGHTNING_CUDA_SKINNY", "1", products);
      withEnv("LIGHTNING_CUDA_PDL", pdl, () => T.scope(() => void run()));
      const graph = withEnv("LIGHTNING_CUDA_PDL", pdl, () => gpu().captureGraph(run));
      for (let round = 0; round < 3; round++) {
        const fresh = T.tensor(
          rng.array(M * D).map((v) => v || 0.5),
          [M, D],
          { dtype: "bf16", backend: cpu },
        );
        gpu().write(x.handle.storage as CudaStorage, await fresh.bytes());
        graph.replay();
        const eager = withEnv("LIGHTNING_CUDA_PDL", pdl, run);
        await expectSameBits(graph.result, eager, `replay ${round} vs eager`);
        fresh.dispose();
      }
      graph.dispose();
    }, 300_000);
});
