/**
 * The attention implementations the `attention` suite times, one entry each: Lightning Attention
 * through its three kernels, and causal softmax attention as the quadratic baseline. A backend's
 * own fused softmax kernel, or a new Lightning kernel variant, is one more entry here.
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim.
 */
import * as T from "@lightning-ts/tensor";
import type { Tensor } from "@lightning-ts/tensor";

export interface AttentionInputs {
  q: Tensor; // (B, H, T, D)
  k: Tensor; // (B, H, T, D)
  v: Tensor; // (B, H, T, E)
  slopes: Tensor; // (H)
}

export interface AttentionImpl {
  name: string;
  /** Which float64 oracle checks it. */
  family: "lightning" | "softmax";
  /** Largest T run by default (quadratic forms grow with T²); undefined = no limit. */
  defaultMaxT?: number;
  forward(x: AttentionInputs): Tensor;
  /** Forward then backward for upstream dO; returns [dq, dk, dv]. */
  forwardBackward(x: AttentionInputs, dO: Tensor): Tensor[];
}

function lightning(impl: "chunked" | "recurrent" | "quadratic", defaultMaxT?: number): AttentionImpl {
  return {
    name: impl,
    family: "lightning",
    defaultMaxT,
    forward: ({ q, k, v, slopes }) => T.lightningAttention(q, k, v, slopes, { impl }),
    // As a gradient tape runs it: the states the forward kept at its segment boundaries (where the
    // backend keeps any: CUDA at batch 1) go to the backward.
    forwardBackward: ({ q, k, v, slopes }, dO) => {
      const f = T.lightningAttention(q, k, v, slopes, { impl, returnSegmentStates: true });
      const [B, H, , D] = q.shape as [number, number, number, number];
      const dS = T.zeros([B, H, D, v.shape[3]]);
      const segments = f.segmentStates ? { segmentStates: f.segmentStates, segmentTokens: f.segmentTokens } : {};
      const g = T.lightningAttentionBackward(q, k, v, slopes, dO, dS, { impl, ...segments });
      return [g.dq, g.dk, g.dv];
    },
  };
}

/** Additive causal mask (T, T): 0 on and below the diagonal, −∞ above. */
function causalMask(t: number): Tensor {
  const values = new Float32Array(t * t);
  for (let i = 0; i < t; i++) values.fill(-Infinity, i * t + i + 1, (i + 1) * t);
  return T.tensor(values, [t, t]);
}

/** P = softmax(q kᵀ / √D + mask), o = P v — the plain form every backend can run. */
function softmaxProbs({ q, k }: AttentionInputs): Tensor {
  const D = q.shape[3];
  return T.softmax(T.add(T.mul(T.matmul(q, k, { transB: true }), 1 / Math.sqrt(D)), causalMask(q.shape[2])));
}

export const softmaxAttention: AttentionImpl = {
  name: "softmax",
  family: "softmax",
  defaultMaxT: 2048,
  forward: (x) => T.matmul(softmaxProbs(x), x.v),
  forwardBackward: (x, dO) => {
    const P = softmaxProbs(x);
    T.matmul(P, x.v);
    // dS = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = dO vᵀ; the 1/√D of the scores scales dq and dk.
    const dP = T.matmul(dO, x.v, { transB: true });
    const dS = T.mul(P, T.sub(dP, T.sum(T.mul(dP, P), -1, true)));
    const scale = 1 / Math.sqrt(x.q.shape[3]);
    const dq = T.mul(T.matmul(dS, x.k), scale);
    const dk = T.mul(T.matmul(dS, x.q, { transA: true }), scale);
    const dv = T.matmul(P, dO, { transA: true });
    return [dq, dk, dv];
  },
};

const IMPLS: AttentionImpl[] = [lightning("chunked"), lightning("recurrent"), lightning("quadratic", 256), softmaxAttention];

export function attentionImpls(): readonly AttentionImpl[] {
  return IMPLS;
}

/** Adds an implementation (a backend's own kernel, or a test's deliberately broken one). */
export function registerAttentionImpl(impl: AttentionImpl): () => void {
  IMPLS.push(impl);
  return () => IMPLS.splice(IMPLS.indexOf(impl), 1);
}
