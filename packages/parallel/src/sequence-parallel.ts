/**
 * Sequence-parallel Lightning Attention (LASP-2): rank r of N holds tokens r·L … (r+1)·L − 1 of
 * q, k [B, H, L, D] and v [B, H, L, E]. With λ = exp(−s) per head and the kernel's conventions
 * (docs/ALGORITHM.md; an initial state S₀ adds λ^{t+1} q_t S₀ at local position t, and a span of
 * L tokens decays a state by λ^L):
 *
 *   1. each rank runs the chunked kernel on its tokens with no initial state: output o_r and
 *      final state M_r = Σ_s λ^{L−1−s} k_sᵀ v_s (rank 0 starts from the user's state S₀, if any,
 *      so its M_0 includes λ^L S₀);
 *   2. one all-gather of the M_j ([N, B, H, D, E], independent of T);
 *   3. rank r's incoming state is the decay-weighted prefix S_r = Σ_{j<r} λ^{L(r−1−j)} M_j;
 *   4. o_t += λ^{t+1} q_t S_r, one matmul instead of a second Lightning pass.
 *
 * Everything is a differentiable op (the all-gather's adjoint is the reduce-scatter), so the
 * backward is autograd's: the kernel's backward locally, the reduce-scatter across ranks.
 *
 * Letters: B batch, H heads, L tokens per rank (T/N), D q/k head dim, E value head dim, N ranks.
 */
import {
  add,
  cast,
  type Collective,
  type DType,
  exp,
  lightningAttention,
  matmul,
  mul,
  narrow,
  neg,
  reshape,
  type Tensor,
  tensor,
} from "@lightning-ts/tensor";
import type { AttentionFn } from "@lightning-ts/tnl";
import { allGather } from "./collectives.js";

export interface SequenceParallelAttentionOptions {
  /** Block size of the local chunked kernel (default: the kernel's). */
  blockSize?: number;
  /** The state before the whole sequence [B, H, D, E]; rank 0 only (the others get it through the all-gather). */
  initialState?: Tensor;
}

/** λ^n per head as [1, H, 1, 1]: exp(−s·n), in `dtype`. */
function decay(slopes: Tensor, n: number, dtype: DType): Tensor {
  const s = slopes.dtype === dtype ? slopes : cast(slopes, dtype);
  return reshape(exp(mul(s, -n)), [1, slopes.shape[0], 1, 1]);
}

/**
 * Lightning Attention over a sequence split across the ranks of `c`. Returns this rank's output
 * [B, H, L, E] and the state after its last token [B, H, D, E] (on the last rank: the final state
 * of the whole sequence).
 *
 * @example
 * const { output } = sequenceParallelLightning(collective, q, k, v, slopes); // q: this rank's [B, H, T/N, D]
 */
export function sequenceParallelLightning(
  c: Collective,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  slopes: Tensor,
  options: SequenceParallelAttentionOptions = {},
): { output: Tensor; state: Tensor } {
  const r = c.rank;
  if (options.initialState && r !== 0) {
    throw new Error(`sequenceParallelLightning: initialState is rank 0's (the state before the first token), rank ${r} got one`);
  }
  const L = q.shape[2];
  const local = lightningAttention(q, k, v, slopes, { returnState: true, blockSize: options.blockSize, initialState: options.initialState });
  const states = allGather(c, local.state); // [N, B, H, D, E]
  if (r === 0) return local;
  const sdt = local.state.dtype;
  const stateShape = local.state.shape;
  let incoming: Tensor | null = null;
  for (let j = 0; j < r; j++) {
    const term = mul(reshape(narrow(states, 0, j, 1), stateShape), decay(slopes, L * (r - 1 - j), sdt));
    incoming = incoming ? add(incoming, term) : term;
  }
  const S = incoming!; // [B, H, D, E]
  // λ^{t+1} for local positions t = 0 … L − 1, as [1, H, L, 1].
  const steps = tensor(Array.from({ length: L }, (_, t) => t + 1), [1, 1, L, 1], { dtype: sdt, backend: q.backend });
  const s = slopes.dtype === sdt ? slopes : cast(slopes, sdt);
  const lam = exp(neg(mul(reshape(s, [1, slopes.shape[0], 1, 1]), steps)));
  // The inter-rank term in the state dtype (f32 for half inputs), added in the output dtype.
  const qs = q.dtype === sdt ? q : cast(q, sdt);
  const inter = matmul(mul(qs, lam), S); // [B, H, L, E]
  const output = add(local.output, inter.dtype === q.dtype ? inter : cast(inter, q.dtype));
  const state = add(local.state, mul(S, decay(slopes, L, sdt)));
  return { output, state };
}

/**
 * The `attention` option of TNL's forward for a rank holding a slice of the sequence.
 *
 * @example
 * const logits = forward(params, config, sliceIds, { attention: sequenceParallelAttention(collective), positionOffset });
 */
export function sequenceParallelAttention(c: Collective): AttentionFn {
  return (q, k, v, slopes, options) =>
    sequenceParallelLightning(c, q, k, v, slopes, {
      blockSize: options.blockSize,
      // A state carried into a sliced forward belongs to the start of the sequence: rank 0's.
      initialState: c.rank === 0 ? options.initialState : undefined,
    });
}
