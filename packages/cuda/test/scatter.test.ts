/**
 * scatterAdd and embeddingBackward (native/indexing.cu) at training sizes: a vocabulary of 50,272
 * rows, ~70k ids with one hot id (as a newline or "the" is in text) and ids outside the first rows,
 * against f32 sums in the order of the ids, to the bit; and the same call twice gives the same bits
 * (the kernel sums in a fixed order, so a training step on cuda is reproducible). Skipped, with the reason printed, where the
 * CUDA backend cannot start.
 */
import * as T from "@lightning-ts/tensor";
import { type DType, type Tensor } from "@lightning-ts/tensor";
import { assertClose, describeBackends, seeded, tolerance } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import "./setup.js";

const cpu = T.createCpuBackend();
const values = async (t: Tensor) => Float64Array.from(await t.data());

await describeBackends("scatterAdd and embeddingBackward at training sizes", (gpu) => {
  const rng = seeded(77);

  for (const dtype of ["f32", "bf16"] as DType[]) {
    it(`embeddingBackward, V = 50,272, 70,001 ids with a hot one, reproducible (${dtype})`, async () => {
      const V = 50_272;
      const K = 70_001;
      const M = 67; // columns: not a multiple of a tile
      const ids = Int32Array.from({ length: K }, (_, k) => (k % 5 === 0 ? 198 : rng.int(V)));
      ids[K - 1] = V - 1;
      const idsGpu = T.tensor(ids, [K], { dtype: "i32", backend: gpu() });
      const dy = T.tensor(rng.array(K * M, 0.01), [K, M], { dtype, backend: gpu() });
      const a = T.embeddingBackward(dy, idsGpu, V);
      const b = T.embeddingBackward(dy, idsGpu, V);
      expect(Array.from(await a.data())).toEqual(Array.from(await b.data()));
      // The kernel adds each row's terms in f32 in the order of the ids and rounds once to the
      // dtype: the same sums done here (an f32 sum of two f32 values, computed in double and
      // rounded, is the f32 sum) must agree to the bit, the hot row's 14,001 terms included.
      const dyHost = await dy.data();
      const sums = new Float32Array(V * M);
      for (let k = 0; k < K; k++) for (let m = 0; m < M; m++) sums[ids[k] * M + m] = Math.fround(sums[ids[k] * M + m] + dyHost[k * M + m]);
      const want = await T.tensor(sums, [V, M], { dtype, backend: cpu }).data();
      expect(Array.from(await a.data())).toEqual(Array.from(want));
    }, 120_000);
  }

  it("scatterAdd along a middle axis, outer > 1 and narrow inner (f32)", async () => {
    const [outer, K, inner, size] = [3, 1001, 5, 129];
    const idx = Int32Array.from({ length: K }, () => rng.int(size));
    const u = T.tensor(rng.array(outer * K * inner), [outer, K, inner], { backend: gpu() });
    const got = T.scatterAdd(u, T.tensor(idx, [K], { dtype: "i32", backend: gpu() }), 1, size);
    const want = T.scatterAdd(T.tensor(await u.data(), [outer, K, inner], { backend: cpu }), T.tensor(idx, [K], { dtype: "i32", backend: cpu }), 1, size);
    assertClose(await values(got), await values(want), { ...tolerance("f32"), label: "scatterAdd [3, 1001, 5] → [3, 129, 5]" });
  });

  it("an index out of range is still an error naming the op", async () => {
    const u = T.tensor(rng.array(4 * 3), [4, 3], { backend: gpu() });
    const bad = T.tensor([0, 2, 9, 1], [4], { dtype: "i32", backend: gpu() });
    await expect(T.embeddingBackward(u, bad, 5).data()).rejects.toThrow(/embeddingBackward: ids must be values in \[0, 5\).*got 9 at position 2/);
  });
});
