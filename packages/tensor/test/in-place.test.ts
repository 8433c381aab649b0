/**
 * In-place primitives on the CPU backend: runOp's `into`, lightningStep with inPlace, copyInto,
 * copyIntoMany (also through the path of a backend without copyMany) and leadingRows (the shared suite also runs on WebGPU and CUDA from their packages).
 */
import { describe, expect, it } from "vitest";
import * as T from "../src/index.js";
import { seeded } from "../src/testing/index.js";
import { copyIntoManySuite, copyIntoSuite, leadingRowsSuite, lightningStepInPlaceSuite } from "./in-place-suite.js";

const cpu = T.createCpuBackend({ threads: 1 });
const backend = () => cpu;

describe("lightningStep in place [cpu]", () => lightningStepInPlaceSuite(backend));
describe("copyInto [cpu]", () => copyIntoSuite(backend));
describe("copyIntoMany [cpu]", () => copyIntoManySuite(backend));

/**
 * The CPU backend through a wrapper that offers only the methods every backend has (no copyMany,
 * no fused paths of its own) and the given kernels: what the engine does on a backend that lacks them.
 */
function plainCpu(kernels: T.Backend["kernels"] = cpu.kernels): T.Backend<T.CpuStorage> {
  return {
    name: "cpu",
    capabilities: cpu.capabilities,
    allocate: (n) => cpu.allocate(n),
    free: (s) => cpu.free(s),
    write: (s, b, o) => cpu.write(s, b, o),
    read: (s, o, n) => cpu.read(s, o, n),
    readSync: (s, o, n) => cpu.readSync(s, o, n),
    copyWithin: (d, dOff, s, sOff, n) => cpu.copyWithin(d, dOff, s, sOff, n),
    sync: () => cpu.sync(),
    memory: () => cpu.memory(),
    dispose: () => undefined,
    kernels,
  };
}

// The path of a backend without copyMany (WebGPU): one copyWithin each, zeros from a scratch storage.
const withoutCopyMany = plainCpu();
describe("copyIntoMany [cpu without copyMany]", () => copyIntoManySuite(() => withoutCopyMany));
describe("leadingRows [cpu]", () => leadingRowsSuite(backend));

describe("copyInto and the CPU's packed-weight cache", () => {
  it("a matmul after copyInto over its weight uses the new values, not a packed copy of the old", () => {
    T.scope(() => {
      const x = seeded(21).tensor([1, 37], { backend: cpu });
      const w = seeded(22).tensor([37, 29], { backend: cpu });
      const fresh = seeded(23).tensor([37, 29], { backend: cpu });
      const first = T.matmul(x, w).dataSync();
      expect(Array.from(T.matmul(x, w).dataSync())).toEqual(Array.from(first));
      T.copyInto(w, fresh);
      expect(Array.from(T.matmul(x, w).dataSync())).toEqual(Array.from(T.matmul(x, fresh).dataSync()));
    });
  });
});

describe("runOp with outputs placed (options.into)", () => {
  const x = () => seeded(3).tensor([3, 5], { backend: cpu });

  it("writes an output over a given tensor's storage, returns a new handle to it, and tells observers", () => {
    T.scope(() => {
      const a = x();
      const b = seeded(4).tensor([3, 5], { backend: cpu });
      const target = seeded(5).tensor([3, 5], { backend: cpu });
      const records: T.OpRecord[] = [];
      const stop = T.addOpObserver((r) => records.push(r));
      const [y] = T.runOp("add", [a, b], {}, undefined, { into: [target] });
      const [z] = T.runOp("add", [a, b], {});
      stop();
      expect(y).not.toBe(target);
      expect(y.handle).toBe(target.handle);
      expect(Array.from(target.dataSync())).toEqual(Array.from(z.dataSync()));
      expect(records.map((r) => r.inPlace)).toEqual([true, undefined]);
      // The storage lives on through the returned handle.
      target.dispose();
      expect(Array.from(y.dataSync())).toEqual(Array.from(z.dataSync()));
    });
  });

  it("refuses targets of the wrong shape, dtype or backend, disposed ones, shared ones and inputs, naming them", () => {
    T.scope(() => {
      const a = x();
      const t = seeded(6).tensor([3, 5], { backend: cpu });
      const add = (into: unknown[]) => T.runOp("add", [a, a], {}, undefined, { into: into as T.Tensor[] });
      expect(() => add([seeded(7).tensor([5, 3], { backend: cpu })])).toThrow(/add: argument 'options\.into\[0\]' expected a f32\[3, 5\] tensor \(output 0\), got f32\[5, 3\]/);
      expect(() => add([seeded(7).tensor([3, 5], { dtype: "bf16", backend: cpu })])).toThrow(/options\.into\[0\].*f32\[3, 5\].*bf16\[3, 5\]/);
      const other = T.createCpuBackend({ threads: 1 });
      expect(() => add([seeded(7).tensor([3, 5], { backend: other })])).toThrow(/options\.into\[0\].*a tensor on the cpu backend #\d+ \(as the inputs\), got one on the cpu backend #\d+/);
      const gone = seeded(8).tensor([3, 5], { backend: cpu });
      gone.dispose();
      expect(() => add([gone])).toThrow(/options\.into\[0\].*a live tensor/);
      expect(() => add([t, t])).toThrow(/add: argument 'options\.into'.*at most 1 entries.*2/);
      expect(() => add([a])).toThrow(/add: argument 'options\.into\[0\]' expected storage that is not an input's \(add cannot write output 0 over input 0\), got the storage of a/);
      expect(() => add([T.reshape(a, [3, 5])])).toThrow(/cannot write output 0 over input 0/);
      expect(() => add(["t"])).toThrow(/options\.into\[0\].*a Tensor or undefined.*string/);
      expect(() => T.runOp("add", [a, a], {}, undefined, { into: t as never })).toThrow(/options\.into.*an array/);
      expect(() => T.runOp("reshape", [a], { shape: [15] }, undefined, { into: [seeded(9).tensor([15], { backend: cpu })] })).toThrow(
        /reshape is not supported by the cpu backend: cannot write its outputs in place/,
      );
      // Two outputs may not share one target.
      const [B, H, D, E] = [1, 1, 2, 3];
      const q = seeded(10).tensor([B, H, D], { backend: cpu });
      const v = seeded(11).tensor([B, H, E], { backend: cpu });
      const s = T.tensor([0.25], [H], { backend: cpu });
      const st = seeded(12).tensor([B, H, D, E], { backend: cpu });
      expect(() => T.runOp("lightningStep", [q, q, v, s, st], {}, undefined, { into: [v, st] })).toThrow(/cannot write output 0 over input 2/);
      other.dispose();
    });
  });

  it("places the outputs of a composite op the backend runs as a decomposition (copied over the targets)", () => {
    // A backend without a silu kernel: the engine decomposes it, then copies the result over the target.
    const kernels = { ...cpu.kernels } as Record<string, unknown>;
    delete kernels.silu;
    const bare = plainCpu(kernels as T.Backend["kernels"]);
    T.scope(() => {
      const a = seeded(13).tensor([37], { backend: bare });
      const t = seeded(14).tensor([37], { backend: bare });
      const records: T.OpRecord[] = [];
      const stop = T.addOpObserver((r) => records.push(r));
      const live = T.liveTensorCount();
      const [y] = T.runOp("silu", [a], {}, undefined, { into: [t] });
      stop();
      // No tensor left behind but y, and one record: the composite op in place (not the primitives or the copy inside).
      expect(T.liveTensorCount()).toBe(live + 1);
      expect(records.map((r) => [r.op, r.inPlace])).toEqual([["silu", true]]);
      expect(y.handle).toBe(t.handle);
      expect(Array.from(t.dataSync())).toEqual(Array.from(T.silu(a).dataSync()));
      // Still refused over an input's storage, as for any op without that pair in ALIASED_OUTPUTS.
      expect(() => T.runOp("silu", [a], {}, undefined, { into: [a] })).toThrow(/silu: argument 'options\.into\[0\]' expected storage that is not an input's/);
    });
  });
});
