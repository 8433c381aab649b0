/**
 * The float64 oracle the CUDA Lightning Attention tests share: the recurrence on the CPU backend, run
 * on the values the GPU tensors hold.
 */
import * as T from "@lightning-ts/tensor";
import type { Tensor } from "@lightning-ts/tensor";

const cpu = T.createCpuBackend();

export interface LightningDims {
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
}

/** A tensor's values, read back as float64. */
export async function host(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.data());
}

/** Output, final state and every gradient of the float64 recurrence for these inputs and cotangents. */
export function lightningOracle(c: LightningDims, q: Float64Array, k: Float64Array, v: Float64Array, slopes: number[], s0: Float64Array | null, dO: Float64Array, dS: Float64Array) {
  const f64 = (x: Float64Array, shape: number[]) => T.tensor(x, shape, { dtype: "f64", backend: cpu });
  return T.scope(() => {
    const args = [f64(q, [c.B, c.H, c.T, c.D]), f64(k, [c.B, c.H, c.T, c.D]), f64(v, [c.B, c.H, c.T, c.E]), T.tensor(slopes, [c.H], { backend: cpu })] as const;
    const S0 = s0 ? f64(s0, [c.B, c.H, c.D, c.E]) : undefined;
    const fwd = T.lightningAttention(...args, { impl: "recurrent", initialState: S0, returnState: true });
    const g = T.lightningAttentionBackward(...args, f64(dO, [c.B, c.H, c.T, c.E]), f64(dS, [c.B, c.H, c.D, c.E]), { impl: "recurrent", initialState: S0 });
    return { o: fwd.output.dataSync(), S: fwd.state.dataSync(), dq: g.dq.dataSync(), dk: g.dk.dataSync(), dv: g.dv.dataSync(), dS0: g.dInitialState?.dataSync() };
  });
}
