/**
 * The CPU backend: the reference every other backend is tested against, and a usable backend on
 * its own. Kernels run synchronously on typed arrays; large matmuls are split across worker threads.
 */
import { cpus } from "./platform.js";
import type { Backend, ByteCopy, Capabilities, KernelTable, KernelTimer, MemoryStats } from "../backend.js";
import { elementwiseKernels } from "./elementwise.js";
import { indexingKernels } from "./indexing.js";
import { createLightningKernels } from "./lightning.js";
import { createMatmulKernel, forgetPacked, type MatmulKernelKind } from "./matmul.js";
import { movementKernels } from "./movement.js";
import { nnKernels } from "./nn.js";
import { randomNormalKernel, randomUniformKernel } from "./random.js";
import { reduceKernels } from "./reduce.js";
import { allocateBytes, type CpuStorage } from "./storage.js";

export interface CpuBackendOptions {
  /** Worker threads for large matmuls (default: the number of cores, at most 8; 1 disables workers). */
  threads?: number;
  /**
   * Bytes of freed buffers kept for reuse (default 256 MiB; 0 disables the pool). Without a pool,
   * memory of disposed tensors comes back only when the garbage collector runs.
   */
  poolBytes?: number;
  /**
   * The matmul micro-kernel (default "auto": relaxed-SIMD FMA where the engine has it, else plain
   * SIMD, else plain JS). Forcing a fallback is for tests and comparisons.
   */
  matmulKernel?: "auto" | MatmulKernelKind;
}

export class CpuBackend implements Backend<CpuStorage> {
  readonly name = "cpu";
  readonly capabilities: Capabilities;
  readonly threads: number;
  readonly kernels: KernelTable<CpuStorage>;
  /** Kernels run to completion when called, so the wall clock around a call is its exact time. */
  readonly timer: KernelTimer = { mark: () => performance.now(), elapsedMs: (a, b) => b - a };
  #live = new Set<CpuStorage>();
  #liveBytes = 0;
  #peak = 0;
  /** Freed buffers by capacity (bytes rounded up to 8), oldest first; reused by allocations of that size. */
  #pool = new Map<number, CpuStorage[]>();
  #pooledBytes = 0;
  readonly #poolLimit: number;

  constructor(options: CpuBackendOptions = {}) {
    const info = cpus();
    this.#poolLimit = Math.max(0, options.poolBytes ?? 256 * 2 ** 20);
    this.threads = Math.max(1, Math.min(options.threads ?? info.count, 8));
    this.capabilities = {
      device: info.model,
      dtypes: ["f32", "f64", "f16", "bf16", "i32", "u8"],
      syncRead: true,
      features: this.threads > 1 ? ["threads"] : [],
      limits: { maxBufferBytes: 2 ** 31 - 1 },
    };
    const kind = options.matmulKernel === "auto" ? undefined : options.matmulKernel;
    const live = this.#live;
    // Only live tensors' storages are cacheable: their writes and frees all pass through here (the
    // Lightning kernels' scratch operands do not, and are never cached).
    const matmul = createMatmulKernel(this.threads, { owner: this, kind, cacheable: (s) => live.has(s) });
    this.kernels = forgettingOutputs({
      ...elementwiseKernels,
      ...reduceKernels,
      ...movementKernels,
      ...indexingKernels,
      ...nnKernels,
      matmul,
      randomUniform: randomUniformKernel,
      randomNormal: randomNormalKernel,
      ...createLightningKernels(matmul),
    });
  }

  allocate(byteLength: number): CpuStorage {
    const capacity = capacityOf(byteLength);
    const reused = this.#pool.get(capacity)?.pop();
    let s: CpuStorage;
    if (reused) {
      this.#pooledBytes -= capacity;
      // Kernels may rely on fresh storage being zero, as new ArrayBuffers are. Filled 8 bytes at a
      // time: on shared memory a byte-wise fill runs ~12x slower (0.6 ms per MiB), which showed up
      // as 15% of a 512³ matmul's time.
      const bytes = new Uint8Array(reused.bytes.buffer, 0, byteLength);
      new Float64Array(reused.bytes.buffer, 0, capacity / 8).fill(0);
      s = { bytes };
    } else {
      s = allocateBytes(byteLength);
    }
    this.#live.add(s);
    this.#liveBytes += byteLength;
    this.#peak = Math.max(this.#peak, this.#liveBytes);
    return s;
  }

  free(storage: CpuStorage): void {
    if (!this.#live.delete(storage)) return;
    forgetPacked(storage);
    this.#liveBytes -= storage.bytes.byteLength;
    const capacity = capacityOf(storage.bytes.byteLength);
    if (capacity === 0 || capacity > this.#poolLimit) return;
    let list = this.#pool.get(capacity);
    if (!list) this.#pool.set(capacity, (list = []));
    list.push(storage);
    this.#pooledBytes += capacity;
    // Over the limit: drop buffers from the largest size classes first (they are reused least).
    if (this.#pooledBytes > this.#poolLimit) {
      for (const size of [...this.#pool.keys()].sort((a, b) => b - a)) {
        const bucket = this.#pool.get(size)!;
        while (bucket.length > 0 && this.#pooledBytes > this.#poolLimit) {
          bucket.shift();
          this.#pooledBytes -= size;
        }
        if (bucket.length === 0) this.#pool.delete(size);
        if (this.#pooledBytes <= this.#poolLimit) break;
      }
    }
  }

  write(storage: CpuStorage, bytes: Uint8Array, byteOffset = 0): void {
    storage.bytes.set(bytes, byteOffset);
    forgetPacked(storage);
  }

  copyWithin(dst: CpuStorage, dstByteOffset: number, src: CpuStorage, srcByteOffset: number, byteLength: number): void {
    for (const [name, storage, offset] of [["dst", dst, dstByteOffset], ["src", src, srcByteOffset]] as const) {
      if (offset < 0 || offset + byteLength > storage.bytes.byteLength) {
        throw new Error(`copyWithin: ${byteLength} bytes at ${name} byte ${offset} run past its ${storage.bytes.byteLength} bytes`);
      }
    }
    dst.bytes.set(src.bytes.subarray(srcByteOffset, srcByteOffset + byteLength), dstByteOffset);
    forgetPacked(dst);
  }

  copyMany(copies: readonly ByteCopy<CpuStorage>[]): void {
    for (const c of copies) {
      for (const [name, storage, offset] of [["dst", c.dst, c.dstByteOffset], ["src", c.src, c.srcByteOffset]] as const) {
        if (storage && (offset < 0 || offset + c.byteLength > storage.bytes.byteLength)) {
          throw new Error(`copyMany: ${c.byteLength} bytes at ${name} byte ${offset} run past its ${storage.bytes.byteLength} bytes`);
        }
      }
      if (c.src) c.dst.bytes.set(c.src.bytes.subarray(c.srcByteOffset, c.srcByteOffset + c.byteLength), c.dstByteOffset);
      else c.dst.bytes.fill(0, c.dstByteOffset, c.dstByteOffset + c.byteLength);
      forgetPacked(c.dst);
    }
  }

  read(storage: CpuStorage, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    return new Promise((resolve) => resolve(this.readSync(storage, byteOffset, byteLength)));
  }

  readSync(storage: CpuStorage, byteOffset: number, byteLength: number): Uint8Array {
    return storage.bytes.slice(byteOffset, byteOffset + byteLength);
  }

  async sync(): Promise<void> {}

  memory(): MemoryStats {
    return { liveBytes: this.#liveBytes, liveBuffers: this.#live.size, pooledBytes: this.#pooledBytes, peakBytes: this.#peak };
  }

  resetPeakMemory(): void {
    this.#peak = this.#liveBytes;
  }

  dispose(): void {
    this.#pool.clear();
    this.#pooledBytes = 0;
    this.#live.clear();
    this.#liveBytes = 0;
  }
}

/**
 * The kernel table with every kernel wrapped so that its outputs' storages drop any packed copy
 * matmul cached for them: writing a tensor through any kernel (a copy, an optimizer update) must
 * not leave a stale packed weight behind.
 */
function forgettingOutputs(table: KernelTable<CpuStorage>): KernelTable<CpuStorage> {
  const wrapped: Record<string, unknown> = {};
  for (const [name, kernel] of Object.entries(table)) {
    wrapped[name] =
      typeof kernel !== "function"
        ? kernel
        : (call: { outputs: readonly { storage: CpuStorage }[] }) => {
            (kernel as (c: typeof call) => void)(call);
            for (const o of call.outputs) forgetPacked(o.storage);
          };
  }
  return wrapped as KernelTable<CpuStorage>;
}

/** Buffers are allocated in multiples of 8 bytes (see allocateBytes), so that is the pool's size class. */
const capacityOf = (byteLength: number) => Math.ceil(byteLength / 8) * 8;

export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  return new CpuBackend(options);
}
