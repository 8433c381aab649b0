/** Fused kernels: softmax, logSoftmax, softmax cross-entropy (forward and backward), SRMSNorm (forward and backward). */
import type { Kernel, KernelTable } from "../backend.js";
import { argError } from "../errors.js";
import { aroundAxis } from "./iterate.js";
import { type CpuStorage, type FloatArray, readFloat, view, writeFloat } from "./storage.js";

/** Softmax or log-softmax along an axis, in float64 with the max subtracted for stability. */
function softmaxKernel(log: boolean): Kernel<"softmax" | "logSoftmax", CpuStorage> {
  return ({ inputs: [x], outputs: [y], attrs: { axis } }) => {
    const src = readFloat(x);
    const { out, commit } = writeFloat(y);
    const { outer, n, inner } = aroundAxis(x.shape, axis);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const at = (j: number) => (o * n + j) * inner + i;
        let m = -Infinity;
        for (let j = 0; j < n; j++) m = Math.max(m, src[at(j)]);
        let s = 0;
        for (let j = 0; j < n; j++) s += Math.exp(src[at(j)] - m);
        const lse = Math.log(s);
        for (let j = 0; j < n; j++) {
          const z = src[at(j)] - m;
          out[at(j)] = log ? z - lse : Math.exp(z) / s;
        }
      }
    }
    commit();
  };
}

function checkLabel(op: string, label: number, row: number, V: number, ignoreIndex: number): boolean {
  if (label === ignoreIndex) return false;
  if (label < 0 || label >= V) argError(op, "labels", `values in [0, ${V}) or ${ignoreIndex} (ignoreIndex)`, `${label} at row ${row}`);
  return true;
}

/** Row-wise log-sum-exp of logits [N, V]. */
function logSumExp(x: FloatArray, row: number, V: number): number {
  let m = -Infinity;
  for (let j = 0; j < V; j++) m = Math.max(m, x[row * V + j]);
  let s = 0;
  for (let j = 0; j < V; j++) s += Math.exp(x[row * V + j] - m);
  return m + Math.log(s);
}

const softmaxCrossEntropy: Kernel<"softmaxCrossEntropy", CpuStorage> = ({ inputs: [logits, labels], outputs: [loss], attrs }) => {
  const [N, V] = logits.shape as [number, number];
  const x = readFloat(logits);
  const lab = view(labels) as Int32Array;
  const out = view(loss) as FloatArray;
  for (let r = 0; r < N; r++) {
    out[r] = checkLabel("softmaxCrossEntropy", lab[r], r, V, attrs.ignoreIndex) ? logSumExp(x, r, V) - x[r * V + lab[r]] : 0;
  }
};

/** dlogits = (softmax(logits) − onehot(label)) · dloss, zero on ignored rows. */
const softmaxCrossEntropyBackward: Kernel<"softmaxCrossEntropyBackward", CpuStorage> = ({ inputs: [logits, labels, dloss], outputs: [dx], attrs }) => {
  const [N, V] = logits.shape as [number, number];
  const x = readFloat(logits);
  const lab = view(labels) as Int32Array;
  const g = view(dloss) as FloatArray;
  const { out, commit } = writeFloat(dx);
  for (let r = 0; r < N; r++) {
    if (!checkLabel("softmaxCrossEntropyBackward", lab[r], r, V, attrs.ignoreIndex)) {
      out.fill(0, r * V, (r + 1) * V);
      continue;
    }
    const lse = logSumExp(x, r, V);
    for (let j = 0; j < V; j++) out[r * V + j] = (Math.exp(x[r * V + j] - lse) - (j === lab[r] ? 1 : 0)) * g[r];
  }
  commit();
};

/** y = x · r with r = 1 / sqrt(mean(x²) + eps) per row of the last axis. */
const rmsNorm: Kernel<"rmsNorm", CpuStorage> = ({ inputs: [x], outputs: [y], attrs: { eps } }) => {
  const src = readFloat(x);
  const { out, commit } = writeFloat(y);
  const M = x.shape[x.shape.length - 1];
  for (let o = 0; o < src.length; o += M) {
    let ss = 0;
    for (let j = 0; j < M; j++) ss += src[o + j] * src[o + j];
    const r = 1 / Math.sqrt(ss / M + eps);
    for (let j = 0; j < M; j++) out[o + j] = src[o + j] * r;
  }
  commit();
};

/** dx = r · (dy − x̂ · mean(x̂ · dy)) with x̂ = x · r. */
const rmsNormBackward: Kernel<"rmsNormBackward", CpuStorage> = ({ inputs: [x, dy], outputs: [dx], attrs: { eps } }) => {
  const src = readFloat(x);
  const g = readFloat(dy);
  const { out, commit } = writeFloat(dx);
  const M = x.shape[x.shape.length - 1];
  for (let o = 0; o < src.length; o += M) {
    let ss = 0;
    for (let j = 0; j < M; j++) ss += src[o + j] * src[o + j];
    const r = 1 / Math.sqrt(ss / M + eps);
    let dot = 0;
    for (let j = 0; j < M; j++) dot += src[o + j] * r * g[o + j];
    dot /= M;
    for (let j = 0; j < M; j++) out[o + j] = r * (g[o + j] - src[o + j] * r * dot);
  }
  commit();
};

export const nnKernels = {
  softmax: softmaxKernel(false),
  logSoftmax: softmaxKernel(true),
  softmaxCrossEntropy,
  softmaxCrossEntropyBackward,
  rmsNorm,
  rmsNormBackward,
} satisfies Pick<KernelTable<CpuStorage>, "softmax" | "logSoftmax" | "softmaxCrossEntropy" | "softmaxCrossEntropyBackward" | "rmsNorm" | "rmsNormBackward">;
