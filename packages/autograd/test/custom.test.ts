import { add, findLeaks, matmul, mul, sin, sum, type Tensor, tensor } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/tensor/testing";
import { describe, expect, it } from "vitest";
import { customOp, valueAndGrad } from "../src/index.js";

describe("customOp", () => {
  it("records one node with its own backward; the ops inside are not recorded", () => {
    const rng = seeded(401);
    const x = rng.tensor([3, 4]);
    // Forward 3·x, backward declared as 5·g: only the declared backward may reach x.
    const f = (a: Tensor) => sum(customOp("fiveGrad", [a], ([t]) => [mul(t, 3)], ([g]) => [mul(g, 5)])[0]);
    const { value, grads } = valueAndGrad(f)(x);
    expect(value.dataSync()[0]).toBeCloseTo(3 * Array.from(x.dataSync()).reduce((s, v) => s + v, 0), 4);
    expect(Array.from(grads!.dataSync())).toEqual(new Array(12).fill(5));
  });

  it("passes an input through as a tensor of its own, and gives saved tensors to the backward", () => {
    const rng = seeded(402);
    const x = rng.tensor([5]);
    const w = rng.tensor([5]);
    // y = x (forward), dy/dx declared as w: gradient of sum(sin(y)) is cos(x)·w.
    const f = (a: Tensor) => sum(sin(customOp("id", [a], ([t]) => [t], ([g], [saved]) => [mul(g, saved)], { save: [w] })[0]));
    const g = valueAndGrad(f)(x).grads!;
    const xs = x.dataSync();
    const ws = w.dataSync();
    Array.from(g.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(Math.cos(xs[i]) * ws[i], 5));
  });

  it("`always` runs the backward even when its output gets no cotangent", () => {
    const x = seeded(403).tensor([2, 3]);
    let calls = { always: 0, lazy: 0 };
    const node = (name: "always" | "lazy", a: Tensor) =>
      customOp(name, [a], ([t]) => [mul(t, 2)], ([g]) => {
        calls[name]++;
        expect(Array.from(g.dataSync())).toEqual(new Array(6).fill(0));
        return [g];
      }, { always: name === "always" })[0];
    const f = (a: Tensor) => {
      node("always", a);
      node("lazy", a);
      return sum(mul(a, a));
    };
    calls = { always: 0, lazy: 0 };
    valueAndGrad(f)(x);
    expect(calls).toEqual({ always: 1, lazy: 0 });
  });

  it("leaks nothing", async () => {
    const x = seeded(404).tensor([4]);
    const w = seeded(405).tensor([4]);
    const leaks = await findLeaks(() => {
      const f = (a: Tensor) => sum(customOp("id", [a], ([t]) => [t], ([g], [s]) => [mul(g, s)], { save: [w] })[0]);
      return valueAndGrad(f)(x);
    });
    expect(leaks).toEqual([]);
  });
});

describe("valueAndGrad onLeafGrad", () => {
  it("reports each leaf once, as soon as its gradient is final, with the final gradient", () => {
    const rng = seeded(406);
    const p = { first: rng.tensor([3, 4]), second: rng.tensor([4, 2]), unused: rng.tensor([3]) };
    const x = rng.tensor([5, 3]);
    const order: string[] = [];
    const seen = new Map<string, number[] | null>();
    const names = new Map<Tensor, string>(Object.entries(p).map(([k, t]) => [t, k]));
    const loss = (q: typeof p) => sum(mul(matmul(add(matmul(x, q.first), 1), q.second), 0.5));
    const { grads } = valueAndGrad(loss, {
      onLeafGrad: (leaf, g) => {
        const name = names.get(leaf)!;
        order.push(name);
        seen.set(name, g ? Array.from(g.dataSync()) : null);
      },
    })(p);
    // `second` is used by the last matmul, so its gradient is final before `first`'s.
    expect(order).toEqual(["second", "first", "unused"]);
    expect(seen.get("first")).toEqual(Array.from(grads.first!.dataSync()));
    expect(seen.get("second")).toEqual(Array.from(grads.second!.dataSync()));
    expect(seen.get("unused")).toBeNull();
  });

  it("waits for every use of a leaf", () => {
    const x = tensor([0.5, -1.25, 2]);
    let reported: number[] = [];
    const f = (a: Tensor) => add(sum(mul(a, a)), sum(sin(a)));
    const { grads } = valueAndGrad(f, { onLeafGrad: (_, g) => (reported = Array.from(g!.dataSync())) })(x);
    expect(reported).toEqual(Array.from(grads!.dataSync()));
    const xs = x.dataSync();
    reported.forEach((v, i) => expect(v).toBeCloseTo(2 * xs[i] + Math.cos(xs[i]), 5));
  });
});
