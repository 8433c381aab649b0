/**
 * One decode step for a batch of independent sequences, each at its own position.
 *
 * Why this exists: `step` from @lightning-ts/tnl takes one batched state with a single `position`,
 * which LRPE layers use as the position of every row. Under continuous batching the rows joined at
 * different times, so their positions differ, and `step` would rotate q and k of most rows by the
 * wrong angle. This is the T = 1 path of the package's `forwardFull` with one position per row;
 * everything else (weights, op order, the recurrent `lightningStep`) is the same, and the tests
 * check it against `step` row by row.
 *
 * Each sequence keeps its own state of batch 1 (constant size, whatever its length); the step
 * concatenates them along the batch axis, runs once, and splits the new states back.
 *
 * Letters: B batch (sequences), H heads, D q/k head dim (2·hd with LRPE), E value head dim (= hd),
 * M model width, V vocabulary.
 */
import {
  add,
  cast,
  concat,
  cos,
  embedding,
  exp,
  lightningStep,
  matmul,
  minimum,
  mul,
  relu,
  reshape,
  rmsNorm,
  scope,
  silu,
  sin,
  slopesTensor,
  split,
  type Tensor,
  tensor,
  tnlSlopes,
} from "@lightning-ts/tensor";
import { headDim, type TnlConfig, type TnlModel, type TnlState } from "@lightning-ts/tnl";

const srms = (x: Tensor) => rmsNorm(x, 1e-6);

/** x [..., K] · Wᵀ for W [N, K]. */
function linear(x: Tensor, w: Tensor): Tensor {
  const lead = x.shape.slice(0, -1);
  const y = matmul(reshape(x, [-1, x.shape[x.rank - 1]!]), w, { transB: true });
  return reshape(y, [...lead, w.shape[0]!]);
}

function activate(x: Tensor, act: TnlConfig["activation"]): Tensor {
  switch (act) {
    case "silu":
    case "swish":
      return silu(x);
    case "relu":
      return relu(x);
    case "1+elu":
      return add(relu(x), exp(minimum(x, 0)));
    case "none":
      return x;
  }
}

/** LRPE of x [B, H, hd] with row b at absolute position positions[b] → [B, H, 2·hd]. */
function lrpeRows(x: Tensor, theta: Tensor, positions: readonly number[]): Tensor {
  const dtype = theta.dtype === "f64" ? "f64" : "f32";
  const pos = tensor(positions, [positions.length, 1, 1], { dtype }); // [B, 1, 1]
  const th = reshape(theta.dtype === dtype ? theta : cast(theta, dtype), [1, theta.shape[0]!, theta.shape[2]!]); // [1, H, hd]
  const angle = mul(th, pos); // [B, H, hd]
  const inDtype = (t: Tensor) => (t.dtype === x.dtype ? t : cast(t, x.dtype));
  return concat([mul(x, inDtype(cos(angle))), mul(x, inDtype(sin(angle)))], -1);
}

/**
 * Feeds tokens[b] to sequence b (whose state is states[b], batch 1) and returns logits [B, V]
 * and each sequence's next state. The given states are left as they were.
 *
 * @example
 * const { logits, states: next } = batchStep(model, [stateA, stateB], [17, 4]);
 */
export function batchStep(model: TnlModel, states: readonly TnlState[], tokens: readonly number[]): { logits: Tensor; states: TnlState[] } {
  const { params, config: c } = model;
  const B = tokens.length;
  if (states.length !== B) throw new RangeError(`batchStep: ${states.length} states for ${B} tokens`);
  const H = c.numHeads;
  const hd = headDim(c);
  const positions = states.map((s) => s.position);
  return scope(() => {
    const ids = tensor(tokens, [B, 1], { dtype: "i32" });
    let x = reshape(mul(embedding(params.embed, ids), c.noScaleEmbedding ? 1 : Math.sqrt(c.dModel)), [B, c.dModel]); // [B, M]
    const layerStates: Tensor[] = [];
    params.layers.forEach((lp, layer) => {
      const [q0, k0, v0, u] = split(linear(srms(x), lp.qkvu), 4, -1) as [Tensor, Tensor, Tensor, Tensor]; // each [B, hid]
      const heads = (t: Tensor) => reshape(t, [B, H, hd]);
      let q = activate(heads(q0), c.activation);
      let k = activate(heads(k0), c.activation);
      if (lp.theta) {
        q = lrpeRows(q, lp.theta, positions);
        k = lrpeRows(k, lp.theta, positions);
      }
      const S = B === 1 ? states[0]!.kv[layer]! : concat(states.map((s) => s.kv[layer]!), 0); // [B, H, D, E]
      const slopes = slopesTensor(tnlSlopes(H, layer, c.numLayers));
      const r = lightningStep(q, k, heads(v0), slopes, S); // output [B, H, E]
      layerStates.push(r.state);
      x = add(x, linear(mul(srms(reshape(r.output, [B, c.hiddenDim])), u), lp.out));
      const n = srms(x);
      x = add(x, linear(mul(linear(n, lp.l1), linear(n, lp.l2)), lp.l3));
    });
    const logits = linear(srms(x), params.lmHead ?? params.embed); // [B, V]
    const perLayer = layerStates.map((t) => (B === 1 ? [t] : split(t, B, 0)));
    const next = states.map((s, b) => ({ position: s.position + 1, kv: perLayer.map((parts) => parts[b]!) }));
    return { logits, states: next };
  });
}
