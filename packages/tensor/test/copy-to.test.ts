import { describe, expect, it } from "vitest";
import { copyTo, createCpuBackend, type Backend, type CpuStorage, liveTensorCount, tensor, UnsupportedOpError } from "../src/index.js";
import { seeded } from "../src/testing/index.js";

/** A CPU backend that cannot read synchronously (as a GPU backend without readSync). */
function withoutSyncRead(): Backend {
  const inner = createCpuBackend({ threads: 1 });
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === "readSync") return undefined;
      const v: unknown = Reflect.get(target, prop);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe("copyTo", () => {
  it("moves values between two CPU backends, every dtype", () => {
    const a = createCpuBackend({ threads: 1 });
    const b = createCpuBackend({ threads: 1 });
    const rng = seeded(31);
    for (const dtype of ["f32", "f64", "bf16", "f16", "i32", "u8"] as const) {
      const ints = Array.from({ length: 15 }, () => rng.int(200));
      const x = dtype === "i32" || dtype === "u8" ? tensor(ints, [3, 5], { dtype, backend: a }) : rng.tensor([3, 5], { dtype, backend: a });
      const y = copyTo(x, b);
      expect(y.backend).toBe(b);
      expect(y.dtype).toBe(dtype);
      expect(y.shape).toEqual([3, 5]);
      expect(Array.from(y.bytesSync())).toEqual(Array.from(x.bytesSync()));
      x.dispose();
      expect(y.dataSync().length).toBe(15); // its own storage: alive after x is gone
      y.dispose();
    }
  });

  it("is a view on the same backend", () => {
    const a = createCpuBackend({ threads: 1 });
    const x = seeded(32).tensor([7], { backend: a });
    const before = liveTensorCount();
    const y = copyTo(x, a);
    expect(y.handle.storage).toBe(x.handle.storage);
    y.dispose();
    expect(liveTensorCount()).toBe(before);
    x.dispose();
  });

  it("uses the destination's copyFrom when it takes the source", () => {
    const a = createCpuBackend({ threads: 1 });
    const b = createCpuBackend({ threads: 1 });
    const calls: number[] = [];
    const hooked = Object.assign(b, {
      copyFrom(dst: CpuStorage, source: Backend, src: unknown, byteLength: number): boolean {
        calls.push(byteLength);
        b.write(dst, source.readSync!(src, 0, byteLength), 0);
        return true;
      },
    });
    const x = seeded(33).tensor([2, 3], { backend: a });
    const y = copyTo(x, hooked);
    expect(calls).toEqual([24]);
    expect(Array.from(y.dataSync())).toEqual(Array.from(x.dataSync()));
  });

  it("says why it cannot copy from a backend that does not read synchronously", () => {
    const src = withoutSyncRead();
    const x = seeded(34).tensor([4], { backend: src });
    const dst = createCpuBackend({ threads: 1 });
    const before = dst.memory().liveBytes;
    expect(() => copyTo(x, dst)).toThrow(UnsupportedOpError);
    expect(() => copyTo(x, dst)).toThrow(/cannot copy from the cpu backend #\d+ directly .* cannot read synchronously/);
    expect(dst.memory().liveBytes).toBe(before);
  });

  it("names a bad backend argument", () => {
    const x = seeded(35).tensor([2]);
    expect(() => copyTo(x, null as unknown as Backend)).toThrow(/copyTo: argument 'backend'.*a Backend.*null|backend.*expected a Backend/);
  });
});
