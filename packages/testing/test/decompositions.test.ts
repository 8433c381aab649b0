/**
 * Composite ops from primitives: a CPU backend with every composite kernel removed runs their
 * decompositions (packages/tensor/src/api/decompositions.ts), passes the whole conformance suite,
 * and agrees with the full CPU backend on the edge cases the suite does not reach.
 */
import * as T from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { conformanceSuite, registerTestBackend, seeded } from "../src/index.js";

/** A CPU backend without kernels for the composite ops: the engine must decompose them. */
function primitivesOnly(): T.CpuBackend {
  const b = T.createCpuBackend({ threads: 1 });
  for (const op of T.COMPOSITE_OPS) delete b.kernels[op];
  return b;
}

registerTestBackend({ name: "cpu without composite kernels", create: primitivesOnly });
await conformanceSuite({ dtypes: ["f32", "f64", "f16", "bf16"] });

const full = T.createCpuBackend({ threads: 1 });
const bare = primitivesOnly();

/** `fn` on both backends (inputs made by `make` on each); the values must agree, NaN for NaN. */
async function agree(make: (backend: T.Backend) => T.Tensor[], fn: (...xs: T.Tensor[]) => T.Tensor, tol = 1e-6): Promise<void> {
  const [want, got] = await Promise.all(
    [full, bare].map(async (backend) => {
      const xs = make(backend);
      const y = fn(...xs);
      const out = { shape: y.shape, dtype: y.dtype, values: Array.from(await y.data()) };
      for (const t of [...xs, y]) t.dispose();
      return out;
    }),
  );
  expect([got.shape, got.dtype]).toEqual([want.shape, want.dtype]);
  got.values.forEach((v, i) => {
    const w = want.values[i];
    if (!(Number.isNaN(v) && Number.isNaN(w)) && v !== w) expect(Math.abs(v - w), `element ${i}: ${v} vs ${w}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(w)));
  });
}

describe("decompositions against the full CPU backend", () => {
  const rows = (backend: T.Backend, values: number[], shape: number[], dtype: T.DType = "f32") => T.tensor(values, shape, { dtype, backend });

  it("softmax and logSoftmax with infinite entries, a row of −∞, and an empty axis", async () => {
    const x = [1, -Infinity, 3, Infinity, 0, 2, -Infinity, -Infinity, -Infinity];
    for (const fn of [T.softmax, T.logSoftmax]) {
      await agree((b) => [rows(b, x, [3, 3])], (t) => fn(t, 1));
      await agree((b) => [T.zeros([2, 0], { backend: b })], (t) => fn(t, 1));
    }
  });

  it("cross-entropy: ignored rows (even with NaN upstream), one class, f64 logits", async () => {
    const rng = seeded(7);
    for (const [N, V, dtype] of [[4, 1, "f32"], [5, 9, "f64"], [3, 6, "bf16"]] as [number, number, T.DType][]) {
      const logits = Array.from(rng.array(N * V, 3));
      const labels = Array.from({ length: N }, (_, i) => (i === 1 ? -100 : rng.int(V)));
      const dloss = Array.from({ length: N }, (_, i) => (i === 1 ? NaN : rng.next()));
      const lossDType = dtype === "f64" ? "f64" : "f32";
      const make = (b: T.Backend) => [rows(b, logits, [N, V], dtype), T.tensor(labels, [N], { dtype: "i32", backend: b }), rows(b, dloss, [N], lossDType)];
      const tol = dtype === "bf16" ? 1e-2 : 1e-6;
      await agree(make, (x, l) => T.softmaxCrossEntropy(x, l), tol);
      await agree(make, (x, l, g) => T.softmaxCrossEntropyBackward(x, l, g), tol);
    }
  });

  it("sigmoid and silu at ±∞ and at large |x|", async () => {
    const x = [-Infinity, -200, -1, 0, 1, 200, Infinity];
    for (const fn of [T.sigmoid, T.silu]) await agree((b) => [rows(b, x, [7])], fn);
  });

  it("index errors name the composite op and its argument", () => {
    for (const backend of [full, bare]) {
      const scoped = <R>(fn: () => R) => () => T.scope(fn);
      const w = T.zeros([5, 2], { backend });
      const ids = T.tensor([1, 5], [2], { dtype: "i32", backend });
      expect(scoped(() => T.embedding(w, ids))).toThrow(/^embedding: argument 'ids' expected values in \[0, 5\), got 5/);
      expect(scoped(() => T.embeddingBackward(T.zeros([2, 2], { backend }), ids, 5))).toThrow(/^embeddingBackward: argument 'ids'/);
      expect(scoped(() => T.softmaxCrossEntropy(T.zeros([2, 2], { backend }), ids))).toThrow(/^softmaxCrossEntropy: argument 'labels' expected values in \[0, 2\) or -100 \(ignoreIndex\), got 5/);
      for (const t of [w, ids]) t.dispose();
    }
  });

  it("observers see the composite op, not the primitives it ran", () => {
    const seen: string[] = [];
    const stop = T.addOpObserver((r) => seen.push(r.op));
    const x = T.tensor([1, 2, 3], [1, 3], { backend: bare });
    const y = T.softmax(x);
    stop();
    expect(seen).toEqual(["softmax"]);
    for (const t of [x, y]) t.dispose();
  });

  it("an op declared unsupported is not decomposed", () => {
    const b = primitivesOnly();
    b.kernels.softmax = { unsupported: "no softmax here" };
    const x = T.tensor([1, 2], [2], { backend: b });
    expect(() => T.softmax(x)).toThrow("softmax is not supported by the cpu backend: no softmax here");
    x.dispose();
  });

  it("leaves only its outputs alive", async () => {
    const leaks = await T.findLeaks(() => {
      const x = T.tensor([1, 2, 3, 4], [2, 2], { backend: bare });
      const labels = T.tensor([1, -100], [2], { dtype: "i32", backend: bare });
      const out = [T.softmaxCrossEntropy(x, labels), T.rmsNorm(x), T.silu(x)];
      for (const t of [x, labels]) t.dispose();
      return out;
    });
    expect(leaks).toEqual([]);
  });
});
