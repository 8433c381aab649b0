/**
 * Sequence-parallel Lightning Attention (LASP-2): rank r of N holds tokens r·L … (r+1)·L − 1 of
 * q, k [B, H, L, D] and v [B, H, L, E]. With λ = exp(−s) per head and the kernel's conventions
 * (docs/ALGORITHM.md: S_t = λ S_{t−1} + k_tᵀ v_t, o_t = q_t S_t, so an initial state S₀ adds
 * λ^{t+1} q_t S₀ at local position t, and a span of L tokens decays a state by λ^L):
 *
 *   1. each rank computes what its tokens add to the state, M_r = Σ_s λ^{L−1−s} k_sᵀ v_s, as one
 *      matmul of the decay-weighted keys with the values (rank 0 adds λ^L S₀ for a user state S₀);
 *   2. one all-gather of the M_j ([N, B, H, D, E], independent of T);
 *   3. rank r's incoming state is the decay-weighted prefix S_r = Σ_{j<r} λ^{L(r−1−j)} M_j;
 *   4. the chunked kernel runs once on the rank's tokens from S_r, which it takes natively.
 *
 * Every rank does the same work (no rank waits on another's kernel before its all-gather), and no
 * activation-sized temporary is kept beyond the weighted keys. Everything is a differentiable op
 * (the all-gather's adjoint is the reduce-scatter), so the backward is autograd's: the kernel's
 * backward locally, its gradient of S_r back through the prefix and the reduce-scatter to M_r, and
 * from M_r to k and v.
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
  sum,
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
 * M = Σ_s λ^{L−1−s} k_sᵀ v_s for k [B, H, L, D], v [B, H, L, E]: the state L tokens leave behind
 * from zero, [B, H, D, E] in `stateDtype`. The weights are made in the state dtype (f32, f64 for f64
 * inputs) and the weighted keys kept in the input dtype, as the kernel rounds its operands (the
 * matmul accumulates in f32).
 */
function spanState(k: Tensor, v: Tensor, slopes: Tensor, stateDtype: DType): Tensor {
  const L = k.shape[2];
  const s = slopes.dtype === stateDtype ? slopes : cast(slopes, stateDtype);
  const ages = tensor(Array.from({ length: L }, (_, t) => L - 1 - t), [1, 1, L, 1], { dtype: stateDtype, backend: k.backend });
  const w = exp(neg(mul(reshape(s, [1, slopes.shape[0], 1, 1]), ages))); // [1, H, L, 1]
  const kw = mul(k, w.dtype === k.dtype ? w : cast(w, k.dtype));
  const toState = (t: Tensor) => (t.dtype === stateDtype ? t : cast(t, stateDtype));
  const [B, H, , D] = k.shape;
  const E = v.shape[3];
  if (L <= SPAN_CHUNK || L % SPAN_CHUNK !== 0) return toState(matmul(kw, v, { transA: true })); // [B, H, D, E]
  // A D×E product over a long L is B·H output tiles with an L-long inner loop: too few blocks to
  // fill a GPU. Chunks of SPAN_CHUNK tokens give B·H·L/SPAN_CHUNK products, summed in the state dtype.
  const c = L / SPAN_CHUNK;
  const parts = matmul(reshape(kw, [B, H, c, SPAN_CHUNK, D]), reshape(v, [B, H, c, SPAN_CHUNK, E]), { transA: true }); // [B, H, c, D, E]
  return sum(toState(parts), 2);
}

/** Tokens per product when a rank's span state is computed in chunks (see `spanState`). */
export const SPAN_CHUNK = 1024;

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
  // The kernel's states are f32 (f64 for f64 inputs).
  const sdt: DType = q.dtype === "f64" ? "f64" : "f32";
  let mine = spanState(k, v, slopes, sdt);
  if (options.initialState) mine = add(mine, mul(options.initialState, decay(slopes, L, sdt)));
  const states = allGather(c, mine); // [N, B, H, D, E]
  const stateShape = mine.shape;
  let incoming: Tensor | undefined = options.initialState;
  for (let j = 0; j < r; j++) {
    const term = mul(reshape(narrow(states, 0, j, 1), stateShape), decay(slopes, L * (r - 1 - j), sdt));
    incoming = incoming ? add(incoming, term) : term;
  }
  return lightningAttention(q, k, v, slopes, { returnState: true, blockSize: options.blockSize, initialState: incoming });
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
