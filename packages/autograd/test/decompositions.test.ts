/**
 * Composite ops on a backend without kernels for them: the engine runs their decompositions into
 * primitives, and the tape still records the composite op and applies its rule. Gradients must
 * pass the float64 check there, and equal the full CPU backend's.
 */
import {
  add,
  addOpObserver,
  addRmsNorm,
  COMPOSITE_OPS,
  type CompositeOpName,
  createCpuBackend,
  embedding,
  embeddingBackward,
  exp,
  fusedLinear,
  getBackend,
  lightningState,
  logSoftmax,
  matmul,
  mul,
  rmsNorm,
  rmsNormGate,
  scope,
  setBackend,
  sigmoid,
  silu,
  softmax,
  softmaxCrossEntropy,
  sum,
  type Tensor,
  tensor,
} from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkGrad, GRAD_RULES, grad, isNondiff } from "../src/index.js";
import { ints, rand } from "./helpers.js";

const full = createCpuBackend({ threads: 1 });
const bare = createCpuBackend({ threads: 1 });
for (const op of COMPOSITE_OPS) delete bare.kernels[op];

interface Case {
  fn: (x: Tensor) => Tensor;
  shape: number[];
}

const labels = () => tensor([3, 0, -100, 6, 2, 3], [6], { dtype: "i32" });
const CASES: { [K in CompositeOpName]?: Case } = {
  sigmoid: { fn: sigmoid, shape: [3, 5] },
  silu: { fn: silu, shape: [3, 5] },
  softmax: { fn: (x) => softmax(x, 0), shape: [4, 3, 5] },
  logSoftmax: { fn: (x) => logSoftmax(x, 1), shape: [2, 7, 3] },
  softmaxCrossEntropy: { fn: (x) => softmaxCrossEntropy(x, labels()), shape: [6, 7] },
  rmsNorm: { fn: (x) => mul(rmsNorm(x, 1e-5), x), shape: [2, 3, 5] },
  embedding: { fn: (w) => embedding(w, ints(90, [2, 3], 7)), shape: [7, 5] },
  embeddingBackward: { fn: (dy) => embeddingBackward(dy, ints(92, [2, 3], 7), 7), shape: [2, 3, 5] },
  // Both operands and both outputs depend on x, so every path of each rule is checked.
  addRmsNorm: {
    fn: (x) => {
      const { sum: s, normed } = addRmsNorm(x, mul(x, 0.5), 1e-5);
      return mul(s, normed);
    },
    shape: [3, 7],
  },
  rmsNormGate: { fn: (x) => rmsNormGate(x, exp(x), 1e-5), shape: [2, 3, 5] },
  // x is every input (x [3, 7] as x and w, the gate, w2 and the residual made from it).
  fusedLinear: {
    fn: (x) => fusedLinear(x, x, { norm: { eps: 1e-5, gate: exp(x) }, second: mul(x, 0.5), residual: matmul(x, x, { transB: true }) }),
    shape: [3, 7],
  },
  // k = x, v = exp(x)·0.5 (E = D), both directions of the weights summed.
  lightningState: {
    fn: (x) => {
      const slopes = tensor([0.4, 0.05, 1.1], [3]);
      const v = mul(exp(x), 0.5);
      return add(lightningState(x, v, slopes), lightningState(x, v, slopes, { reverse: true }));
    },
    shape: [2, 3, 5, 4],
  },
};

describe("gradients of composite ops run from primitives", () => {
  let previous = getBackend();
  beforeAll(() => {
    previous = getBackend();
    setBackend(bare);
  });
  afterAll(() => setBackend(previous));

  it("cover every differentiable composite op", () => {
    expect(COMPOSITE_OPS.filter((op) => !isNondiff(GRAD_RULES[op]) && !CASES[op])).toEqual([]);
  });

  for (const [op, c] of Object.entries(CASES) as [CompositeOpName, Case][]) {
    it(`${op}: float64 check, and the full backend's gradient`, async () => {
      const seen = new Set<string>();
      const stop = addOpObserver((r) => seen.add(r.op));
      const report = await checkGrad(c.fn, [rand(7, c.shape)]);
      stop();
      expect(seen.has(op), `${op} ran`).toBe(true);
      expect(report.ok, JSON.stringify(report.inputs)).toBe(true);

      const [want, got] = [full, bare].map((backend) => {
        setBackend(backend);
        const x = rand(8, c.shape);
        const w = rand(9, scope(() => c.fn(x).shape));
        const g = grad((t: Tensor) => sum(mul(c.fn(t), w)))(x) as Tensor;
        const values = Float64Array.from(g.dataSync());
        for (const t of [x, w, g]) t.dispose();
        return values;
      });
      setBackend(bare);
      got.forEach((v, i) => expect(Math.abs(v - want[i]), `element ${i}`).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want[i]))));
    });
  }
});
