import { describe, expect, it } from "vitest";
import { CpuCollective, createCpuBackend, createCpuGroup, liveTensorCount, reshape, roundTo, tensor } from "../src/index.js";
import { seeded } from "../src/testing/index.js";

// One rank in this thread: the reduction over one rank is the input rounded to its dtype, which is
// enough to pin the in-place contract (several ranks are covered by @lightning-ts/parallel's tests).
describe("CpuCollective allReduce in place", () => {
  const backend = createCpuBackend({ threads: 1 });
  const c = new CpuCollective(createCpuGroup(1, { slotBytes: 64 }), 0, backend);

  for (const [dtype, size] of [
    ["f32", 37],
    ["bf16", 23],
    ["i32", 41],
  ] as const) {
    it(`${dtype}[${size}]: the result shares the input's storage, out of place does not`, () => {
      const rng = seeded(size);
      const values = Array.from({ length: size }, () => (dtype === "i32" ? rng.int(2001) - 1000 : roundTo(dtype, rng.normal() * 3)));
      const before = liveTensorCount();
      const x = tensor(values, [size], { dtype, backend });
      const view = reshape(x, [1, size]);
      const y = c.allReduce(x, "sum", { inPlace: true });
      expect(y).not.toBe(x);
      expect(y.handle).toBe(x.handle);
      expect(Array.from(y.dataSync())).toEqual(values);
      expect(Array.from(view.dataSync())).toEqual(values);
      const z = c.allReduce(x, "max");
      expect(z.handle).not.toBe(x.handle);
      const p = c.allReduceAsync(x, "min", { inPlace: true });
      expect(p.wait().handle).toBe(x.handle);
      for (const t of [x, view, y, z, p.value]) t.dispose();
      expect(liveTensorCount()).toBe(before);
    });
  }

  it("refuses options that are not { inPlace?: boolean }, naming the argument", () => {
    const x = tensor([1.5, -2, 3], [3], { backend });
    expect(() => c.allReduce(x, "sum", { inPlace: "yes" } as never)).toThrow(/allReduce.*options\.inPlace.*a boolean.*"yes"/);
    expect(() => c.allReduceAsync(x, "sum", 7 as never)).toThrow(/allReduceAsync.*options.*an object/);
    x.dispose();
  });
});
