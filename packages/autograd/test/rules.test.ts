/**
 * Every rule of the table against float64 central differences, on seeded inputs with odd shapes,
 * broadcasting and repeated use of one input. The coverage test fails for a differentiable op
 * without a case here, and each case checks that it really ran the op it is filed under.
 */
import {
  add,
  addRmsNorm,
  addOpObserver,
  BINARY_OPS,
  type BinaryOpName,
  cast,
  concat,
  copy,
  copyTo,
  createCpuBackend,
  type DataHandle,
  div,
  embedding,
  embeddingBackward,
  expand,
  gather,
  getBackend,
  lightningAttention,
  liveTensorCount,
  logSoftmax,
  matmul,
  max,
  mean,
  min,
  mul,
  type OpName,
  type OpRecord,
  pad,
  permute,
  reshape,
  rmsNorm,
  rmsNormGate,
  fusedLinear,
  runOp,
  scatterAdd,
  setBackend,
  slice,
  softmax,
  softmaxCrossEntropy,
  sum,
  type Tensor,
  tensor,
  UNARY_OPS,
  type UnaryOpName,
  where,
  run1,
} from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { assertGrad, type CheckGradOptions, GRAD_RULES, isNondiff } from "../src/index.js";
import { awayFromZero, ints, mask, positive, rand } from "./helpers.js";

const otherCpu = createCpuBackend({ threads: 1 });

interface Case {
  name: string;
  fn: (...xs: Tensor[]) => Tensor | readonly Tensor[];
  inputs: () => Tensor[];
  options?: CheckGradOptions;
}

const unaryDomain: Partial<Record<UnaryOpName, (v: number) => number>> = {
  abs: awayFromZero,
  relu: awayFromZero,
  reciprocal: awayFromZero,
  log: positive,
  sqrt: positive,
  rsqrt: positive,
};

function unaryCases(op: UnaryOpName): Case[] {
  const f = unaryDomain[op];
  const apply = (x: Tensor) => run1(op, [x], {});
  return [
    { name: "[3, 5]", fn: (x) => apply(x), inputs: () => [rand(1, [3, 5], f)] },
    // x used twice: through the op and directly.
    { name: "op(x) · x, [2, 3, 7]", fn: (x) => mul(apply(x), x), inputs: () => [rand(2, [2, 3, 7], f)] },
  ];
}

const binaryDomain: Partial<Record<BinaryOpName, [(v: number) => number, (v: number) => number]>> = {
  div: [(v) => v, awayFromZero],
  pow: [positive, (v) => v],
};

function binaryCases(op: BinaryOpName): Case[] {
  const [fa, fb] = binaryDomain[op] ?? [(v: number) => v, (v: number) => v];
  const apply = (a: Tensor, b: Tensor) => run1(op, [a, b], {});
  return [
    { name: "[3, 5] with [3, 5]", fn: (a, b) => apply(a, b), inputs: () => [rand(3, [3, 5], fa), rand(4, [3, 5], fb)] },
    { name: "broadcast [2, 1, 5] with [3, 1]", fn: (a, b) => apply(a, b), inputs: () => [rand(5, [2, 1, 5], fa), rand(6, [3, 1], fb)] },
    { name: "broadcast [] with [3, 5]", fn: (a, b) => apply(a, b), inputs: () => [rand(7, [], fa), rand(8, [3, 5], fb)] },
    // Both operands the same tensor: the two contributions must add up.
    { name: "op(x, x), [3, 5]", fn: (x) => apply(x, x), inputs: () => [rand(9, [3, 5], (v) => fa(fb(v)))] },
  ];
}

const reduceCases = (op: (x: Tensor, axes?: number | number[], keepdims?: boolean) => Tensor): Case[] => [
  { name: "axis 1 of [3, 4, 5]", fn: (x) => op(x, 1), inputs: () => [rand(10, [3, 4, 5])] },
  { name: "axes [0, 2], keepdims", fn: (x) => op(x, [0, 2], true), inputs: () => [rand(11, [3, 4, 5])] },
  { name: "all axes", fn: (x) => op(x), inputs: () => [rand(12, [3, 5])] },
  { name: "x · op(x, 1, keepdims)", fn: (x) => mul(x, op(x, 1, true)), inputs: () => [rand(13, [3, 7])] },
];

/**
 * assertGrad evaluates on a CPU backend, which implements every Lightning Attention kernel (forward
 * and backward, all three impls): nothing here is skipped, and an unsupported kernel fails the case.
 */
function lightningCases(): Case[] {
  // q, k: [B, H, T, D] = [1, 2, 5, 3]; v: [1, 2, 5, 4]; slopes f32 [H]; initial state f32 [1, 2, 3, 4].
  const impls = [
    { impl: "chunked", blockSize: 2 },
    { impl: "recurrent", blockSize: 4 },
    { impl: "quadratic", blockSize: 4 },
  ] as const;
  // Slopes stay f32 (the op requires it; states follow q's dtype) and get no gradient.
  const options: CheckGradOptions = { wrt: [0, 1, 2, 4], keepDType: [3] };
  // With the forward's segment states (T = 70 > L = 64: two of them), which the rule saves and hands
  // to the backward op; the case differentiates the output and the final state, not the states.
  const segments: Case[] = [true, false].map((init) => ({
    name: `chunked, segment states (segmentTokens 64, T = 70)${init ? ", with initial state" : ""}`,
    fn: (q, k, v, s, s0) => runOp("lightningAttention", [q, k, v, s, ...(init ? [s0] : [])], { impl: "chunked", blockSize: 16, hasInitialState: init, segmentTokens: 64 }).slice(0, 2),
    inputs: () => [rand(32, [1, 2, 70, 3]), rand(33, [1, 2, 70, 3]), rand(34, [1, 2, 70, 4]), tensor([0.05, 0.4]), ...(init ? [rand(35, [1, 2, 3, 4])] : [])],
    options: init ? options : { wrt: [0, 1, 2], keepDType: [3] },
  }));
  const byImpl = impls.flatMap(({ impl, blockSize }): Case[] => [
    {
      name: `${impl}, with initial state`,
      fn: (q, k, v, s, s0) => runOp("lightningAttention", [q, k, v, s, s0], { impl, blockSize, hasInitialState: true }),
      inputs: () => [rand(20, [1, 2, 5, 3]), rand(21, [1, 2, 5, 3]), rand(22, [1, 2, 5, 4]), tensor([0.3, 0.9]), rand(23, [1, 2, 3, 4])],
      options,
    },
    {
      name: `${impl}, q = k, no initial state`,
      fn: (q, v, s) => runOp("lightningAttention", [q, q, v, s], { impl, blockSize, hasInitialState: false }),
      inputs: () => [rand(24, [1, 2, 5, 3]), rand(25, [1, 2, 5, 4]), tensor([0.3, 0.9])],
      options: { wrt: [0, 1], keepDType: [2] },
    },
    {
      // finalState unused: its cotangent is null and the tape passes zeros to the backward op.
      name: `${impl}, o only`,
      fn: (q, k, v, s) => runOp("lightningAttention", [q, k, v, s], { impl, blockSize, hasInitialState: false })[0],
      inputs: () => [rand(26, [2, 1, 7, 2]), rand(27, [2, 1, 7, 2]), rand(28, [2, 1, 7, 3]), tensor([0.7])],
      options: { wrt: [0, 1, 2], keepDType: [3] },
    },
  ]);
  return [...byImpl, ...segments];
}

const CASES: Partial<Record<OpName, Case[]>> = {
  ...Object.fromEntries(UNARY_OPS.map((op) => [op, unaryCases(op)])),
  ...Object.fromEntries(BINARY_OPS.map((op) => [op, binaryCases(op)])),
  where: [
    { name: "cond [3, 1], a [3, 5], b [5]", fn: (a, b) => where(mask(30, [3, 1]), a, b), inputs: () => [rand(31, [3, 5]), rand(32, [5])] },
    { name: "where(c, x, x)", fn: (x) => where(mask(33, [3, 5]), x, x), inputs: () => [rand(34, [3, 5])] },
  ],
  sum: reduceCases(sum),
  mean: reduceCases(mean),
  max: reduceCases(max),
  min: reduceCases(min),
  matmul: [
    { name: "[3, 5] × [5, 4]", fn: (a, b) => matmul(a, b), inputs: () => [rand(40, [3, 5]), rand(41, [5, 4])] },
    { name: "transA", fn: (a, b) => matmul(a, b, { transA: true }), inputs: () => [rand(42, [5, 3]), rand(43, [5, 4])] },
    { name: "transB", fn: (a, b) => matmul(a, b, { transB: true }), inputs: () => [rand(44, [3, 5]), rand(45, [4, 5])] },
    { name: "transA, transB", fn: (a, b) => matmul(a, b, { transA: true, transB: true }), inputs: () => [rand(46, [5, 3]), rand(47, [4, 5])] },
    { name: "batch [2, 3, 5] × [5, 6]", fn: (a, b) => matmul(a, b), inputs: () => [rand(48, [2, 3, 5]), rand(49, [5, 6])] },
    {
      name: "batch broadcast [2, 1, 3, 5] × [4, 6, 5]ᵀ",
      fn: (a, b) => matmul(a, b, { transB: true }),
      inputs: () => [rand(50, [2, 1, 3, 5]), rand(51, [4, 6, 5])],
    },
    { name: "x × x, [4, 4]", fn: (x) => matmul(x, x), inputs: () => [rand(52, [4, 4])] },
    { name: "x × xᵀ, [3, 5]", fn: (x) => matmul(x, x, { transB: true }), inputs: () => [rand(53, [3, 5])] },
  ],
  reshape: [{ name: "[3, 4, 5] → [5, 12]", fn: (x) => mul(reshape(x, [5, 12]), reshape(x, [5, 12])), inputs: () => [rand(60, [3, 4, 5])] }],
  permute: [{ name: "[2, 3, 5] by [2, 0, 1]", fn: (x) => permute(x, [2, 0, 1]), inputs: () => [rand(61, [2, 3, 5])] }],
  slice: [
    { name: "[1:3, 2:]", fn: (x) => slice(x, [1, 2]), inputs: () => [rand(62, [4, 5])] },
    { name: "two overlapping slices of x", fn: (x) => mul(slice(x, [0, 0], [3, 4]), slice(x, [1, 1])), inputs: () => [rand(63, [4, 5])] },
  ],
  pad: [{ name: "[3, 5] by [[1, 2], [0, 3]]", fn: (x) => pad(x, [[1, 2], [0, 3]]), inputs: () => [rand(64, [3, 5])] }],
  concat: [
    { name: "three inputs on axis 1", fn: (a, b, c) => concat([a, b, c], 1), inputs: () => [rand(65, [3, 2]), rand(66, [3, 5]), rand(67, [3, 1])] },
    { name: "concat([x, x, y])", fn: (x, y) => concat([x, x, y], 0), inputs: () => [rand(68, [2, 3]), rand(69, [1, 3])] },
  ],
  expand: [{ name: "[3, 1] → [2, 3, 5]", fn: (x) => expand(x, [2, 3, 5]), inputs: () => [rand(70, [3, 1])] }],
  copy: [{ name: "copy(x) · x", fn: (x) => mul(copy(x), x), inputs: () => [rand(71, [3, 5])] }],
  copyTo: [
    {
      // Computed on a second CPU backend and brought back: each gradient crosses both ways.
      name: "copyTo(copyTo(x, other)², x's backend) · x",
      fn: (x) => {
        const far = copyTo(x, otherCpu);
        return mul(copyTo(mul(far, far), x.backend), x);
      },
      inputs: () => [rand(72, [2, 7])],
    },
  ],
  cast: [
    {
      // x stays f32 so that the cast really changes dtype; the step is exact in f32.
      name: "f32 → f64, squared",
      fn: (x) => mul(cast(x, "f64"), cast(x, "f64")),
      inputs: () => [rand(72, [3, 5])],
      options: { keepDType: [0], eps: 2 ** -10 },
    },
  ],
  gather: [
    { name: "axis 0, repeated indices [2, 4]", fn: (x) => gather(x, ints(80, [2, 4], 5), 0), inputs: () => [rand(81, [5, 3])] },
    { name: "axis 1 of [2, 7, 3]", fn: (x) => gather(x, ints(82, [5], 7), 1), inputs: () => [rand(83, [2, 7, 3])] },
  ],
  scatterAdd: [
    { name: "[2, 4, 3] into 5 rows", fn: (u) => scatterAdd(u, ints(84, [2, 4], 5), 0, 5), inputs: () => [rand(85, [2, 4, 3])] },
    { name: "axis 1", fn: (u) => scatterAdd(u, ints(86, [3], 4), 1, 4), inputs: () => [rand(87, [2, 3, 5])] },
  ],
  embedding: [{ name: "[7, 5] at ids [2, 3]", fn: (w) => embedding(w, ints(90, [2, 3], 7)), inputs: () => [rand(91, [7, 5])] }],
  embeddingBackward: [
    { name: "dy [2, 3, 5], V = 7", fn: (dy) => embeddingBackward(dy, ints(92, [2, 3], 7), 7), inputs: () => [rand(93, [2, 3, 5])] },
  ],
  softmax: [
    { name: "axis 1 of [3, 5]", fn: (x) => softmax(x, 1), inputs: () => [rand(100, [3, 5])] },
    { name: "axis 0 of [4, 3, 5]", fn: (x) => softmax(x, 0), inputs: () => [rand(101, [4, 3, 5])] },
  ],
  logSoftmax: [
    { name: "axis 1 of [3, 5]", fn: (x) => logSoftmax(x, 1), inputs: () => [rand(102, [3, 5])] },
    { name: "axis 1 of [2, 7, 3]", fn: (x) => logSoftmax(x, 1), inputs: () => [rand(103, [2, 7, 3])] },
  ],
  softmaxCrossEntropy: [
    {
      name: "[6, 7] with an ignored row",
      fn: (x) => softmaxCrossEntropy(x, tensor([3, 0, -100, 6, 2, 3], [6], { dtype: "i32" })),
      inputs: () => [rand(104, [6, 7])],
    },
  ],
  rmsNorm: [
    { name: "[3, 7]", fn: (x) => rmsNorm(x, 1e-5), inputs: () => [rand(105, [3, 7])] },
    { name: "rmsNorm(x) · x, [2, 3, 5]", fn: (x) => mul(rmsNorm(x), x), inputs: () => [rand(106, [2, 3, 5])] },
  ],
  addRmsNorm: [
    {
      name: "x + y and its norm, [3, 37]",
      fn: (x, y) => {
        const r = addRmsNorm(x, y, 1e-5);
        return [r.sum, r.normed];
      },
      inputs: () => [rand(107, [3, 37]), rand(108, [3, 37])],
    },
  ],
  rmsNormGate: [{ name: "rmsNorm(o) ⊙ u, [2, 1, 33]", fn: (o, u) => rmsNormGate(o, u, 1e-5), inputs: () => [rand(109, [2, 1, 33]), rand(110, [2, 1, 33])] }],
  fusedLinear: [
    {
      name: "r + (rmsNorm(x) ⊙ g)·wᵀ ⊙ (rmsNorm(x) ⊙ g)·w2ᵀ, x [3, 13], w [5, 13]",
      fn: (x, w, g, w2, r) => fusedLinear(x, w, { norm: { eps: 1e-5, gate: g }, second: w2, residual: r }),
      inputs: () => [rand(111, [3, 13]), rand(112, [5, 13]), rand(113, [3, 13]), rand(114, [5, 13]), rand(115, [3, 5])],
    },
  ],
  lightningAttention: lightningCases(),
  lightningState: [false, true].flatMap((reverse) => [
    {
      name: `Σ w_t k_tᵀ v_t${reverse ? ", reverse" : ""}, k [2, 2, 7, 3], v [2, 2, 7, 4]`,
      fn: (k, v, s) => runOp("lightningState", [k, v, s], { reverse }),
      inputs: () => [rand(29, [2, 2, 7, 3]), rand(30, [2, 2, 7, 4]), tensor([0.4, 0.05])],
      options: { wrt: [0, 1], keepDType: [2] },
    },
    {
      name: `k = v${reverse ? ", reverse" : ""}, [1, 3, 5, 2]`,
      fn: (k, s) => runOp("lightningState", [k, k, s], { reverse }),
      inputs: () => [rand(31, [1, 3, 5, 2]), tensor([0.9, 0.2, 0.01])],
      options: { wrt: [0], keepDType: [1] },
    },
  ]),
};

describe("gradient rules", () => {
  it("cover every differentiable op (a new op needs a case here)", () => {
    const ops = Object.keys(GRAD_RULES) as OpName[];
    const missing = ops.filter((op) => !isNondiff(GRAD_RULES[op]) && !(CASES[op]?.length));
    expect(missing).toEqual([]);
    for (const op of ops) {
      const entry = GRAD_RULES[op];
      if (isNondiff(entry)) expect(entry.nondiff.length, `reason for ${op}`).toBeGreaterThan(10);
    }
  });

  for (const [op, cases] of Object.entries(CASES) as [OpName, Case[]][]) {
    for (const c of cases) {
      it(`${op}: ${c.name}`, async () => {
        const seen = new Set<string>();
        const stop = addOpObserver((r) => seen.add(r.op));
        const inputs = c.inputs();
        try {
          await assertGrad(c.fn, inputs, c.options);
        } finally {
          stop();
          inputs.forEach((t) => t.dispose());
        }
        expect(seen.has(op), `the case ran ${op}`).toBe(true);
      });
    }
  }

  it("a wrong rule fails the check (the check can fail)", async () => {
    const entry = GRAD_RULES.sin as { backward: unknown };
    const original = entry.backward;
    // sin's rule with the sign flipped.
    entry.backward = ([g]: Tensor[], ctx: { x(i: number): Tensor }) => [mul(g, mul(run1("cos", [ctx.x(0)], {}), -1))];
    try {
      await expect(assertGrad((x) => run1("sin", [x], {}), [rand(1, [3, 5])])).rejects.toThrow(/does not match finite differences/);
    } finally {
      entry.backward = original;
    }
  });

  it("broadcast gradients are summed back to the input shape", async () => {
    const a = rand(1, [2, 1, 5]);
    const b = rand(2, [3, 1]);
    await assertGrad((x, y) => add(mul(x, y), div(x, 1.5)), [a, b]);
    a.dispose();
    b.dispose();
  });
});

describe("lightningAttention on a backend that keeps its segment states", () => {
  /**
   * lightningAttention() on a CPU backend that names 64 tokens per segment (as the CUDA backend does
   * at batch 1) runs the op with segmentTokens: the rule saves the third output, hands it to the
   * backward op as its last input, and the tape frees it after the rule has run.
   */
  for (const init of [false, true]) {
    it(`the rule passes the forward's states to the backward op${init ? ", after the initial state" : ""}; the tape frees them`, async () => {
      const backend = Object.assign(createCpuBackend({ threads: 1 }), { lightningSegmentTokens: () => 64 });
      const previous = getBackend();
      const inputs = [rand(40, [1, 2, 131, 3]), rand(41, [1, 2, 131, 3]), rand(42, [1, 2, 131, 5]), tensor([0.02, 0.3]), ...(init ? [rand(43, [1, 2, 3, 5])] : [])];
      const forwards: OpRecord<"lightningAttention">[] = [];
      const backwards: OpRecord<"lightningAttentionBackward">[] = [];
      // Storage handles, taken while the tensors are alive: the forward's states, the backward's last input.
      const segmentStates: DataHandle[] = [];
      const lastInputs: DataHandle[] = [];
      const stop = addOpObserver((r) => {
        if (r.op === "lightningAttention") {
          forwards.push(r as OpRecord<"lightningAttention">);
          if (r.outputs[2]) segmentStates.push(r.outputs[2].handle);
        }
        if (r.op === "lightningAttentionBackward") {
          backwards.push(r as OpRecord<"lightningAttentionBackward">);
          lastInputs.push(r.inputs[r.inputs.length - 1].handle);
        }
      });
      // checkGrad evaluates on the current backend where it is a CPU one.
      setBackend(backend);
      const tensors = liveTensorCount();
      try {
        await assertGrad(
          (q, k, v, s, s0) => {
            const { output, state } = lightningAttention(q, k, v, s, { returnState: true, initialState: s0 });
            return [output, state];
          },
          inputs,
          { wrt: init ? [0, 1, 2, 4] : [0, 1, 2], keepDType: [3] },
        );
      } finally {
        stop();
        setBackend(previous);
      }
      expect(forwards.length).toBeGreaterThan(0);
      expect(forwards.every((r) => r.attrs.segmentTokens === 64 && r.outputs[2]?.shape.join() === "1,2,3,3,5")).toBe(true);
      // One backward: the tape's, with the states of a recorded forward as its last input.
      expect(backwards).toHaveLength(1);
      const [bwd] = backwards;
      expect(bwd.inputs).toHaveLength(init ? 8 : 7);
      expect(bwd.attrs).toEqual({ blockSize: 64, impl: "chunked", hasInitialState: init, segmentTokens: 64 });
      expect(segmentStates).toContain(lastInputs[0]);
      // Every forward's states were freed: by lightningAttention(), and the recorded one by the tape.
      expect(segmentStates.map((h) => h.refs)).toEqual(segmentStates.map(() => 0));
      expect(liveTensorCount()).toBe(tensors);
      inputs.forEach((t) => t.dispose());
      expect(backend.memory().liveBytes).toBe(0);
      backend.dispose();
    });
  }
});
