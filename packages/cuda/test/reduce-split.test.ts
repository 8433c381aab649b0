/**
 * Reductions of few outputs over long ranges, which native/reduce.cu splits across blocks (each
 * output's range cut into slices, the slices combined in order): whole-tensor sums such as a
 * gradient norm's, and a few rows of 10⁵–10⁶ elements; and the other extreme, millions of outputs
 * of two or three elements each; against the CPU backend. Sizes are odd, so
 * the last slice is short. Skipped, with the reason printed, where the CUDA backend cannot start.
 */
import * as T from "@lightning-ts/tensor";
import { type DType, type Tensor } from "@lightning-ts/tensor";
import { assertClose, describeBackends, seeded, tolerance } from "@lightning-ts/testing";
import { it } from "vitest";
import "./setup.js";

const cpu = T.createCpuBackend();
const values = async (t: Tensor) => Float64Array.from(await t.data());

await describeBackends("reductions split across blocks", (gpu) => {
  const rng = seeded(41);

  for (const dtype of ["f32", "bf16"] as DType[]) {
    it(`whole tensors and few long rows (${dtype})`, async () => {
      const cases: [number[], number[]][] = [
        [[1_048_583], [0]],
        [[1027, 1031], [0, 1]],
        [[3, 200_003], [1]],
        [[200_003, 3], [0]],
        [[5, 65_537], [1]],
        // Many outputs of a few elements each (a gradient summed over a batch of 2): one thread per output.
        [[2, 8, 513, 128], [0]],
        [[3, 8, 1, 129], [0, 2]],
      ];
      for (const [shape, axes] of cases) {
        const n = shape.reduce((p, q) => p * q, 1);
        // A non-zero mean, so that the sum is not a small difference of large terms.
        const data = rng.array(n, 1).map((v) => v + 0.25);
        const x = T.tensor(data, shape, { dtype, backend: gpu() });
        const cx = T.tensor(await x.data(), shape, { dtype, backend: cpu });
        for (const op of T.REDUCE_OPS) {
          // The sums are accumulated in double on both sides: only the final rounding to the dtype differs.
          assertClose(await values(T[op](x, axes)), await values(T[op](cx, axes)), { ...tolerance(dtype), label: `${op} over ${axes.join(", ")} of [${shape.join(", ")}] ${dtype}` });
        }
        const sq = T.sum(T.square(T.cast(x, "f32")));
        assertClose(await values(sq), await values(T.sum(T.square(T.cast(cx, "f32")))), { ...tolerance("f32"), label: `sum of squares [${shape.join(", ")}] ${dtype}` });
      }
    }, 120_000);
  }
});
