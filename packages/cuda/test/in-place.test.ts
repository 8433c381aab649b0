/**
 * In-place primitives on CUDA (the suite of packages/tensor/test/in-place-suite.ts): lightningStep
 * with inPlace, whose kernels (stepKernel, stepKernelVec4 and the other step candidates) read each
 * state element before the same thread writes it, bit for bit against the same step out of place;
 * copyInto through cudaMemcpyAsync on the stream; leadingRows read by the kernels. Then the three
 * together recorded as a CUDA graph, the way a decoder replays its step. Skipped, with the reason
 * printed, where the CUDA backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import * as T from "@lightning-ts/tensor";
import { describeBackends, seeded } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import { copyIntoManySuite, copyIntoSuite, leadingRowsSuite, lightningStepInPlaceSuite } from "../../tensor/test/in-place-suite.js";
import type { CudaBackend } from "../src/index.js";
import "./setup.js";

await describeBackends("lightningStep in place", lightningStepInPlaceSuite);
await describeBackends("copyInto", copyIntoSuite);
await describeBackends("copyIntoMany", copyIntoManySuite);
await describeBackends("leadingRows", leadingRowsSuite);

/** Fails with the first differing byte unless `a` and `b` are equal. */
function expectSameBytes(a: Uint8Array, b: Uint8Array, label: string): void {
  expect(a.byteLength, `${label}: byte length`).toBe(b.byteLength);
  expect(
    a.findIndex((x, j) => x !== b[j]),
    `${label}: first differing byte`,
  ).toBe(-1);
}

await describeBackends("in-place decode step in a CUDA graph", (backend) => {
  for (const dtype of ["f32", "bf16"] as const) {
    it(`${dtype}: each replay is one more step on the first rows of the state, and copies row 0 out`, async () => {
      const gpu = backend() as CudaBackend;
      const [N, B, H, D, E] = [4, 3, 5, 64, 128];
      const row = H * D * E;
      const rng = seeded(dtype === "f32" ? 71 : 72);
      const frame = T.beginScope();
      try {
        const q = rng.tensor([B, H, D], { std: 0.5, dtype, backend: gpu });
        const k = rng.tensor([B, H, D], { std: 0.5, dtype, backend: gpu });
        const v = rng.tensor([B, H, E], { std: 0.5, dtype, backend: gpu });
        const slopesGpu = T.tensor(T.tnlSlopes(H, 1, 4), [H], { backend: gpu });
        const start = rng.array(N * row, 0.5);
        const cap = T.tensor(start, [N, H, D, E], { backend: gpu });
        const capStart = await cap.bytes();
        const rowOut = rng.tensor([1, H, D, E], { backend: gpu });

        // The eager reference, out of place, three steps.
        let ref = T.tensor(start.subarray(0, B * row), [B, H, D, E], { backend: gpu });
        const want: { output: Uint8Array; state: Uint8Array }[] = [];
        for (let i = 0; i < 3; i++) {
          const r = T.lightningStep(q, k, v, slopesGpu, ref);
          ref = r.state;
          want.push({ output: await r.output.bytes(), state: await r.state.bytes() });
        }

        // Warm-up outside the recording (library set-up), on a scratch state.
        const scratch = T.tensor(start.subarray(0, B * row), [B, H, D, E], { backend: gpu });
        T.lightningStep(q, k, v, slopesGpu, scratch, { inPlace: true });
        T.copyInto(rowOut, scratch, { count: row });
        await gpu.sync();

        const graph = gpu.captureGraph(() =>
          T.scope(() => {
            const active = T.leadingRows(cap, B);
            const { output } = T.lightningStep(q, k, v, slopesGpu, active, { inPlace: true });
            T.copyInto(rowOut, cap, { count: row });
            return output;
          }),
        );
        try {
          expectSameBytes(await cap.bytes(), capStart, "recording runs nothing");
          for (let i = 0; i < 3; i++) {
            graph.replay();
            expectSameBytes(await graph.result.bytes(), want[i].output, `${dtype} replay ${i + 1}: output`);
            const now = await cap.bytes();
            expectSameBytes(now.subarray(0, B * row * 4), want[i].state, `${dtype} replay ${i + 1}: rows 0..${B - 1}`);
            expectSameBytes(now.subarray(B * row * 4), capStart.subarray(B * row * 4), `${dtype} replay ${i + 1}: rows ${B}.. untouched`);
            expectSameBytes(await rowOut.bytes(), want[i].state.subarray(0, row * 4), `${dtype} replay ${i + 1}: row 0 copied out`);
          }
        } finally {
          graph.result.dispose();
          graph.dispose();
        }
      } finally {
        T.endScope(frame);
      }
    });
  }
});
