/** Reductions (sum, mean, max, min over any axes) and argmax along one axis. Sums accumulate in float64. */
import type { Kernel, KernelTable } from "../backend.js";
import type { ReduceOpName } from "../ops/attrs.js";
import { aroundAxis, forEachBroadcastRow } from "./iterate.js";
import { type CpuStorage, readAny, storeAs, view } from "./storage.js";

function reduceKernel(op: ReduceOpName): Kernel<ReduceOpName, CpuStorage> {
  return ({ inputs: [x], outputs: [y], attrs: { axes } }) => {
    const src = readAny(x);
    // The output viewed with the input's rank: reduced axes have size 1 and so get stride 0.
    const keptShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const init = op === "max" ? -Infinity : op === "min" ? Infinity : 0;
    const acc = new Float64Array(y.size).fill(init);
    const combine =
      op === "max"
        ? (a: number, v: number) => (v > a || v !== v ? v : a)
        : op === "min"
          ? (a: number, v: number) => (v < a || v !== v ? v : a)
          : (a: number, v: number) => a + v;
    forEachBroadcastRow(x.shape, [keptShape], (o, [io], n, [so]) => {
      for (let j = 0; j < n; j++) {
        const k = io + j * so;
        acc[k] = combine(acc[k], src[o + j]);
      }
    });
    if (op === "mean") {
      const count = x.size / Math.max(y.size, 1);
      for (let i = 0; i < acc.length; i++) acc[i] = acc[i] / count;
    }
    if (y.dtype === "i32") (view(y) as Int32Array).set(acc.map((v) => v | 0));
    else storeAs(y, acc);
  };
}

const argmax: Kernel<"argmax", CpuStorage> = ({ inputs: [x], outputs: [y], attrs: { axis } }) => {
  const src = readAny(x);
  const out = view(y) as Int32Array;
  const { outer, n, inner } = aroundAxis(x.shape, axis);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = -Infinity;
      let at = 0;
      for (let j = 0; j < n; j++) {
        const v = src[(o * n + j) * inner + i];
        // NaN counts as the maximum, as in NumPy and PyTorch.
        if (v > best || (v !== v && best === best)) {
          best = v;
          at = j;
          if (v !== v) break;
        }
      }
      out[o * inner + i] = at;
    }
  }
};

export const reduceKernels = {
  sum: reduceKernel("sum"),
  mean: reduceKernel("mean"),
  max: reduceKernel("max"),
  min: reduceKernel("min"),
  argmax,
} satisfies Pick<KernelTable<CpuStorage>, ReduceOpName | "argmax">;
