/**
 * The f16/bf16 row kernels of native/nn.cu against the CPU backend in float64 on the same values:
 * softmax cross-entropy in one online pass of f32 exp over 16-byte packs (V % 8 == 0) and its
 * scalar fallback (V = 1,001), with ignored rows, logits up to ±30 and a confident row; SRMSNorm
 * with one warp per row held in registers (M % 8 == 0, M ≤ 4,096) and its block-kernel fallback
 * (M = 1,000 and 6,144). Rows are odd in number. Skipped, with the reason printed, where the CUDA
 * backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 *
 * Tolerances (the conformance suite's `tolerance(dtype, 10)` holds too, and is checked as well):
 * - loss (f32): |Δ| ≤ 1e-5 · max(1, |loss|). The kernel's f32 exp and sums put log S within ~3e-6
 *   of float64 (the argument is in nn.cu), so this is the 1e-5 relative the training loss needs.
 * - dlogits, rmsNorm y and dx (f16/bf16): each element within 2⁻⁸ (bf16) or 2⁻¹⁰ (f16) of |want|,
 *   i.e. twice the rounding of the stored dtype, plus an absolute floor: 6e-8 for f16 subnormals
 *   (their spacing), and for dlogits 1e-5 · |dloss| more, because softmax − onehot is formed in
 *   f32 (p ≈ 1 on a confident row leaves p − 1 with ~1e-7 absolute error, however small p − 1 is).
 */
import * as T from "@lightning-ts/tensor";
import { type Backend, type DType, type Tensor } from "@lightning-ts/tensor";
import { assertClose, describeBackends, seeded, tolerance } from "@lightning-ts/testing";
import { afterEach, beforeEach, expect, it } from "vitest";
import "./setup.js";

const cpu = T.createCpuBackend();
const HALF: DType[] = ["bf16", "f16"];
const IGNORE = -100;

const values = async (t: Tensor) => Float64Array.from(await t.data());

/** The same values on the CPU backend, in float64 (every f16/bf16 value is exact there). */
async function onCpu64(x: Tensor): Promise<Tensor> {
  return T.tensor(await values(x), x.shape, { dtype: x.dtype === "i32" ? "i32" : "f64", backend: cpu });
}

/** Relative error allowed per element of a stored f16/bf16 result: twice its rounding. */
const relOf = (dtype: DType) => (dtype === "bf16" ? 2 ** -8 : 2 ** -10);

/** Every element within rel · |want| + abs(i). */
function expectWithin(got: Float64Array, want: Float64Array, rel: number, abs: (i: number) => number, label: string) {
  expect(got.length, label).toBe(want.length);
  let worst = -1;
  let excess = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]) - (rel * Math.abs(want[i]) + abs(i));
    if (!(d <= excess)) {
      excess = Number.isNaN(d) ? Infinity : d;
      worst = i;
    }
  }
  if (worst >= 0) throw new Error(`${label}: element ${worst} is ${got[worst]}, want ${want[worst]} (over the bound by ${excess})`);
}

await describeBackends("f16/bf16 cross-entropy and SRMSNorm fast paths vs the CPU", (gpu: () => Backend) => {
  const rng = seeded(7171);
  // Every tensor a test makes (on either backend) is disposed after it.
  let before = new Set<Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });
  /** Normal values with standard deviation `std`, never zero, as `dtype` on the GPU. */
  const rand = (shape: number[], dtype: DType, std = 1) =>
    T.tensor(
      rng.array(shape.reduce((a, b) => a * b, 1), std).map((v) => v || 0.5),
      shape,
      { dtype, backend: gpu() },
    );

  /**
   * Logits [N, V]: row 0 uniform in ±30 (the large-logit case), row 1 confident (its label at +30,
   * the rest N(0, 3)), the others N(0, 3); rows 2 and 5 ignored (where they exist).
   */
  function crossEntropyInputs(N: number, V: number, dtype: DType) {
    const labelsHost = Int32Array.from({ length: N }, (_, i) => (i % 3 === 2 ? IGNORE : rng.int(V)));
    const xs = rng.array(N * V, 3).map((v) => v || 0.5);
    for (let j = 0; j < V; j++) xs[j] = 60 * (rng.next() - 0.5) || 1;
    if (N > 1) xs[V + labelsHost[1]] = 30;
    const logits = T.tensor(xs, [N, V], { dtype, backend: gpu() });
    const labels = T.tensor(labelsHost, [N], { dtype: "i32", backend: gpu() });
    const dloss = rand([N], "f32");
    return { logits, labels, dloss, labelsHost };
  }

  for (const dtype of HALF) {
    for (const [N, V, path] of [
      [5, 50272, "16-byte packs"],
      [7, 1001, "scalar fallback (V % 8 ≠ 0)"],
      [3, 24, "16-byte packs, fewer packs than threads"],
    ] as [number, number, string][]) {
      it(`softmaxCrossEntropy and its backward, N = ${N}, V = ${V}: ${path} (${dtype})`, async () => {
        const { logits, labels, dloss } = crossEntropyInputs(N, V, dtype);
        const [cl, cy, cg] = [await onCpu64(logits), await onCpu64(labels), await onCpu64(dloss)];
        const loss = T.softmaxCrossEntropy(logits, labels);
        const grad = T.softmaxCrossEntropyBackward(logits, labels, dloss);
        const wantLoss = await values(T.softmaxCrossEntropy(cl, cy));
        const wantGrad = await values(T.softmaxCrossEntropyBackward(cl, cy, cg));
        const g = await values(dloss);
        const gotLoss = await values(loss);
        const label = `cross-entropy ${dtype} [${N}, ${V}]`;
        expect(loss.dtype).toBe("f32");
        assertClose(gotLoss, wantLoss, { ...tolerance("f32", 10), label: `${label} loss` });
        expectWithin(gotLoss, wantLoss, 1e-5, (i) => 1e-5 * Math.max(0, 1 - Math.abs(wantLoss[i])), `${label} loss`);
        for (let r = 2; r < N; r += 3) expect(gotLoss[r], `${label}: ignored row ${r}`).toBe(0);
        const gotGrad = await values(grad);
        assertClose(gotGrad, wantGrad, { ...tolerance(dtype, 10), label: `${label} backward` });
        expectWithin(gotGrad, wantGrad, relOf(dtype), (i) => 1e-5 * Math.abs(g[Math.floor(i / V)]) + 6e-8, `${label} backward`);
        for (let r = 2; r < N; r += 3)
          expect(gotGrad.subarray(r * V, (r + 1) * V).every((v) => v === 0), `${label}: ignored row ${r} has zero gradient`).toBe(true);
      });
    }

    it(`an out-of-range label is reported on the packed path (${dtype})`, async () => {
      const V = 50272;
      const logits = rand([3, V], dtype);
      const labels = T.tensor(Int32Array.from([1, V, IGNORE]), [3], { dtype: "i32", backend: gpu() });
      const dloss = rand([3], "f32");
      const loss = T.softmaxCrossEntropy(logits, labels);
      await expect(loss.data()).rejects.toThrow(/softmaxCrossEntropy: labels must be values in \[0, 50272\).*got 50272 at position 1/);
      const grad = T.softmaxCrossEntropyBackward(logits, labels, dloss);
      await expect(grad.data()).rejects.toThrow(/softmaxCrossEntropyBackward: labels must be values in \[0, 50272\).*got 50272 at position 1/);
    });

    for (const [M, path] of [
      [1024, "warp per row, 4 packs per lane"],
      [2048, "warp per row, 8 packs per lane"],
      [4096, "warp per row, 16 packs per lane"],
      [8, "warp per row, one lane busy"],
      [24, "warp per row, three lanes busy"],
      [1000, "block kernel (M % 8 ≠ 0)"],
      [6144, "block kernel (M > 4,096)"],
    ] as [number, string][]) {
      it(`rmsNorm and its backward, [37, ${M}]: ${path} (${dtype})`, async () => {
        const rows = 37;
        // Rows of different scales, so r = 1 / rms differs from row to row.
        const scale = Array.from({ length: rows }, (_, i) => 0.25 + (i % 5));
        const xs = rng.array(rows * M).map((v, i) => (v || 0.5) * scale[Math.floor(i / M)]);
        const x = T.tensor(xs, [rows, M], { dtype, backend: gpu() });
        const dy = rand([rows, M], dtype);
        const [cx, cdy] = [await onCpu64(x), await onCpu64(dy)];
        const label = `rmsNorm ${dtype} [${rows}, ${M}]`;
        const y = await values(T.rmsNorm(x));
        const dx = await values(T.rmsNormBackward(x, dy));
        const wantY = await values(T.rmsNorm(cx));
        const wantDx = await values(T.rmsNormBackward(cx, cdy));
        assertClose(y, wantY, { ...tolerance(dtype, 10), label });
        assertClose(dx, wantDx, { ...tolerance(dtype, 10), label: `${label} backward` });
        expectWithin(y, wantY, relOf(dtype), () => 6e-8, label);
        expectWithin(dx, wantDx, relOf(dtype), () => 6e-8, `${label} backward`);
      });
    }
  }
});
