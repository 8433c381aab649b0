/** The functional API: structure of gradients, accumulation, errors, ownership and leaks. */
import {
  add,
  findLeaks,
  liveTensorCount,
  mul,
  rmsNorm,
  rmsNormBackward,
  runOp,
  scope,
  sin,
  exp,
  square,
  sum,
  type Tensor,
  tensor,
  gather,
  matmul,
  tanh,
  softmaxCrossEntropy,
  reshape,
} from "@lightning-ts/tensor";
import { assertClose } from "@lightning-ts/testing";
import { describe, expect, it } from "vitest";
import { checkGrad, grad, valueAndGrad, vjp } from "../src/index.js";
import { ints, rand } from "./helpers.js";

const values = (t: Tensor | null) => Array.from(t!.dataSync());

describe("grad and valueAndGrad", () => {
  it("differentiate a scalar function", () => {
    const x = tensor([1, -2, 3]);
    const g = grad((x: Tensor) => sum(square(x)))(x);
    expect(values(g)).toEqual([2, -4, 6]);
  });

  it("accumulate gradients of a tensor used several times", () => {
    // d/dx Σ (x·x + x + sin x) = 2x + 1 + cos x.
    const x = rand(1, [3, 5]);
    const g = grad((x: Tensor) => sum(add(add(mul(x, x), x), sin(x))))(x);
    assertClose(g!, Array.from(x.dataSync(), (v) => 2 * v + 1 + Math.cos(v)), { atol: 1e-5 });
  });

  it("return gradients in the structure of a parameter tree", () => {
    const params = { w: rand(2, [3, 4]), layers: [{ b: rand(3, [4]) }, { b: rand(4, [4]) }], ids: ints(5, [2], 3), name: "mlp", unused: rand(6, [2]) };
    const x = rand(7, [5, 3]);
    const loss = (p: typeof params, x: Tensor) => sum(tanh(add(add(matmul(x, p.w), p.layers[0].b), p.layers[1].b)));
    const { value, grads } = valueAndGrad(loss)(params, x);
    expect(value.shape).toEqual([]);
    expect(grads.w!.shape).toEqual([3, 4]);
    expect(grads.layers[0].b!.shape).toEqual([4]);
    expect(values(grads.layers[0].b)).toEqual(values(grads.layers[1].b));
    // Integer tensors and non-tensor leaves get null; float leaves the loss ignores get zeros.
    expect(grads.ids).toBeNull();
    expect(grads.name).toBeNull();
    expect(values(grads.unused)).toEqual([0, 0]);
  });

  it("differentiate several arguments with argnums", () => {
    const [a, b, c] = [rand(1, [3]), rand(2, [3]), rand(3, [3])];
    const [ga, gc] = grad((a: Tensor, b: Tensor, c: Tensor) => sum(mul(mul(a, b), c)), { argnums: [0, 2] })(a, b, c);
    assertClose(ga!, Array.from(b.dataSync(), (v, i) => v * c.dataSync()[i]));
    assertClose(gc!, Array.from(a.dataSync(), (v, i) => v * b.dataSync()[i]));
  });

  it("give null for an integer argument", () => {
    const w = rand(1, [4, 3]);
    const ids = ints(2, [5], 4);
    const g = grad((ids: Tensor, w: Tensor) => sum(gather(w, ids, 0)))(ids, w);
    expect(g).toBeNull();
  });

  it("reject a non-scalar or integer result with a clear error", () => {
    const x = rand(1, [3]);
    expect(() => grad((x: Tensor) => mul(x, 2))(x)).toThrow(/one-element float tensor.*f32\[3\]/);
    expect(() => grad((x: Tensor) => sum(ints(1, x.shape, 4)))(x)).toThrow(/one-element float tensor/);
  });

  it("raise the reason when a gradient reaches a nondiff op, and not before", () => {
    const x = rand(1, [2, 5]);
    expect(() => grad((x: Tensor) => sum(rmsNormBackward(x, x)))(x)).toThrow(/rmsNormBackward has no gradient: a backward op/);
    // Computed but not differentiated through: fine.
    const g = grad((x: Tensor) => {
      rmsNormBackward(x, x);
      return sum(rmsNorm(x));
    })(x);
    expect(g!.shape).toEqual([2, 5]);
  });

  it("raise the reason for lightningStep (decode only)", () => {
    // The CPU backend runs the step (no skip here); only differentiating through it is refused.
    const [q, k, v] = [rand(1, [1, 2, 3]), rand(2, [1, 2, 3]), rand(3, [1, 2, 4])];
    const slopes = tensor([0.5, 0.25]);
    const state = rand(4, [1, 2, 3, 4]);
    const [o, next] = runOp("lightningStep", [q, k, v, slopes, state], {});
    // o = q (λ S + kᵀ v) per head, from the host values.
    const [qs, ks, vs, ss] = [q, k, v, state].map((t) => t.dataSync());
    const want = Array.from({ length: 8 }, (_, i) => {
      const [h, e] = [Math.floor(i / 4), i % 4];
      const lam = Math.exp(-Math.fround([0.5, 0.25][h]));
      let x = 0;
      for (let d = 0; d < 3; d++) x += qs[h * 3 + d] * (lam * ss[(h * 3 + d) * 4 + e] + ks[h * 3 + d] * vs[h * 4 + e]);
      return x;
    });
    assertClose(o, want, { atol: 1e-5 });
    [o, next].forEach((t) => t.dispose());
    expect(() => grad((q: Tensor) => sum(runOp("lightningStep", [q, k, v, slopes, state], {})[0]))(q)).toThrow(/decode-only/);
  });

  it("leave gradients to the caller's scope", () => {
    const x = rand(1, [3]);
    let g: Tensor | null = null;
    scope(() => {
      g = grad((x: Tensor) => sum(exp(x)))(x);
    });
    expect(g!.isDisposed).toBe(true);
    expect(x.isDisposed).toBe(false);
  });
});

describe("vjp", () => {
  it("pulls a cotangent back through a vector function", () => {
    const x = rand(1, [2, 3]);
    const ct = rand(2, [2, 3]);
    const { out, vjp: pull } = vjp((x: Tensor) => mul(sin(x), x), x);
    expect(out.shape).toEqual([2, 3]);
    const [dx] = pull(ct);
    const xs = x.dataSync();
    assertClose(dx!, Array.from(ct.dataSync(), (c, i) => c * (Math.cos(xs[i]) * xs[i] + Math.sin(xs[i]))), { atol: 1e-5 });
    expect(() => pull(ct)).toThrow(/can run once/);
  });

  it("treats a null cotangent as zero and adds up repeated outputs", () => {
    const x = rand(1, [3]);
    const { vjp: pull } = vjp((x: Tensor) => ({ a: mul(x, 3), b: square(x) }), x);
    const [dx] = pull({ a: tensor([1, 1, 1]), b: null });
    expect(values(dx)).toEqual([3, 3, 3]);

    const y = rand(2, [3]);
    const { vjp: pull2 } = vjp((y: Tensor) => {
      const t = mul(y, 2);
      return [t, t];
    }, y);
    const [dy] = pull2([tensor([1, 1, 1]), tensor([1, 1, 1])]);
    expect(values(dy)).toEqual([4, 4, 4]);
  });

  it("saves only what the rules need, until the pullback runs", () => {
    const x = rand(1, [4]);
    const w = rand(2, [4]);
    const before = liveTensorCount();
    // mul w.r.t. x alone needs w only: the output plus one saved handle.
    const one = vjp((x: Tensor) => mul(x, w), x);
    expect(liveTensorCount() - before).toBe(2);
    one.dispose();
    one.out.dispose();
    // With respect to both operands, both are saved.
    const two = vjp((x: Tensor, w: Tensor) => mul(x, w), x, w);
    expect(liveTensorCount() - before).toBe(3);
    two.vjp(tensor([1, 2, 3, 4])).forEach((g) => g!.dispose());
    two.out.dispose();
    expect(liveTensorCount() - before).toBe(1); // the cotangent passed in
  });
});

describe("leaks", () => {
  const params = () => ({ w: rand(1, [5, 3]), b: rand(2, [3]) });
  const loss = (p: { w: Tensor; b: Tensor }, x: Tensor, labels: Tensor) =>
    sum(softmaxCrossEntropy(add(matmul(x, p.w), p.b), labels));

  it("none in grad, valueAndGrad or vjp", async () => {
    const p = params();
    const x = rand(3, [4, 5]);
    const labels = ints(4, [4], 3);
    expect(await findLeaks(() => grad(loss)(p, x, labels))).toEqual([]);
    expect(await findLeaks(() => valueAndGrad(loss, { argnums: [0, 1] })(p, x, labels))).toEqual([]);
    expect(
      await findLeaks(() => {
        const { out, vjp: pull } = vjp((x: Tensor) => rmsNorm(reshape(x, [2, 10])), x);
        const ct = rand(5, [2, 10]);
        const grads = pull(ct);
        ct.dispose();
        return [out, grads];
      }),
    ).toEqual([]);
    // A pullback that is never run releases what it saved on dispose().
    expect(
      await findLeaks(() => {
        const r = vjp((x: Tensor) => exp(sin(x)), x);
        r.dispose();
        return r.out;
      }),
    ).toEqual([]);
  });

  it("none when fn or a rule throws", async () => {
    const x = rand(1, [3]);
    const leaks = await findLeaks(() => {
      expect(() =>
        grad((x: Tensor) => {
          sin(exp(x));
          throw new Error("boom");
        })(x),
      ).toThrow("boom");
      expect(() => grad((x: Tensor) => sum(rmsNormBackward(exp(x), x)))(x)).toThrow(/no gradient/);
    });
    expect(leaks).toEqual([]);
  });

  it("none in checkGrad", async () => {
    const a = rand(1, [3, 4]);
    expect(await findLeaks(() => checkGrad((a) => tanh(a), [a]).then(() => undefined))).toEqual([]);
  });
});
