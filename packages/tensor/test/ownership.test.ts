import { describe, expect, it } from "vitest";
import { add, beginScope, createCpuBackend, type CpuStorage, endScope, findLeaks, keep, liveTensorCount, mul, reshape, scope, tensor, zeros } from "../src/index.js";

describe("ownership", () => {
  it("a scope disposes everything but its result", () => {
    const before = liveTensorCount();
    const y = scope(() => {
      const x = tensor([1, 2, 3]);
      const t = mul(x, x);
      return add(t, 1);
    });
    expect(liveTensorCount()).toBe(before + 1);
    expect(y.dataSync()).toEqual(new Float32Array([2, 5, 10]));
    y.dispose();
    expect(liveTensorCount()).toBe(before);
  });

  it("keep() exempts a tensor and nested results survive", () => {
    let kept!: ReturnType<typeof tensor>;
    const out = scope(() => {
      kept = keep(tensor([1]));
      tensor([2]);
      return { a: [tensor([3])], b: 1 };
    });
    expect(kept.isDisposed).toBe(false);
    expect(out.a[0].isDisposed).toBe(false);
    kept.dispose();
    out.a[0].dispose();
  });

  it("reshape shares storage until the last handle goes", () => {
    const x = tensor([1, 2, 3, 4]);
    const y = reshape(x, [2, 2]);
    x.dispose();
    expect(y.dataSync()).toEqual(new Float32Array([1, 2, 3, 4]));
    expect(() => x.dataSync()).toThrow(/used after dispose/);
    y.dispose();
  });

  it("a disposed input is a clear error", () => {
    const x = tensor([1]);
    x.dispose();
    expect(() => add(x, 1)).toThrow(/add: argument 'a' expected a live tensor, got tensor #\d+ that was disposed/);
  });

  it("findLeaks reports tensors left alive", async () => {
    expect(await findLeaks(() => scope(() => add(tensor([1]), 2)))).toEqual([]);
    let leaked!: ReturnType<typeof tensor>;
    const leaks = await findLeaks(() => {
      leaked = tensor([5, 6]);
    });
    expect(leaks).toEqual([`#${leaked.id} f32[2]`]);
    leaked.dispose();
  });

  it("scopes nest: survivors move to the parent", () => {
    const before = liveTensorCount();
    scope(() => {
      const inner = scope(() => tensor([1]));
      expect(inner.isDisposed).toBe(false);
    });
    expect(liveTensorCount()).toBe(before);
    const frame = beginScope();
    tensor([1]);
    endScope(frame);
    expect(liveTensorCount()).toBe(before);
  });
});

describe("CPU buffer pool", () => {
  it("reuses freed buffers of the same size, zeroed, within its byte limit", () => {
    const backend = createCpuBackend({ threads: 1, poolBytes: 1024 });
    const a = tensor(Float32Array.from({ length: 64 }, (_, i) => i + 1), [64], { backend });
    const storage = a.handle.storage as CpuStorage;
    a.dispose();
    expect(backend.memory()).toMatchObject({ liveBytes: 0, pooledBytes: 256 });
    const b = zeros([8, 8], { backend });
    expect((b.handle.storage as CpuStorage).bytes.buffer).toBe(storage.bytes.buffer);
    expect(Array.from(b.dataSync()).every((x) => x === 0)).toBe(true);
    expect(backend.memory().pooledBytes).toBe(0);
    // Larger than the limit: not kept.
    const big = zeros([1024], { backend });
    big.dispose();
    expect(backend.memory().pooledBytes).toBe(0);
    b.dispose();
    backend.dispose();
  });
});
