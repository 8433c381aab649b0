/**
 * CUDA graphs (`CudaBackend.captureGraph`) and the batched decoder that replays them: a recording
 * runs nothing, a replay runs it again on the inputs' current values, buffers recorded into a
 * graph are never handed to another tensor while it lives, host calls inside a recording are
 * refused by name, a failed recording leaves the backend usable; and BatchDecoder with graphs
 * (rows leaving, and a fresh one joining into a freed row) gives the same bits as without, the same logits as `step` on each sequence alone, and the
 * CPU's logits within the dtype's rounding (the official-code fixture model, LRPE on its first
 * layer). Skipped, with the reason printed, where
 * the CUDA backend cannot start.
 */
import * as T from "@lightning-ts/tensor";
import { assertClose, describeBackends, seeded, tolerance } from "@lightning-ts/testing";
import { FIXTURE_DIR } from "@lightning-ts/testing/tnl-fixture";
import { BatchDecoder, disposeParams, disposeState, initState, loadCheckpoint, prefill, step, type TnlState } from "@lightning-ts/tnl";
import { expect, it } from "vitest";
import { extraRowsAgainstPrefill } from "../../tnl/test/extra-rows-check.js";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import "./setup.js";

const cpu = T.createCpuBackend();
const floats = async (t: T.Tensor) => Float64Array.from(await t.data());

await describeBackends("CUDA graphs", (backend) => {
  const rng = seeded(59);
  const gpu = () => backend() as CudaBackend;

  it("records without running, replays on current inputs, keeps its buffers to itself", async () => {
    const n = 4099;
    const xs = rng.array(n);
    const x = T.tensor(xs, [n], { backend: gpu() });
    const y = T.tensor(rng.array(n), [n], { backend: gpu() });
    T.scope(() => void T.add(T.mul(x, 3), T.exp(y))); // warm-up outside the recording
    const liveBefore = gpu().memory().liveBytes;
    const graph = gpu().captureGraph(() => T.scope(() => T.add(T.mul(x, 3), T.exp(y))));
    const out = graph.result;
    // Tensors made after the recording must not share the graph's buffers.
    const bystanders = [1, 2, 3].map((v) => T.full([n], v, { backend: gpu() }));
    for (let round = 0; round < 3; round++) {
      const fresh = rng.array(n);
      gpu().write(x.handle.storage as CudaStorage, new Uint8Array(Float32Array.from(fresh).buffer));
      graph.replay();
      // The same kernels run eagerly give the same bits; the CPU agrees to f32 rounding.
      const want = T.scope(() => T.add(T.mul(x, 3), T.exp(y)));
      const got = await floats(out);
      expect(Array.from(got)).toEqual(Array.from(await floats(want)));
      want.dispose();
      const ys = await y.data();
      const host = T.scope(() => T.add(T.mul(T.tensor(fresh, [n], { backend: cpu }), 3), T.exp(T.tensor(ys, [n], { backend: cpu }))));
      assertClose(got, await floats(host), { ...tolerance("f32"), label: `replay ${round} vs the CPU` });
      host.dispose();
      for (const [i, b] of bystanders.entries()) expect(new Set(await b.data())).toEqual(new Set([i + 1]));
    }
    out.dispose(); // before the graph: a no-op for the allocator
    graph.dispose();
    graph.dispose();
    expect(() => graph.replay()).toThrow(/disposed/);
    for (const t of [x, y, ...bystanders]) t.dispose();
    expect(gpu().memory().liveBytes).toBeLessThanOrEqual(liveBefore);
  });

  it("refuses host reads, writes and syncs inside a recording and stays usable after a failed one", async () => {
    const x = T.tensor(rng.array(37), [37], { backend: gpu() });
    expect(() => gpu().captureGraph(() => T.mul(x, 2).dataSync())).toThrow(/readSync is not allowed while a CUDA graph is being captured/);
    expect(() => gpu().captureGraph(() => T.tensor([1, 2, 3], [3], { backend: gpu() }))).toThrow(/write is not allowed while a CUDA graph is being captured/);
    expect(() =>
      gpu().captureGraph(() => {
        throw new Error("planned");
      }),
    ).toThrow(/planned/);
    const y = T.mul(x, 2);
    expect(Array.from(await y.data())).toEqual(Array.from(await x.data(), (v) => v * 2));
    x.dispose();
    y.dispose();
  });

  for (const dtype of ["f32", "bf16"] as const) {
    it(`BatchDecoder replays graphs with the eager bits and step's logits (${dtype})`, async () => {
      T.setBackend(gpu());
      const model = await loadCheckpoint(FIXTURE_DIR, { dtype });
      const V = model.config.vocabSize;
      const prompts = [[5, 9, 14], [2], [7, 7, 30, 41, 3, 11, 99, 100, 4]];
      const prefilled = (p: number[]): TnlState => {
        const r = prefill(model.params, model.config, [p], { logits: "last" });
        r.logits.dispose();
        return r.state;
      };
      const withGraphs = new BatchDecoder(model.params, model.config, { capacity: 4 });
      const eager = new BatchDecoder(model.params, model.config, { capacity: 4, graphs: false });
      expect(withGraphs.graphs).toBe(true);
      const refs = prompts.map(prefilled);
      // The same model on the CPU, which runs the decode step's fused ops as their decompositions:
      // each row's logits within the dtype's rounding of the two backends' (summation orders, the
      // fused kernels' single roundings of each layer's products and residual adds). In bf16 this
      // model's logits on the CPU are 0.9–2.0% (relative RMS) and ≤ 2.2% of the largest from its
      // f32 logits over these steps; two bf16 runs that round at different places may be up to
      // about √2 times that apart.
      const host = await loadCheckpoint(FIXTURE_DIR, { dtype, backend: cpu });
      /** `fn` with the CPU as the default backend (the token ids a step makes go there). */
      const onCpu = <R>(fn: () => R): R => {
        T.setBackend(cpu);
        try {
          return fn();
        } finally {
          T.setBackend(gpu());
        }
      };
      const hostRefs = prompts.map((p) =>
        onCpu(() => {
          const r = prefill(host.params, host.config, [p], { logits: "last" });
          r.logits.dispose();
          return r.state;
        }),
      );
      for (const s of refs) {
        withGraphs.add(s);
        eager.add(s);
      }
      for (let k = 0; k < 6; k++) {
        if (k === 3) {
          // Leaving changes the bucket (3 rows → 2): another graph.
          withGraphs.remove(0);
          eager.remove(0);
          disposeState(refs.splice(0, 1, refs.pop()!)[0]);
          disposeState(hostRefs.splice(0, 1, hostRefs.pop()!)[0]);
        }
        if (k === 4) {
          // A sequence from the empty state joins into the row just freed (which holds a stale
          // state): addFresh zeroes it in place, and the bucket is 4 rows again.
          expect(withGraphs.addFresh()).toBe(2);
          expect(eager.addFresh()).toBe(2);
          refs.push(initState(model.config, 1));
          hostRefs.push(onCpu(() => initState(host.config, 1)));
        }
        const tokens = refs.map((_, r) => (17 * k + 5 * r + 1) % V);
        const a = withGraphs.step(tokens);
        const b = eager.step(tokens);
        const la = await floats(a.logits);
        expect(Array.from(la), `step ${k}: graph vs eager`).toEqual(Array.from(await floats(b.logits)));
        const ga = Array.from(await a.greedy.data());
        expect(ga).toEqual(Array.from(await b.greedy.data()));
        for (let r = 0; r < refs.length; r++) {
          const row = la.subarray(r * V, (r + 1) * V);
          expect(ga[r], `greedy, step ${k} row ${r}`).toBe(row.indexOf(Math.max(...row)));
          const single = step(model.params, model.config, refs[r], [tokens[r]]);
          if (dtype === "f32") {
            const want = await floats(single.logits);
            const diff = Math.max(...Array.from(want, (w, i) => Math.abs(w - row[i])));
            expect(diff, `step ${k} row ${r} vs step alone`).toBeLessThan(1e-4);
          }
          single.logits.dispose();
          disposeState(refs[r]);
          refs[r] = single.state;
          const onHost = onCpu(() => step(host.params, host.config, hostRefs[r], [tokens[r]]));
          const want = await floats(onHost.logits);
          const big = Math.max(...Array.from(want, Math.abs));
          assertClose(row, want, { ...(dtype === "f32" ? { atol: 1e-4 * big, rtol: 3e-5 } : { atol: 0.05 * big, rtol: 4e-2 }), label: `step ${k} row ${r} vs the CPU` });
          onHost.logits.dispose();
          disposeState(hostRefs[r]);
          hostRefs[r] = onHost.state;
        }
      }
      refs.forEach(disposeState);
      hostRefs.forEach(disposeState);
      disposeParams(host.params);
      withGraphs.dispose();
      eager.dispose();
      disposeParams(model.params);
    }, 120_000);

    it(`BatchDecoder with extraRows: several tokens a row in one step, graphs with the eager bits, a prefill's logits (${dtype})`, async () => {
      T.setBackend(gpu());
      const model = await loadCheckpoint(FIXTURE_DIR, { dtype });
      const host = await loadCheckpoint(FIXTURE_DIR, { dtype, backend: cpu });
      const withGraphs = new BatchDecoder(model.params, model.config, { capacity: 4, extraRows: 12 });
      const eager = new BatchDecoder(model.params, model.config, { capacity: 4, extraRows: 12, graphs: false });
      // Within the dtype's rounding of the two backends, as the one-token test above.
      await extraRowsAgainstPrefill([withGraphs, eager], host, gpu(), dtype === "f32" ? { atol: 1e-4, rtol: 3e-5 } : { atol: 0.05, rtol: 4e-2 });
      disposeParams(host.params);
      withGraphs.dispose();
      eager.dispose();
      disposeParams(model.params);
    }, 120_000);
  }
});
