/**
 * A checkpoint in the published TransNormerLLM-1B layout (one bf16 pytorch_model.bin and the 1B
 * config.json) on cuda: it loads in bf16 without a round trip through f32 (the allocator's live
 * bytes within 10% of 2 bytes per parameter), generates, and its bf16 logits are within 1e-2
 * relative RMS of the f32 logits of the same weights. The checkpoint is random and 2 GB, so it is
 * not in the repository: tools/fixtures/make-torch-checkpoints.py --with-1b writes it, and
 * TNL_1B_CHECKPOINT names its folder. Skipped, with the reason printed, without it.
 *
 * On the H200 (2026-11-30) the load and generation pass (2.000 GiB live for 1.900 GiB of weights),
 * and the logits do not: relative RMS 3.6e-2 (2.7e-2 with `residual: "f32"`). On the same
 * checkpoint and prompt the official PyTorch TNL gives 3.5e-2 in bf16 and 2.6e-2 under bf16
 * autocast (tools/compare/torch-bf16-logits.py): on these random weights bf16 arithmetic itself is
 * further than 1e-2 from f32, so the bound stands as the issue set it and this test fails there.
 */
import { describeBackends } from "@lightning-ts/testing";
import { disposeParams, forward, generateIds, loadCheckpoint, parameterCount } from "@lightning-ts/tnl";
import { expect, it } from "vitest";
import type { CudaBackend } from "../src/index.js";
import "./setup.js";

const dir = process.env.TNL_1B_CHECKPOINT;
const why = "TNL_1B_CHECKPOINT is not set (tools/fixtures/make-torch-checkpoints.py --with-1b writes the checkpoint)";
if (!dir) console.log(`[published-1b] skipped: ${why}`);

await describeBackends("the published 1B layout on cuda", (backend) => {
  it.skipIf(!dir)(`loads in bf16, generates, and its logits follow f32 ${dir ? "" : `(skipped: ${why})`}`, async () => {
    const cuda = backend() as CudaBackend;
    const before = cuda.memory().liveBytes;
    const bf16 = await loadCheckpoint(dir!, { dtype: "bf16" });
    const params = parameterCount(bf16.config);
    const live = cuda.memory().liveBytes - before;
    console.log(`[published-1b] ${params.toLocaleString("en")} parameters; ${(live / 2 ** 30).toFixed(3)} GiB live after a bf16 load (2 bytes each: ${((2 * params) / 2 ** 30).toFixed(3)} GiB)`);
    expect(Math.abs(live - 2 * params) / (2 * params)).toBeLessThanOrEqual(0.1);

    const prompt = [1, 1037, 2201, 30, 9999, 412, 63_999, 7];
    const [tokens] = await generateIds(bf16, prompt, { maxTokens: 8, seed: 3 });
    console.log(`[published-1b] generated ${tokens.join(" ")}`);
    expect(tokens.length).toBe(8);
    expect(tokens.every((t) => Number.isInteger(t) && t >= 0 && t < bf16.config.vocabSize)).toBe(true);

    const got = Float64Array.from(await forward(bf16.params, bf16.config, [prompt]).data());
    const gotF32Residual = Float64Array.from(await forward(bf16.params, bf16.config, [prompt], { residual: "f32" }).data());
    disposeParams(bf16.params);
    const f32 = await loadCheckpoint(dir!, { dtype: "f32" });
    const want = Float64Array.from(await forward(f32.params, f32.config, [prompt]).data());
    disposeParams(f32.params);
    const relRms = (a: Float64Array) => {
      let num = 0;
      let den = 0;
      for (let i = 0; i < want.length; i++) {
        num += (a[i] - want[i]) ** 2;
        den += want[i] ** 2;
      }
      return Math.sqrt(num / den);
    };
    const rel = relRms(got);
    console.log(`[published-1b] bf16 vs f32 logits: relative RMS ${rel.toExponential(2)}; with an f32 residual stream ${relRms(gotF32Residual).toExponential(2)}`);
    expect(rel).toBeLessThanOrEqual(1e-2);
  }, 300_000);
});
