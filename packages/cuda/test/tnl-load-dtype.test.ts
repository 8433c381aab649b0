/**
 * The dtype checkpoints load in on cuda when none is named: bf16 for a checkpoint of bf16 weights
 * (taken bit for bit: the same bits as a CPU load in bf16), f32 for an f32 checkpoint; a named
 * dtype wins. Skipped through the runner, with the reason printed, where cuda cannot start.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { collectTensors, createCpuBackend, getBackend, setBackend, type Tensor } from "@lightning-ts/tensor";
import { describeBackends } from "@lightning-ts/testing";
import { disposeParams, initParams, loadCheckpoint, makeConfig, namedParameters, saveCheckpoint } from "@lightning-ts/tnl";
import { afterAll, expect, it } from "vitest";
import "./setup.js";

const tmp = mkdtempSync(join(tmpdir(), "cuda-load-dtype-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const dtypes = (params: object) => [...new Set(collectTensors(params).map((t: Tensor) => t.dtype))].sort();

await describeBackends("checkpoint dtype on load (cuda)", (backend) => {
  it("bf16 checkpoints load as bf16 bit for bit, f32 ones as f32, and a named dtype wins", async () => {
    // Odd sizes: vocabulary 51, width 30 over 3 heads of 10, channel mixer 43; built on the CPU.
    const cpu = createCpuBackend();
    const previous = getBackend();
    setBackend(cpu);
    const config = makeConfig({ vocabSize: 51, dModel: 30, numLayers: 2, numHeads: 3, gluDim: 43 });
    const params = initParams(config, { seed: 517, dtype: "bf16" });
    await saveCheckpoint(join(tmp, "bf16"), { config, params }, { dtype: "bf16" });
    await saveCheckpoint(join(tmp, "f32"), { config, params }, { dtype: "f32" });
    const cpuBf16 = await loadCheckpoint(join(tmp, "bf16"), { dtype: "bf16" });
    const want = new Map<string, Uint8Array>();
    for (const [name, t] of Object.entries(namedParameters(config, cpuBf16.params))) want.set(name, Uint8Array.from(await t.bytes()));
    disposeParams(params);
    disposeParams(cpuBf16.params);
    setBackend(backend());
    try {
      const half = await loadCheckpoint(join(tmp, "bf16"));
      expect(dtypes(half.params)).toEqual(["bf16"]);
      for (const [name, t] of Object.entries(namedParameters(config, half.params))) expect(Uint8Array.from(await t.bytes()), name).toEqual(want.get(name));
      disposeParams(half.params);
      const full = await loadCheckpoint(join(tmp, "f32"));
      expect(dtypes(full.params)).toEqual(["f32"]);
      disposeParams(full.params);
      const named = await loadCheckpoint(join(tmp, "bf16"), { dtype: "f32" });
      expect(dtypes(named.params)).toEqual(["f32"]);
      disposeParams(named.params);
    } finally {
      setBackend(previous);
    }
  });
});
