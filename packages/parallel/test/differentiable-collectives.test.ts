import { createCpuBackend, CpuCollective, createCpuGroup, addOpObserver, type Collective, type PendingCollective, type Tensor } from "@lightning-ts/tensor";
import { assertClose, seeded } from "@lightning-ts/tensor/testing";
import { describe, expect, it } from "vitest";
import { dataParallel } from "../src/index.js";
import { inputs, SHAPE } from "./diff-inputs.js";
import { runGroup } from "./group.js";
import { matmul, sum, tanh } from "@lightning-ts/tensor";

const add = (a: number[], b: number[]) => a.map((v, i) => v + b[i]);
const scale = (a: number[], s: number) => a.map((v) => v * s);
const data = (t: Tensor) => Array.from(t.dataSync());

describe("differentiable collectives: gradients of Σ_r L_r on each rank", () => {
  for (const n of [2, 3]) {
    it(`${n} ranks, every op`, async () => {
      const ranks = await runGroup<Record<string, number[]>>("diff-collectives", n);
      const all = Array.from({ length: n }, (_, r) => inputs(r, n));
      const sumW = (key: keyof (typeof all)[0]["w"]) => all.map((a) => data(a.w[key])).reduce(add);
      const size = SHAPE[0] * SHAPE[1];
      ranks.forEach((got, r) => {
        const close = (name: string, want: number[]) => assertClose(got[name], want, { rtol: 1e-6, atol: 1e-5, label: `rank ${r}: ${name}` });
        // allGather: rank r's x is slot r of every rank's output.
        close("allGather", all.map((a) => data(a.w.allGather).slice(r * size, (r + 1) * size)).reduce(add));
        close("allReduce", sumW("allReduce"));
        close("allReduceAvg", scale(sumW("allReduceAvg"), 1 / n));
        // reduceScatter: block q of every x feeds rank q's output.
        close("reduceScatter", all.flatMap((a) => data(a.w.reduceScatter)));
        close("reduceScatterAvg", scale(all.flatMap((a) => data(a.w.reduceScatterAvg)), 1 / n));
        close("broadcast", r === n - 1 ? sumW("broadcast") : new Array<number>(size).fill(0));
        close("copyToRanks", sumW("copyToRanks"));
        close("reduceFromRanks", data(all[r].w.reduceFromRanks));
      });
      expect(SHAPE[0] % n).toBe(0);
    });
  }
});

describe("dataParallel.valueAndGrad overlap", () => {
  it("starts bucket all-reduces while the backward pass is still running, in bucket order", () => {
    const backend = createCpuBackend({ threads: 1 });
    const inner = new CpuCollective(createCpuGroup(1), 0, backend);
    const events: string[] = [];
    const spy: Collective = Object.assign(Object.create(inner) as Collective, {
      allReduceAsync: (x: Tensor): PendingCollective => {
        events.push(`allReduce ${x.size}`);
        return inner.allReduceAsync(x);
      },
    });
    const rng = seeded(77);
    const p = { a: rng.tensor([4, 6], { backend }), b: rng.tensor([6, 5], { backend }), c: rng.tensor([5, 3], { backend }) };
    const x = rng.tensor([2, 4], { backend });
    const stop = addOpObserver((rec) => rec.op === "matmul" && events.push("matmul"));
    // 24-element buckets in f32: c (15) alone, b (30) alone, a (24) alone.
    const { grads } = dataParallel(spy, { bucketBytes: 96 }).valueAndGrad((q: typeof p) => sum(tanh(matmul(tanh(matmul(tanh(matmul(x, q.a)), q.b)), q.c))))(p);
    stop();
    const firstReduce = events.indexOf("allReduce 15");
    expect(events.filter((e) => e.startsWith("allReduce"))).toEqual(["allReduce 15", "allReduce 30", "allReduce 24"]);
    // Backward matmuls (for b and a) run after c's bucket started.
    expect(events.slice(firstReduce).filter((e) => e === "matmul").length).toBeGreaterThanOrEqual(3);
    expect(grads.a!.shape).toEqual([4, 6]);
  });
});
