/**
 * NCCL collectives on two GPUs, and device placement with two CUDA backends in one process.
 *
 * Both ranks live in this process (cuda:0 and cuda:1), so their calls are made together inside
 * ncclGroup, as NCCL requires of one thread driving two ranks; the peer-death case starts a second
 * process for rank 1 and kills it. Every result is checked against the same computation on the
 * host, on seeded random inputs of odd sizes. With two ranks a sum or a max is one rounding of
 * exact values, so those are compared bit for bit; an average may scale each input before adding
 * (NCCL's pre-multiplied sum), so it is allowed one unit in the last place of its dtype.
 *
 * Skipped, with the reason printed, without two CUDA devices or without NCCL.
 */
import * as T from "@lightning-ts/tensor";
import type { DType, ReduceOp, Tensor } from "@lightning-ts/tensor";
import { seeded } from "@lightning-ts/testing";
import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CudaBackend,
  type CudaCollective,
  createCudaBackend,
  createNcclCollective,
  cudaUnavailableReason,
  ncclGroup,
  ncclUnavailableReason,
  ncclUniqueId,
} from "../src/index.js";
import type { CudaStorage } from "../src/kernels.js";
import { addonPath, loadAddon } from "../src/native.js";

function skipReason(): string | null {
  const cuda = cudaUnavailableReason();
  if (cuda) return cuda;
  const count = loadAddon().deviceCount;
  if (count < 2) return `${count} CUDA device here; these tests need 2`;
  return ncclUnavailableReason();
}
const reason = skipReason();
if (reason) console.log(`[nccl] skipped: ${reason}`);

const DTYPES: DType[] = ["f32", "bf16", "f16", "i32"];
const OPS: ReduceOp[] = ["sum", "avg", "max", "min"];
const SHAPES = [[1], [1027], [3, 517], [65_539], [1_000_003]];

/** Seeded inputs for one rank: integers in [-1000, 1000] for i32, normal values otherwise. */
function input(rng: ReturnType<typeof seeded>, shape: number[], dtype: DType, backend: CudaBackend): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = dtype === "i32" ? Float64Array.from({ length: n }, () => rng.int(2001) - 1000) : rng.array(n);
  return T.tensor(data, shape, { dtype, backend });
}

const values = async (t: Tensor) => Float64Array.from(await t.data());

/** Values rounded to `dtype` as the backend stores them (one rounding). */
function rounded(dtype: DType, v: Float64Array): Float64Array {
  return Float64Array.from(T.decode(dtype, T.encode(dtype, v)));
}

/** The spacing of `dtype`'s values at |v| (its unit in the last place). */
function ulp(dtype: DType, v: number): number {
  const [mantissa, minExp] = dtype === "f32" ? [23, -126] : dtype === "bf16" ? [7, -126] : [10, -14];
  const e = Math.max(Math.floor(Math.log2(Math.abs(v) || 2 ** minExp)), minExp);
  return 2 ** (e - mantissa);
}

function reduceHost(op: ReduceOp, dtype: DType, a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const s = a[i] + b[i];
    out[i] = op === "sum" ? s : op === "max" ? Math.max(a[i], b[i]) : op === "min" ? Math.min(a[i], b[i]) : s / 2;
  }
  return dtype === "i32" ? out.map((v) => (v | 0)) : rounded(dtype, out);
}

function expectEqual(got: Float64Array, want: Float64Array, label: string): void {
  expect(got.length, label).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (!(got[i] === want[i])) throw new Error(`${label}: element ${i} is ${got[i]}, expected ${want[i]}`);
  }
}

function expectWithinUlp(dtype: DType, got: Float64Array, want: Float64Array, label: string): void {
  expect(got.length, label).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= ulp(dtype, want[i]))) throw new Error(`${label}: element ${i} is ${got[i]}, expected ${want[i]} within one ulp`);
  }
}

describe.skipIf(reason !== null)("NCCL on two GPUs", () => {
  let b0: CudaBackend;
  let b1: CudaBackend;
  let c0: CudaCollective;
  let c1: CudaCollective;

  beforeAll(async () => {
    b0 = createCudaBackend({ device: 0 });
    b1 = createCudaBackend({ device: 1 });
    const uniqueId = ncclUniqueId();
    // ncclCommInitRank waits for every rank: both join at once, each on a thread of its own.
    [c0, c1] = await Promise.all([
      createNcclCollective({ backend: b0, rank: 0, worldSize: 2, uniqueId }),
      createNcclCollective({ backend: b1, rank: 1, worldSize: 2, uniqueId }),
    ]);
  });

  afterAll(() => {
    if (c0 && c1) ncclGroup(() => [c0.dispose(), c1.dispose()]);
    b0?.dispose();
    b1?.dispose();
  });

  for (const dtype of DTYPES) {
    it(`allReduce: every op on ${dtype} (avg on floats only), odd sizes`, async () => {
      const rng = seeded(1801 + DTYPES.indexOf(dtype));
      for (const shape of SHAPES) {
        for (const op of OPS.filter((o) => o !== "avg" || dtype !== "i32")) {
          const x0 = input(rng, shape, dtype, b0);
          const x1 = input(rng, shape, dtype, b1);
          const [y0, y1] = ncclGroup(() => [c0.allReduce(x0, op), c1.allReduce(x1, op)]);
          expect(y0.backend).toBe(b0);
          expect(y1.backend).toBe(b1);
          expect(y0.shape).toEqual(shape);
          expect(y0.dtype).toBe(dtype);
          const want = reduceHost(op, dtype, await values(x0), await values(x1));
          const label = `allReduce ${op} ${dtype} [${shape.join(", ")}]`;
          for (const [r, y] of [[0, y0], [1, y1]] as const) {
            if (op === "avg") expectWithinUlp(dtype, await values(y), want, `${label} rank ${r}`);
            else expectEqual(await values(y), want, `${label} rank ${r}`);
          }
          for (const t of [x0, x1, y0, y1]) t.dispose();
        }
      }
    });
  }

  it("allGather stacks every rank's tensor in rank order", async () => {
    const rng = seeded(1811);
    for (const dtype of DTYPES) {
      for (const shape of [[1], [3, 517], [65_539]]) {
        const x0 = input(rng, shape, dtype, b0);
        const x1 = input(rng, shape, dtype, b1);
        const [y0, y1] = ncclGroup(() => [c0.allGather(x0), c1.allGather(x1)]);
        expect(y0.shape).toEqual([2, ...shape]);
        const want = Float64Array.from([...(await values(x0)), ...(await values(x1))]);
        expectEqual(await values(y0), want, `allGather ${dtype} rank 0`);
        expectEqual(await values(y1), want, `allGather ${dtype} rank 1`);
        for (const t of [x0, x1, y0, y1]) t.dispose();
      }
    }
  });

  it("reduceScatter gives rank r rows r·n … (r+1)·n − 1 of the reduction", async () => {
    const rng = seeded(1812);
    for (const dtype of DTYPES) {
      for (const op of OPS.filter((o) => o !== "avg" || dtype !== "i32")) {
        const shape = [2 * 259, 7];
        const x0 = input(rng, shape, dtype, b0);
        const x1 = input(rng, shape, dtype, b1);
        const [y0, y1] = ncclGroup(() => [c0.reduceScatter(x0, op), c1.reduceScatter(x1, op)]);
        expect(y0.shape).toEqual([259, 7]);
        const want = reduceHost(op, dtype, await values(x0), await values(x1));
        const half = 259 * 7;
        for (const [r, y] of [[0, y0], [1, y1]] as const) {
          const part = want.slice(r * half, (r + 1) * half);
          const label = `reduceScatter ${op} ${dtype} rank ${r}`;
          if (op === "avg") expectWithinUlp(dtype, await values(y), part, label);
          else expectEqual(await values(y), part, label);
        }
        for (const t of [x0, x1, y0, y1]) t.dispose();
      }
    }
  });

  it("broadcast copies the root's tensor to every rank", async () => {
    const rng = seeded(1813);
    for (const root of [0, 1]) {
      for (const dtype of DTYPES) {
        const x0 = input(rng, [1031], dtype, b0);
        const x1 = input(rng, [1031], dtype, b1);
        const [y0, y1] = ncclGroup(() => [c0.broadcast(x0, root), c1.broadcast(x1, root)]);
        const want = await values(root === 0 ? x0 : x1);
        expectEqual(await values(y0), want, `broadcast from ${root} ${dtype} rank 0`);
        expectEqual(await values(y1), want, `broadcast from ${root} ${dtype} rank 1`);
        for (const t of [x0, x1, y0, y1]) t.dispose();
      }
    }
  });

  it("send and recv, one way and both ways at once", async () => {
    const rng = seeded(1814);
    for (const dtype of DTYPES) {
      const x0 = input(rng, [5, 211], dtype, b0);
      const x1 = input(rng, [3, 97], dtype, b1);
      const got1 = ncclGroup(() => {
        c0.send(x0, 1);
        return c1.recv([5, 211], dtype, 0);
      });
      expectEqual(await values(got1), await values(x0), `send 0 → 1 ${dtype}`);
      const [got0, back1] = ncclGroup(() => {
        c0.send(x0, 1);
        c1.send(x1, 0);
        return [c0.recv([3, 97], dtype, 1), c1.recv([5, 211], dtype, 0)];
      });
      expectEqual(await values(got0), await values(x1), `exchange 1 → 0 ${dtype}`);
      expectEqual(await values(back1), await values(x0), `exchange 0 → 1 ${dtype}`);
      for (const t of [x0, x1, got1, got0, back1]) t.dispose();
    }
  });

  it("sendAsync and recvAsync run on the communication stream and hold their buffers until wait()", async () => {
    const rng = seeded(1816);
    for (const dtype of DTYPES) {
      const x0 = input(rng, [7, 1031], dtype, b0);
      const sent = await values(x0);
      const [out, got] = ncclGroup(() => [c0.sendAsync(x0, 1), c1.recvAsync([7, 1031], dtype, 0)]);
      expect(() => ncclGroup(() => got.wait())).toThrow(/recvAsync: wait\(\) inside ncclGroup/);
      // The sender lets go of x0 at once and fills new tensors of its size: the send still reads x0.
      x0.dispose();
      const noise = [0, 1, 2].map(() => input(rng, [7, 1031], dtype, b0));
      const received = got.wait();
      expectEqual(await values(received), sent, `sendAsync 0 → 1 ${dtype}`);
      expect(out.wait()).toBe(out.value);
      for (const t of [received, ...noise]) t.dispose();
    }
  });

  it("allReduceAsync overlaps kernels on the compute stream and holds its buffers until wait()", async () => {
    const rng = seeded(1815);
    const n = 4_000_037;
    const x0 = input(rng, [n], "f32", b0);
    const x1 = input(rng, [n], "f32", b1);
    const want = reduceHost("sum", "f32", await values(x0), await values(x1));
    const a0 = input(rng, [n], "f32", b0);
    const a1 = input(rng, [n], "f32", b1);
    const [p0, p1] = ncclGroup(() => [c0.allReduceAsync(x0), c1.allReduceAsync(x1)]);
    // Freed at once: the allocator must not hand their memory to the kernels below while the
    // communication stream still reads it.
    x0.dispose();
    x1.dispose();
    // Compute enqueued while the all-reduce runs, into buffers of the same size class.
    let z0 = a0;
    let z1 = a1;
    for (let k = 0; k < 8; k++) {
      const n0 = T.mul(z0, T.scalar(1.0001, { backend: b0 }));
      const n1 = T.mul(z1, T.scalar(1.0001, { backend: b1 }));
      if (z0 !== a0) {
        z0.dispose();
        z1.dispose();
      }
      z0 = n0;
      z1 = n1;
    }
    const y0 = p0.wait();
    const y1 = p1.wait();
    // Used by an op right away: the compute stream waits for the all-reduce, the host does not.
    const s0 = T.add(y0, T.scalar(0, { backend: b0 }));
    const s1 = T.add(y1, T.scalar(0, { backend: b1 }));
    expectEqual(await values(s0), want, "allReduceAsync rank 0");
    expectEqual(await values(s1), want, "allReduceAsync rank 1");
    const scaled = await values(a0);
    const got = await values(z0);
    for (let i = 0; i < n; i += 9973) expect(got[i]).toBeCloseTo(scaled[i] * 1.0001 ** 8, 4);
    for (const t of [a0, a1, z0, z1, y0, y1, s0, s1]) t.dispose();
  });

  it("allReduce in place: the result shares the input's storage; many calls reuse the communicator's events", async () => {
    const rng = seeded(1817);
    for (const n of [1, 1031, 262_147]) {
      const x0 = input(rng, [n], "f32", b0);
      const x1 = input(rng, [n], "f32", b1);
      const sum = reduceHost("sum", "f32", await values(x0), await values(x1));
      // Each in-place sum over two equal buffers doubles them: after k calls, 2^(k−1)·sum, exact in
      // f32. Rounds of calls with a sync between let the watchdog hand events back to the pool.
      let calls = 0;
      for (let round = 0; round < 3; round++) {
        for (let k = 0; k < 40; k++) {
          const [y0, y1] = ncclGroup(() => [c0.allReduce(x0, "sum", { inPlace: true }), c1.allReduce(x1, "sum", { inPlace: true })]);
          expect(y0.handle).toBe(x0.handle);
          expect(y1.handle).toBe(x1.handle);
          y0.dispose();
          y1.dispose();
          calls++;
        }
        await Promise.all([b0.sync(), b1.sync()]);
        await new Promise((r) => setTimeout(r, 120));
      }
      const [p0, p1] = ncclGroup(() => [c0.allReduceAsync(x0, "sum", { inPlace: true }), c1.allReduceAsync(x1, "sum", { inPlace: true })]);
      calls++;
      const want = sum.map((v) => v * 2 ** (calls - 1));
      expectEqual(await values(p0.wait()), want, `in-place allReduce f32 [${n}] rank 0`);
      expectEqual(await values(p1.wait()), want, `in-place allReduce f32 [${n}] rank 1`);
      expectEqual(await values(x0), want, `in-place allReduce f32 [${n}] rank 0, input`);
      for (const t of [x0, x1, p0.value, p1.value]) t.dispose();
    }
    expect(c0.failure).toBe("");
  });

  it("barrier resolves on every rank", async () => {
    await Promise.all(ncclGroup(() => [c0.barrier(), c1.barrier()]));
  });

  it("refuses bad input by name", async () => {
    const x0 = T.tensor([1, 2, 3], [3], { backend: b0 });
    const x1 = T.tensor([1, 2, 3], [3], { backend: b1 });
    expect(() => ncclGroup(() => c0.allReduce(x1))).toThrow(/allReduce: x must be a tensor on this collective's backend \(cuda:0, rank 0\), got one on cuda:1/);
    expect(() => ncclGroup(() => c0.allReduce(x0, "prod" as ReduceOp))).toThrow(/op must be one of "sum", "avg", "max", "min", got "prod"/);
    const i0 = T.tensor([1, 2, 3], [3], { dtype: "i32", backend: b0 });
    expect(() => ncclGroup(() => c0.allReduce(i0, "avg"))).toThrow(/op must be "sum", "max" or "min" for i32 \("avg" needs a float dtype\), got "avg"/);
    i0.dispose();
    expect(() => ncclGroup(() => c0.reduceScatter(x0))).toThrow(/first dim divisible by worldSize 2, got f32\[3\]/);
    expect(() => ncclGroup(() => c0.broadcast(x0, 2))).toThrow(/root must be a rank in \[0, 2\), got 2/);
    expect(() => ncclGroup(() => c0.allReduce(x0, "sum", { inPlace: 1 } as never))).toThrow(/allReduce.*options\.inPlace.*a boolean.*1/);
    const uniqueId = ncclUniqueId();
    await expect(createNcclCollective({ backend: b0, rank: 2, worldSize: 2, uniqueId })).rejects.toThrow("rank must be an integer in [0, 2), got 2");
    await expect(createNcclCollective({ backend: b0, rank: 0, worldSize: 0, uniqueId })).rejects.toThrow("worldSize must be a positive integer, got 0");
    await expect(createNcclCollective({ backend: b0, rank: 0, worldSize: 2, uniqueId: uniqueId.slice(0, 12) })).rejects.toThrow("uniqueId must be the 128 bytes of ncclUniqueId(), got 12 bytes");
    // Two ranks of one communicator in this thread: alone, the call would wait forever.
    expect(() => c0.allReduce(x0)).toThrow(/ranks 0, 1 of this communicator live in this thread.*ncclGroup/);
    x0.dispose();
    x1.dispose();
  });
});

describe.skipIf(reason !== null)("two CUDA backends in one process", () => {
  const addon = () => loadAddon();
  const device = (t: Tensor) => addon().pointerDevice((t.handle.storage as CudaStorage).ptr);

  it("allocations, launches and reads land on each backend's own device", async () => {
    const b0 = createCudaBackend({ device: 0 });
    const b1 = createCudaBackend({ device: 1 });
    try {
      const rng = seeded(1820);
      for (let round = 0; round < 3; round++) {
        // Interleaved, so every call finds the other backend's device current.
        const a1 = T.tensor(rng.array(1031), [1031], { backend: b1 });
        const a0 = T.tensor(rng.array(1031), [1031], { backend: b0 });
        const y1 = T.exp(a1);
        expect(addon().currentDevice()).toBe(1);
        const y0 = T.exp(a0);
        expect(addon().currentDevice()).toBe(0);
        const s1 = T.sum(T.mul(y1, y1), [0]);
        expect([device(a0), device(y0), device(a1), device(y1), device(s1)]).toEqual([0, 0, 1, 1, 1]);
        const want = (await values(a1)).map(Math.exp);
        const got = await values(y1);
        for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-6 * want[i]);
        expect(addon().currentDevice()).toBe(1);
        for (const t of [a0, a1, y0, y1, s1]) t.dispose();
      }
    } finally {
      b0.dispose();
      b1.dispose();
    }
  });

  // Kernels with per-device state (a cuBLAS handle, an opted-in shared memory size) must set it up
  // on each device: the second device computes exactly what the first did.
  it("matmul and Lightning Attention on the second device after the first", async () => {
    const b0 = createCudaBackend({ device: 0 });
    const b1 = createCudaBackend({ device: 1 });
    try {
      const rng = seeded(1822);
      for (const dtype of ["f32", "bf16"] as DType[]) {
        const a = rng.array(257 * 129);
        const b = rng.array(129 * 67);
        const [q, k, v] = [0, 1, 2].map(() => rng.array(2 * 3 * 1031 * 128, 0.5));
        const run = (be: CudaBackend) => {
          const m = T.matmul(T.tensor(a, [257, 129], { dtype, backend: be }), T.tensor(b, [129, 67], { dtype, backend: be }));
          const t = (x: Float64Array) => T.tensor(x, [2, 3, 1031, 128], { dtype, backend: be });
          const slopes = T.tensor([0.5, 0.25, 0.125], [3], { backend: be });
          return [m, T.lightningAttention(t(q), t(k), t(v), slopes)];
        };
        const [m0, o0] = run(b0);
        const [m1, o1] = run(b1);
        expect([device(m1), device(o1)]).toEqual([1, 1]);
        expectEqual(await values(m1), await values(m0), `matmul ${dtype} on cuda:1 against cuda:0`);
        expectEqual(await values(o1), await values(o0), `lightningAttention ${dtype} on cuda:1 against cuda:0`);
      }
    } finally {
      b0.dispose();
      b1.dispose();
    }
  });

  it("copyFrom copies between the two devices, ordered after both streams", async () => {
    const b0 = createCudaBackend({ device: 0 });
    const b1 = createCudaBackend({ device: 1 });
    try {
      const rng = seeded(1821);
      for (const n of [1, 1031, 3_000_017]) {
        const x = T.tensor(rng.array(n), [n], { backend: b0 });
        const y = T.exp(x); // still running on cuda:0 when the copy is enqueued
        const bytes = n * 4;
        const dst = b1.allocate(bytes);
        expect(b1.copyFrom(dst, b0, y.handle.storage, bytes)).toBe(true);
        expect(["peer", "staged"]).toContain(b1.lastCopy);
        const copied = new T.Tensor({ backend: b1, storage: dst, byteLength: bytes, refs: 0 }, [n], "f32");
        expect(device(copied)).toBe(1);
        expectEqual(await values(copied), await values(y), `copy of ${n} values cuda:0 → cuda:1`);
        expect(b1.copyFrom(dst, T.createCpuBackend(), new ArrayBuffer(bytes), bytes)).toBe(false);
        for (const t of [x, y, copied]) t.dispose();
      }
    } finally {
      b0.dispose();
      b1.dispose();
    }
  });
});

describe.skipIf(reason !== null)("a peer that dies", () => {
  it("fails the survivor's all-reduce with a clear error within the timeout, instead of hanging", async () => {
    const timeoutMs = 3000;
    const backend = createCudaBackend({ device: 0 });
    const uniqueId = ncclUniqueId();
    const n = 1_000_003;
    // Rank 1 in a process of its own, on the addon alone: it joins, takes part in one all-reduce
    // (NCCL connects the ranks at their first collective), says so, and is killed mid-run.
    const script = `
      const addon = require(${JSON.stringify(addonPath())});
      const rt = new addon.Runtime(1);
      const comm = new addon.nccl.Communicator(rt, Buffer.from(${JSON.stringify(Buffer.from(uniqueId).toString("hex"))}, "hex"), 2, 1, 600000);
      comm.init().then(async () => {
        const p = rt.allocate(${4 * n});
        comm.allReduce(p, p, ${n}, 0, "sum", false);
        await rt.sync();
        console.log("joined");
        setInterval(() => {}, 1000);
      }, (e) => { console.error(e.message); process.exit(1); });
    `;
    const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const joined = new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => {
          if (d.toString().includes("joined")) resolve();
        });
        child.on("exit", (code) => reject(new Error(`rank 1 exited (${code}) before it joined`)));
      });
      const x = T.tensor(seeded(1830).array(n), [n], { backend });
      const group = await createNcclCollective({ backend, rank: 0, worldSize: 2, uniqueId, timeoutMs });
      const first = group.allReduce(x);
      await Promise.all([first.data(), joined]);
      first.dispose();
      const exited = new Promise((resolve) => child.on("exit", resolve));
      child.kill("SIGKILL");
      await exited;
      const started = Date.now();
      // NCCL may notice the dead peer when the call is enqueued (its socket is gone) or only while
      // the collective runs (the watchdog): the error comes from the call or from the next read.
      let failure: unknown = null;
      try {
        await group.allReduce(x).data();
      } catch (err) {
        failure = err;
      }
      expect(String(failure)).toMatch(/NCCL .*rank 0 of 2 on cuda:0/);
      const waited = Date.now() - started;
      expect(waited).toBeLessThan(timeoutMs + 10_000);
      // The failure stays: later reads and collectives refuse too.
      await expect(x.data()).rejects.toThrow(/NCCL/);
      expect(() => group.allReduce(x)).toThrow(/NCCL/);
      group.dispose();
      console.log(`[nccl] the survivor failed ${waited} ms after its all-reduce: ${String(failure)}`);
    } finally {
      child.kill("SIGKILL");
      backend.dispose();
    }
  }, 60_000);
});
