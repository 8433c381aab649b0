/**
 * Oracles of the fused decode-step ops (addRmsNorm, rmsNormGate, splitQkvu), shared by their CPU
 * tests here and their CUDA tests (packages/cuda/test/decode-ops.test.ts): the chain of ops the TNL
 * decode step ran before them, and float64 host references.
 */
import * as T from "@lightning-ts/tensor";

export const EPS = 1e-6;

/** x / √(mean(x²) + eps) of each row of width M, in float64. */
export function rmsRows(x: readonly number[], M: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / M; r++) {
    const row = x.slice(r * M, (r + 1) * M);
    const inv = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / M + EPS);
    out.push(...row.map((v) => v * inv));
  }
  return out;
}

export const ACTS: Record<T.QkvActivation, (x: number) => number> = {
  silu: (x) => x / (1 + Math.exp(-x)),
  relu: (x) => Math.max(x, 0),
  "1+elu": (x) => (x > 0 ? x + 1 : Math.exp(x)),
  none: (x) => x,
};

/**
 * The chain the TNL decode step ran before splitQkvu (packages/tnl/src/model.ts: narrows of
 * [B, 1, 4·hid], reshapes to [B, H, 1, hd], φ, then `lrpe`), back in the op's output shapes.
 */
export function modelChain(qkvu: T.Tensor, H: number, act: T.QkvActivation, theta?: T.Tensor, positions?: T.Tensor): T.Tensor[] {
  const [B, W] = qkvu.shape as [number, number];
  const hid = W / 4;
  const hd = hid / H;
  const x3 = T.reshape(qkvu, [B, 1, W]);
  const heads = (t: T.Tensor) => T.reshape(t, [B, H, 1, hd]);
  const phi = (t: T.Tensor) => (act === "silu" ? T.silu(t) : act === "relu" ? T.relu(t) : act === "1+elu" ? T.add(T.relu(t), T.exp(T.minimum(t, 0))) : t);
  const lrpe = (t: T.Tensor) => {
    if (!theta || !positions) return t;
    const dtype = theta.dtype === "f64" ? "f64" : "f32";
    const th = T.reshape(theta.dtype === dtype ? theta : T.cast(theta, dtype), [1, H, 1, hd]);
    const angle = T.mul(th, T.reshape(positions, [B, 1, 1, 1]));
    const inDtype = (a: T.Tensor) => (a.dtype === t.dtype ? a : T.cast(a, t.dtype));
    return T.concat([T.mul(t, inDtype(T.cos(angle))), T.mul(t, inDtype(T.sin(angle)))], -1);
  };
  const [q0, k0, v0, u] = [0, 1, 2, 3].map((i) => T.narrow(x3, 2, i * hid, hid));
  const D = theta ? 2 * hd : hd;
  return [T.reshape(lrpe(phi(heads(q0))), [B, H, D]), T.reshape(lrpe(phi(heads(k0))), [B, H, D]), T.reshape(heads(v0), [B, H, hd]), T.reshape(u, [B, hid])];
}

/** splitQkvu in float64 on the host; phases rounded to f32 unless θ is f64 (the op's phase dtype). */
export function splitOracle(x: number[], B: number, H: number, act: T.QkvActivation, theta?: { values: number[]; f64: boolean }, positions?: number[]): number[][] {
  const hid = x.length / B / 4;
  const hd = hid / H;
  const D = theta ? 2 * hd : hd;
  const [q, k, v, u] = [new Array<number>(B * H * D), new Array<number>(B * H * D), new Array<number>(B * hid), new Array<number>(B * hid)];
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < hid; c++) {
      const [h, d] = [Math.floor(c / hd), c % hd];
      const row = b * 4 * hid;
      const [aq, ak] = [ACTS[act](x[row + c]), ACTS[act](x[row + hid + c])];
      v[b * hid + c] = x[row + 2 * hid + c];
      u[b * hid + c] = x[row + 3 * hid + c];
      const o = (b * H + h) * D + d;
      if (!theta || !positions) {
        [q[o], k[o]] = [aq, ak];
        continue;
      }
      const product = theta.values[c] * positions[b];
      const angle = theta.f64 ? product : Math.fround(product);
      [q[o], q[o + hd], k[o], k[o + hd]] = [aq * Math.cos(angle), aq * Math.sin(angle), ak * Math.cos(angle), ak * Math.sin(angle)];
    }
  }
  return [q, k, v, u];
}
