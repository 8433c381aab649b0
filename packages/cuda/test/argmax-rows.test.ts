/**
 * argmax over the last axis of long rows (the logits of a decode step), which native/reduce.cu cuts
 * into parts of one block each (1 to 25 parts for these sizes, the ties often in different parts)
 * and then reduces per row: the first maximum on ties, NaN above every number, a row of −∞ giving 0;
 * against the CPU backend on the same values. Rows are odd lengths with ties planted at random
 * places, in bf16 (where ties are common) and f32. Skipped, with the reason printed, where the CUDA
 * backend cannot start.
 */
import * as T from "@lightning-ts/tensor";
import { type DType } from "@lightning-ts/tensor";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import "./setup.js";

const cpu = T.createCpuBackend();

await describeBackends("argmax of long rows", (gpu) => {
  const rng = seeded(97);

  for (const dtype of ["bf16", "f32"] as DType[]) {
    it(`rows of 1,024 … 50,273 with planted ties and NaNs (${dtype})`, async () => {
      for (const [rows, n] of [
        [1, 50_273],
        [7, 1_031],
        [65, 4_099],
        [3, 32_771],
      ] as const) {
        const data = rng.array(rows * n, 3);
        for (let r = 0; r < rows; r++) {
          const base = r * n;
          // Plant the row's maximum at two or three random places (a tie), sometimes a NaN.
          const top = 10 + r;
          const places = [rng.int(n), rng.int(n), rng.int(n)];
          for (const p of places.slice(0, 2 + (r % 2))) data[base + p] = top;
          if (r % 5 === 3) data[base + rng.int(n)] = NaN;
          if (r % 7 === 6) data.fill(-Infinity, base, base + n);
        }
        const x = T.tensor(data, [rows, n], { dtype, backend: gpu() });
        const cx = T.tensor(await x.data(), [rows, n], { dtype, backend: cpu });
        expect(Array.from(await T.argmax(x, -1).data()), `argmax of [${rows}, ${n}] ${dtype}`).toEqual(Array.from(await T.argmax(cx, -1).data()));
      }
    }, 60_000);
  }
});
