import { describe, expect, it } from "vitest";
import * as T from "../src/index.js";

const f = (shape: number[], dtype: T.DType = "f32") => T.zeros(shape, { dtype });
const adam: T.AdamwOptions = { lr: 1e-3, step: 1 };

/** Lightning Attention's q, k, v [1, 2, T, 3] / [1, 2, T, 4] and slopes, without an initial state. */
const lightning = (Tn: number) => [f([1, 2, Tn, 3]), f([1, 2, Tn, 3]), f([1, 2, Tn, 4]), f([2])];
/** Its backward's dO and dFinalState. */
const grads = (Tn: number) => [f([1, 2, Tn, 4]), f([1, 2, 3, 4])];
const lightningArgs = (Tn: number) => [...lightning(Tn), ...grads(Tn)] as [T.Tensor, T.Tensor, T.Tensor, T.Tensor, T.Tensor, T.Tensor];
const noState = { blockSize: 64, impl: "chunked", hasInitialState: false } as const;

/** Each case: the call, and the message it must produce (op, argument, expected, received). */
const CASES: [string, () => unknown, RegExp][] = [
  ["mismatched broadcast", () => T.add(f([2, 3]), f([4])), /^add: argument 'b' expected a shape broadcastable with \[2, 3\], got \[4\]$/],
  ["mixed dtypes", () => T.mul(f([2]), f([2], "f16")), /^mul: argument 'b' expected dtype f32 \(as the first input\), got f16$/],
  ["unary on integers", () => T.exp(f([2], "i32")), /^exp: argument 'x' expected a float tensor \(f32, f64, f16 or bf16\), got i32 \[2\]$/],
  ["axis out of range", () => T.sum(f([2, 3]), 2), /^sum: argument 'axes' expected an integer axis in \[-2, 1\], got 2$/],
  ["repeated axes", () => T.sum(f([2, 3]), [1, -1]), /^sum: argument 'axes' expected distinct axes, got \[1,-1\]$/],
  ["matmul rank", () => T.matmul(f([3]), f([3, 2])), /^matmul: argument 'a' expected rank >= 2, got rank 1 \[3\]$/],
  ["matmul inner dims", () => T.matmul(f([2, 3]), f([4, 2])), /^matmul: argument 'b' expected inner dimension 3 \(from a \[2, 3\]\), got 4 \(b \[4, 2\]\)$/],
  ["matmul batch dims", () => T.matmul(f([2, 2, 3]), f([3, 3, 2])), /^matmul: argument 'b' expected a shape broadcastable with \[2\], got \[3\]$/],
  ["reshape size", () => T.reshape(f([2, 3]), [4, 2]), /^reshape: argument 'shape' expected a shape of 6 elements \(x is \[2, 3\]\), got \[4, 2\]$/],
  ["permute", () => T.permute(f([2, 3]), [0, 0]), /^permute: argument 'perm' expected a permutation of \[0\.\.1\], got \[0,0\]$/],
  ["concat shapes", () => T.concat([f([2, 3]), f([2, 4])], 0), /^concat: argument 'xs\[1\]' expected shape \[2, 3\] except on axis 0, got \[2, 4\]$/],
  ["split sections", () => T.split(f([5]), 2), /^split: argument 'sections' expected a divisor of 5/],
  ["expand", () => T.expand(f([3]), [2, 4]), /^expand: argument 'x' expected a shape broadcastable to \[2, 4\], got \[3\]$/],
  ["gather index dtype", () => T.gather(f([3]), f([1])), /^gather: argument 'indices' expected dtype i32, got f32 \[1\]$/],
  ["gather index range", () => T.gather(f([3]), T.tensor([3], [1], { dtype: "i32" })), /^gather: argument 'indices' expected values in \[0, 3\), got 3 at position 0$/],
  ["embedding out of vocabulary", () => T.embedding(f([4, 2]), T.tensor([1, -1], [2], { dtype: "i32" })), /^embedding: argument 'ids' expected values in \[0, 4\), got -1 at position 1$/],
  ["cross-entropy label", () => T.softmaxCrossEntropy(f([2, 3]), T.tensor([0, 5], [2], { dtype: "i32" })), /^softmaxCrossEntropy: argument 'labels' expected values in \[0, 3\) or -100 \(ignoreIndex\), got 5 at row 1$/],
  ["cross-entropy rank", () => T.softmaxCrossEntropy(f([2, 3, 1]), T.tensor([0, 1], [2], { dtype: "i32" })), /^softmaxCrossEntropy: argument 'logits' expected rank 2, got rank 3 \[2, 3, 1\]$/],
  ["rmsNorm eps", () => T.rmsNorm(f([2]), 0), /^rmsNorm: argument 'eps' expected a positive finite number, got 0$/],
  ["siluBackward dy shape", () => T.siluBackward(f([2, 3]), f([3, 2])), /^siluBackward: argument 'dy' expected shape \[2, 3\], got \[3, 2\]$/],
  ["siluBackward dy dtype", () => T.siluBackward(f([3]), f([3], "bf16")), /^siluBackward: argument 'dy' /],
  ["where condition", () => T.where(f([2]), f([2]), f([2])), /^where: argument 'cond' expected dtype u8, got f32 \[2\]$/],
  ["bad dtype", () => T.zeros([2], { dtype: "f128" as T.DType }), /^fill: argument 'dtype' expected one of f32, f64, f16, bf16, i32, u8, got f128$/],
  ["bad shape", () => T.zeros([2, -1]), /^fill: argument 'shape' expected an array of non-negative integers, got \[2,-1\]$/],
  ["ragged values", () => T.tensor([[1, 2], [3]]), /^tensor: argument 'values' expected a regular nested array \(length 2 at depth 1\), got length 1$/],
  ["values vs shape", () => T.tensor([1, 2, 3], [2, 2]), /^tensor: argument 'shape' expected a shape of 3 elements, got \[2, 2\]$/],
  ["adamw half param", () => T.adamwUpdate(f([3], "bf16"), f([3], "bf16"), f([3], "bf16"), f([3], "bf16"), adam), /^adamwUpdate: argument 'param' expected dtype f32 or f64 \(a half-precision parameter is updated through its f32 master copy\), got bf16 \[3\]$/],
  ["adamw grad dtype", () => T.adamwUpdate(f([3], "f64"), f([3]), f([3], "f64"), f([3], "f64"), adam), /^adamwUpdate: argument 'grad' expected dtype f64 \(as param\), got f32 \[3\]$/],
  ["adamw grad shape", () => T.adamwUpdate(f([2, 3]), f([3, 2]), f([2, 3]), f([2, 3]), adam), /^adamwUpdate: argument 'grad' expected shape \[2, 3\], got \[3, 2\]$/],
  ["adamw expAvg dtype", () => T.adamwUpdate(f([3]), f([3], "bf16"), f([3], "bf16"), f([3]), adam), /^adamwUpdate: argument 'expAvg' expected dtype f32 \(as param\), got bf16 \[3\]$/],
  ["adamw expAvgSq shape", () => T.adamwUpdate(f([3]), f([3]), f([3]), f([1]), adam), /^adamwUpdate: argument 'expAvgSq' expected shape \[3\], got \[1\]$/],
  ["adamw beta2", () => T.adamwUpdate(f([3]), f([3]), f([3]), f([3]), { ...adam, beta2: 1 }), /^adamwUpdate: argument 'beta2' expected a number in \[0, 1\), got 1$/],
  ["adamw step", () => T.adamwUpdate(f([3]), f([3]), f([3]), f([3]), { ...adam, step: 0 }), /^adamwUpdate: argument 'step' expected a positive integer \(the step count t, from 1\), got 0$/],
  ["adamw lr", () => T.adamwUpdate(f([3]), f([3]), f([3]), f([3]), { ...adam, lr: NaN }), /^adamwUpdate: argument 'lr' expected a non-negative finite number, got NaN$/],
  ["adamw castTo", () => T.adamwUpdate(f([3]), f([3]), f([3]), f([3]), { ...adam, castTo: "f32" as "bf16" }), /^adamwUpdate: argument 'castTo' expected 'bf16', 'f16' or nothing, got f32$/],
  ["lightning q rank", () => T.runOp("lightningAttention", [f([2, 3, 4]), f([2, 3, 4]), f([2, 3, 4]), f([3])], { blockSize: 64, impl: "chunked", hasInitialState: false }), /^lightningAttention: argument 'q' expected rank 4, got rank 3 \[2, 3, 4\]$/],
  ["lightning segmentTokens", () => T.runOp("lightningAttention", lightning(65), { ...noState, segmentTokens: 100 }), /^lightningAttention: argument 'segmentTokens' expected a non-negative multiple of 64 \(0: off\), got 100$/],
  ["lightning negative segmentTokens", () => T.runOp("lightningAttentionBackward", [...lightning(65), ...grads(65)], { ...noState, segmentTokens: -64 }), /^lightningAttentionBackward: argument 'segmentTokens' expected a non-negative multiple of 64 \(0: off\), got -64$/],
  ["lightning backward without its segment states", () => T.runOp("lightningAttentionBackward", [...lightning(65), ...grads(65)], { ...noState, segmentTokens: 64 }), /^lightningAttentionBackward: argument 'segmentStates' expected 7 inputs \(the segment states last, after dFinalState\), got 6$/],
  ["lightning backward with an initial state, without its segment states", () => T.runOp("lightningAttentionBackward", [...lightning(65), ...grads(65), f([1, 2, 3, 4])], { ...noState, hasInitialState: true, segmentTokens: 64 }), /^lightningAttentionBackward: argument 'segmentStates' expected 8 inputs \(the segment states last, after initialState\), got 7$/],
  ["lightning segment states count", () => T.runOp("lightningAttentionBackward", [...lightning(65), ...grads(65), f([1, 2, 1, 3, 4])], { ...noState, segmentTokens: 64 }), /^lightningAttentionBackward: argument 'segmentStates' expected shape \[1, 2, 2, 3, 4\], got \[1, 2, 1, 3, 4\]$/],
  ["lightning segment states of L = 128", () => T.runOp("lightningAttentionBackward", [...lightning(200), ...grads(200), f([1, 2, 3, 3, 4])], { ...noState, segmentTokens: 128 }), /^lightningAttentionBackward: argument 'segmentStates' expected shape \[1, 2, 2, 3, 4\], got \[1, 2, 3, 3, 4\]$/],
  ["lightning segment states dtype", () => T.runOp("lightningAttentionBackward", [...lightning(65), ...grads(65), f([1, 2, 3, 4]), f([1, 2, 2, 3, 4], "f64")], { ...noState, hasInitialState: true, segmentTokens: 64 }), /^lightningAttentionBackward: argument 'segmentStates' expected dtype f32, got f64 \[1, 2, 2, 3, 4\]$/],
  ["lightning segment states disposed, named as such without an initial state", () => {
    const states = f([1, 2, 2, 3, 4]);
    states.dispose();
    return T.runOp("lightningAttentionBackward", [...lightning(65), ...grads(65), states], { ...noState, segmentTokens: 64 });
  }, /^lightningAttentionBackward: argument 'segmentStates' expected a live tensor, got tensor #\d+ that was disposed$/],
  ["lightning segment states without segmentTokens", () => T.lightningAttentionBackward(...lightningArgs(65), { segmentStates: f([1, 2, 2, 3, 4]) }), /^lightningAttentionBackward: argument 'options.segmentTokens' expected the tokens per segment of options.segmentStates \(both or neither\), got none$/],
  ["lightning segmentTokens without segment states", () => T.lightningAttentionBackward(...lightningArgs(65), { segmentTokens: 64 }), /^lightningAttentionBackward: argument 'options.segmentStates' expected the segment states of options.segmentTokens = 64 \(both or neither\), got none$/],
  ["lightning segment states of segmentTokens 0", () => T.lightningAttentionBackward(...lightningArgs(65), { segmentStates: f([1, 2, 2, 3, 4]), segmentTokens: 0 }), /^lightningAttentionBackward: argument 'options.segmentTokens' expected a positive multiple of 64 \(the tokens per segment of options.segmentStates\), got 0$/],
];

describe("bad arguments throw errors naming the op, the argument, the expectation and what came", () => {
  for (const [name, call, message] of CASES) {
    it(name, () => {
      const before = T.liveTensorCount();
      expect(() => T.scope(call)).toThrow(message);
      // A failed op leaves nothing allocated behind.
      expect(T.liveTensorCount()).toBe(before);
    });
  }
});

describe("tensors on two backends", () => {
  it("are told apart even when both are CPU backends", () => {
    const other = T.createCpuBackend({ threads: 1 });
    const a = T.zeros([2]);
    const b = T.zeros([2], { backend: other });
    expect(() => T.add(a, b)).toThrow(/^add: argument 'b' expected a tensor on the cpu backend #\d+ \(as the first input\), got one on the cpu backend #\d+$/);
    a.dispose();
    b.dispose();
    other.dispose();
  });
});
