/**
 * Lightning Attention's segment states (`segmentTokens`) on WebGPU. Its kernels keep none, so the
 * backend names no segment length (it has no `lightningSegmentTokens`), and a forward asked for them
 * is refused before any work. The backward given them ignores them: the suite of
 * packages/tensor/test/lightning-segments-suite.ts, bit for bit against the backward without them,
 * on the fast kernels and on the plain scan (both read the initial state, which without one is not
 * input 6).
 */
import * as T from "@lightning-ts/tensor";
import { describeBackends } from "@lightning-ts/testing";
import { expect, it } from "vitest";
import { segmentInputs, segmentStatesBackwardSuite } from "../../tensor/test/lightning-segments-suite.js";
import { describePlainWebGpu } from "./plain-backend.js";
import "./setup.js";

await describeBackends("lightningAttention with segmentTokens", (backend) => {
  it("is refused before any work, naming segmentTokens; lightningAttention() runs without them", async () => {
    const be = backend();
    expect("lightningSegmentTokens" in be).toBe(false);
    const x = segmentInputs(be, { B: 1, H: 2, T: 300, D: 8, E: 12 }, "f32", 9);
    const tensors = T.liveTensorCount();
    const bytes = be.memory().liveBytes;
    for (const hasInitialState of [false, true]) {
      const inputs = [x.q, x.k, x.v, x.slopes, ...(hasInitialState ? [x.s0] : [])];
      expect(() => T.runOp("lightningAttention", inputs, { blockSize: 64, impl: "chunked", hasInitialState, segmentTokens: 256 })).toThrow(
        /^lightningAttention: argument 'segmentTokens' expected 0 on the webgpu backend \(it keeps no segment states; a backend that does says so through lightningSegmentTokens\), got 256$/,
      );
      expect(T.liveTensorCount()).toBe(tensors);
      expect(be.memory().liveBytes).toBe(bytes);
    }
    const records: T.OpRecord[] = [];
    const stop = T.addOpObserver((r) => records.push(r));
    const o = T.lightningAttention(x.q, x.k, x.v, x.slopes);
    stop();
    expect(records.map((r) => [r.op, r.attrs])).toEqual([["lightningAttention", { blockSize: 64, impl: "chunked", hasInitialState: false }]]);
    expect((await o.data()).length).toBe(2 * 300 * 12);
    for (const t of [o, x.q, x.k, x.v, x.slopes, x.s0, x.dO, x.dS]) t.dispose();
  });
});

await describeBackends("lightningAttentionBackward with the segment states", (backend) => segmentStatesBackwardSuite(backend));

// The same with every kernel plain: the backward's three sweeps on the scan.
await describePlainWebGpu("lightningAttentionBackward with the segment states", segmentStatesBackwardSuite);
