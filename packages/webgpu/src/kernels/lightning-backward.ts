/**
 * The Lightning backward on the fast forward kernels (walk or blocked): each of its three sweeps
 * (lightning.ts) is a forward of other inputs, two of them in reversed time. With λ = exp(−slope),
 * G_t = ∂L/∂S_t and reversed time t' = T − 1 − t:
 *
 *   dq  = forward(q = dO, k = v,  v = k)  with the initial state S₀ᵀ                      [E×D]
 *   dv' = forward(q = k', k = q', v = dO') with the initial state λ⁻¹·dS_final              [D×E]
 *   dk' = forward(q = v', k = dO', v = q') with the initial state λ⁻¹·dS_finalᵀ             [E×D]
 *   dS₀ = λ · (the dv forward's final state)
 *
 * (x' is x in reversed time.) The reversed sweeps of lightning.ts carry G with exponents shifted by
 * one (α = 0, β = 1); a forward with its initial state divided by λ gives the same sums, and its
 * final state times λ is G₀ = dS₀. The segment walk reads the reversed sweeps' inputs and writes
 * their outputs in reversed time itself (`WalkForward.reversed`), so dk and dv come out in time
 * order with no copies; the blocked forward runs them on reversed f32 copies (`reversed`) and
 * reverses its output back (`reverseTime`). A sweep whose shape the fast kernels do not take runs
 * the plain scan (lightning.ts decides, per sweep).
 *
 * λ⁻¹ = exp(slope) is finite in f32 only below a slope of ~88; past MAX_SLOPE the kernel that
 * divides records the error (runtime ERROR_CODES) and the next read throws it, naming `slopes`.
 * TNL's slopes are below 1.
 */
import { ERROR_CODES, type Runtime } from "../runtime.js";
import { groups, type Ref, WG } from "./common.js";
import { REPORT } from "./indexing.js";

/** The largest slope the fast backward divides the final state's gradient by λ for (λ⁻¹ = e^64 ≈ 6e27). */
export const MAX_SLOPE = 64;

/** y[bh, T − 1 − t, w] = x[bh, t, w] as f32, for x of shape (BH, T, W) in any float dtype. */
export function reverseTime(rt: Runtime, x: Ref, y: GPUBuffer, dims: { BH: number; T: number; W: number }): void {
  const { BH, T, W } = dims;
  const n = BH * T * W;
  rt.dispatch({
    key: `reverse_time:${x.dtype}`,
    shader: () => ({
      doc: [`x: (BH, T, W) ${x.dtype}`, "y: (BH, T, W) f32, time reversed"],
      bindings: [
        { name: "x", dtype: x.dtype, access: "read" },
        { name: "y", access: "rw" },
      ],
      workgroupSize: WG,
      // Params: n, T, W.
      body: `  if (gid >= pu(0u)) { return; }
  let T = pu(1u); let W = pu(2u);
  let row = gid / W; let w = gid % W;
  let bh = row / T; let t = row % T;
  y[(bh * T + (T - 1u - t)) * W + w] = bitcast<u32>(x_f(gid));`,
    }),
    bindings: [
      { buffer: x.storage, access: "read" },
      { buffer: y, access: "rw" },
    ],
    params: [n, T, W],
    workgroups: groups(n),
  });
}

/** x in reversed time, as a new f32 tensor ref (the caller releases its storage). */
export function reversed(rt: Runtime, x: Ref, dims: { BH: number; T: number; W: number }): Ref {
  const storage = rt.acquire(x.size * 4);
  reverseTime(rt, x, storage, dims);
  return { storage, shape: x.shape, dtype: "f32", size: x.size };
}

/**
 * y = exp(power · slope_h) · s for each batch·head's R×C state s (f32), stored C×R (transposed)
 * or R×C. power 1 divides by λ and reports a slope above MAX_SLOPE; −1 multiplies by λ.
 */
export function scaleState(
  rt: Runtime,
  s: GPUBuffer,
  slopes: Ref,
  y: GPUBuffer,
  shape: { BH: number; H: number; R: number; C: number },
  how: { transpose: boolean; power: -1 | 0 | 1 },
): void {
  const { BH, H, R, C } = shape;
  const n = BH * R * C;
  rt.dispatch({
    key: `scale_state:${how.transpose ? "t" : "n"}:${how.power}`,
    shader: () => ({
      doc: ["s: (BH, R, C) f32", "slopes: (H) f32", `y: (BH, ${how.transpose ? "C, R" : "R, C"}) f32, times exp(${how.power} · slope)`, "err: (4) atomic u32"],
      bindings: [
        { name: "s", dtype: "f32", access: "read" },
        { name: "slopes", dtype: "f32", access: "read" },
        { name: "y", access: "rw" },
        { name: "err", access: "atomic" },
      ],
      workgroupSize: WG,
      decls: REPORT,
      // Params: n, H, R, C, error code.
      body: `  if (gid >= pu(0u)) { return; }
  let H = pu(1u); let R = pu(2u); let C = pu(3u);
  let bh = gid / (R * C); let rc = gid % (R * C);
  let r = rc / C; let c = rc % C;
  let slope = slopes_f(bh % H);
  ${how.power === 1 ? `if (!(slope <= ${MAX_SLOPE}.0)) { if (rc == 0u) { report(pu(4u), bitcast<i32>(slope), bh % H, ${MAX_SLOPE}u); } return; }` : ""}
  let factor = ${how.power === 0 ? "1.0" : how.power === 1 ? "exp(slope)" : "exp(-slope)"};
  let at = ${how.transpose ? "(bh * C + c) * R + r" : "gid"};
  y[at] = bitcast<u32>(factor * s_f(gid));`,
    }),
    bindings: [
      { buffer: s, access: "read" },
      { buffer: slopes.storage, access: "read" },
      { buffer: y, access: "rw" },
      { buffer: rt.errorBuffer, access: "atomic" },
    ],
    params: [n, H, R, C, ERROR_CODES.lightningAttentionBackward],
    workgroups: groups(n),
  });
}
