/**
 * Sequence-parallel Lightning Attention (LASP-2): rank r of N holds tokens r·L … (r+1)·L − 1 of
 * q, k [B, H, L, D] and v [B, H, L, E]. With λ = exp(−s) per head and the kernel's conventions
 * (docs/ALGORITHM.md: S_t = λ S_{t−1} + k_tᵀ v_t, o_t = q_t S_t, so an initial state S₀ adds
 * λ^{t+1} q_t S₀ at local position t, and a span of L tokens decays a state by λ^L):
 *
 *   1. each rank but the last computes what its tokens add to the state, M_r = Σ_s λ^{L−1−s} k_sᵀ v_s
 *      (`lightningState`; rank 0 adds λ^L S₀ for a user state S₀);
 *   2. it sends M_r to every later rank, point to point, and receives the earlier ranks' M_j;
 *   3. rank r's incoming state is the decay-weighted prefix S_r = Σ_{j<r} λ^{L(r−1−j)} M_j;
 *   4. the chunked kernel runs once on the rank's tokens from S_r, which it takes natively; where
 *      the backend keeps the states at its forward's segment boundaries (CUDA at batch 1), the
 *      rank keeps them for its backward, whose dq pass then makes none of its own.
 *
 * Backward, the same in reverse. Rank r's incoming state gets G_r = Σ_t λ^{t+1} q_tᵀ dO_t + λ^L dS_T
 * (`lightningState` of q and dO, reversed: a pass over two inputs, not the kernel's backward), and
 * sends rank j < r its share λ^{L(r−1−j)} G_r, the gradient of M_j; the sum of what the later ranks
 * sent, dM_r, joins the final state's cotangent of the kernel's backward, because M_r depends on k and
 * v exactly as the final state does. So each rank runs one backward kernel, and what it adds over one
 * GPU is one state pass each way.
 *
 * Data flows one way in each direction (earlier to later ranks forward, back in the backward pass),
 * so point-to-point on the communication stream lets a rank run ahead of the ranks after it instead
 * of meeting all of them at every layer as an all-gather would: a rank waits only for the states
 * (forward) or gradients (backward) it needs; its sends are waited for (and their buffers released)
 * in the next pass the other way. In both directions each rank receives first (the nearest peer
 * first) and sends after (the nearest first): an order without cycles, so blocking point-to-point
 * (the CPU collective, or NCCL kernels on one stream) cannot deadlock, and the receives the compute
 * stream waits for never queue behind sends to peers that have not reached the same layer.
 *
 * Letters: B batch, H heads, L tokens per rank (T/N), D q/k head dim, E value head dim, N ranks.
 */
import { customOp } from "@lightning-ts/autograd";
import {
  add,
  cast,
  type Collective,
  type DType,
  exp,
  lightningAttention,
  lightningAttentionBackward,
  lightningState,
  mul,
  type PendingCollective,
  reshape,
  retain,
  scope,
  type Tensor,
} from "@lightning-ts/tensor";
import type { AttentionFn } from "@lightning-ts/tnl";

export interface SequenceParallelAttentionOptions {
  /** Block size of the local chunked kernel (default: the kernel's). */
  blockSize?: number;
  /** The state before the whole sequence [B, H, D, E]; rank 0 only (the others get it through the exchange). */
  initialState?: Tensor;
}

/** λ^n per head as [1, H, 1, 1]: exp(−s·n), in `dtype`. */
function decay(slopes: Tensor, n: number, dtype: DType): Tensor {
  const s = slopes.dtype === dtype ? slopes : cast(slopes, dtype);
  return reshape(exp(mul(s, -n)), [1, slopes.shape[0], 1, 1]);
}

/**
 * Sends on the communication stream not yet waited for, per collective: a forward pass's are waited
 * for by the next backward pass (or, without one, once more than MAX_FORWARD_SENDS are in flight), a
 * backward pass's by the next forward call. Their tensors stay allocated until then.
 */
const inFlight = new WeakMap<Collective, { forward: PendingCollective[]; backward: PendingCollective[] }>();
const MAX_FORWARD_SENDS = 256;

function sendsOf(c: Collective) {
  let s = inFlight.get(c);
  if (!s) inFlight.set(c, (s = { forward: [], backward: [] }));
  return s;
}

function settle(list: PendingCollective[], keep = 0): void {
  while (list.length > keep) list.shift()!.wait();
}

/**
 * Lightning Attention over a sequence split across the ranks of `c`. Returns this rank's output
 * [B, H, L, E] and the state after its last token [B, H, D, E] (on the last rank: the final state
 * of the whole sequence). Differentiable in q, k, v and rank 0's initial state.
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
  const N = c.worldSize;
  const s0 = options.initialState;
  if (s0 && r !== 0) {
    throw new Error(`sequenceParallelLightning: initialState is rank 0's (the state before the first token), rank ${r} got one`);
  }
  const [B, H, L, D] = q.shape;
  const E = v.shape[3];
  // The kernel's states are f32 (f64 for f64 inputs).
  const sdt: DType = q.dtype === "f64" ? "f64" : "f32";
  const stateShape = [B, H, D, E];
  const sends = sendsOf(c);
  const blockSize = options.blockSize;
  // The backward reads the inputs and this rank's incoming state, which the forward makes, and the
  // states the backend's forward kept at its segment boundaries, where it keeps any (its dq pass
  // then makes none of its own).
  const save: Tensor[] = [q, k, v, slopes];
  let held: Tensor | undefined;
  let heldSegments: Tensor | undefined;
  let incomingAt = -1;
  let segmentsAt = -1;
  let segmentTokens = 0;

  const forward = (): Tensor[] =>
    scope(() => {
      settle(sends.backward);
      settle(sends.forward, MAX_FORWARD_SENDS);
      const received: Tensor[] = [];
      for (let j = r - 1; j >= 0; j--) received[j] = c.recvAsync(stateShape, sdt, j).wait();
      if (r < N - 1) {
        let mine = lightningState(k, v, slopes);
        if (s0) mine = add(mine, mul(s0, decay(slopes, L, sdt)));
        for (let j = r + 1; j < N; j++) sends.forward.push(c.sendAsync(mine, j));
      }
      let incoming = s0;
      for (let j = 0; j < r; j++) {
        const term = mul(received[j], decay(slopes, L * (r - 1 - j), sdt));
        incoming = incoming ? add(incoming, term) : term;
      }
      if (incoming) {
        incomingAt = save.length;
        save.push((held = retain(incoming)));
      }
      const f = lightningAttention(q, k, v, slopes, { returnSegmentStates: true, blockSize, initialState: incoming });
      if (f.segmentStates) {
        segmentTokens = f.segmentTokens;
        segmentsAt = save.length;
        save.push((heldSegments = retain(f.segmentStates)));
      }
      return [f.output, f.state];
    });

  const backward = ([dO, dF]: readonly Tensor[], saved: readonly Tensor[]): (Tensor | null)[] => {
    const [sq, sk, sv, sSlopes] = saved;
    const sIncoming = incomingAt >= 0 ? saved[incomingAt] : undefined;
    const segments = segmentsAt >= 0 ? { segmentStates: saved[segmentsAt], segmentTokens } : {};
    settle(sends.forward);
    // What this rank's incoming state owes the earlier ranks' M_j (sent below).
    const G = r > 0 ? add(lightningState(sq, dO, sSlopes, { reverse: true }), mul(dF, decay(sSlopes, L, sdt))) : undefined;
    // What the later ranks' incoming states owe this rank's M_r, added to the final state's cotangent.
    let dFinal = dF;
    for (let i = r + 1; i < N; i++) dFinal = add(dFinal, c.recvAsync(stateShape, sdt, i).wait());
    if (G) for (let j = r - 1; j >= 0; j--) sends.backward.push(c.sendAsync(mul(G, decay(sSlopes, L * (r - 1 - j), sdt)), j));
    const g = lightningAttentionBackward(sq, sk, sv, sSlopes, dO, dFinal, { blockSize, initialState: sIncoming, ...segments });
    // Rank 0's dInitialState counts its M_0's part too (M_0 holds λ^L S₀): the kernel's, with dFinal.
    return [g.dq, g.dk, g.dv, null, ...(s0 ? [g.dInitialState ?? null] : [])];
  };

  const [output, state] = customOp("sequenceParallelLightning", s0 ? [q, k, v, slopes, s0] : [q, k, v, slopes], forward, backward, { save, always: true });
  held?.dispose();
  heldSegments?.dispose();
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
