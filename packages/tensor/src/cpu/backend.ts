/**
 * The CPU backend: the reference every other backend is tested against, and a usable backend on
 * its own. Kernels run synchronously on typed arrays; large matmuls are split across worker threads.
 */
import { cpus } from "./platform.js";
import type { Backend, Capabilities, KernelTable, MemoryStats } from "../backend.js";
import { elementwiseKernels } from "./elementwise.js";
import { indexingKernels } from "./indexing.js";
import { createLightningKernels } from "./lightning.js";
import { createMatmulKernel } from "./matmul.js";
import { movementKernels } from "./movement.js";
import { nnKernels } from "./nn.js";
import { randomNormalKernel, randomUniformKernel } from "./random.js";
import { reduceKernels } from "./reduce.js";
import { allocateBytes, type CpuStorage } from "./storage.js";

export interface CpuBackendOptions {
  /** Worker threads for large matmuls (default: the number of cores, at most 8; 1 disables workers). */
  threads?: number;
}

export class CpuBackend implements Backend<CpuStorage> {
  readonly name = "cpu";
  readonly capabilities: Capabilities;
  readonly threads: number;
  readonly kernels: KernelTable<CpuStorage>;
  #live = new Set<CpuStorage>();
  #liveBytes = 0;
  #peak = 0;

  constructor(options: CpuBackendOptions = {}) {
    const info = cpus();
    this.threads = Math.max(1, Math.min(options.threads ?? info.count, 8));
    this.capabilities = {
      device: info.model,
      dtypes: ["f32", "f64", "f16", "bf16", "i32", "u8"],
      syncRead: true,
      features: this.threads > 1 ? ["threads"] : [],
      limits: { maxBufferBytes: 2 ** 31 - 1 },
    };
    const matmul = createMatmulKernel(this.threads, this);
    this.kernels = {
      ...elementwiseKernels,
      ...reduceKernels,
      ...movementKernels,
      ...indexingKernels,
      ...nnKernels,
      matmul,
      randomUniform: randomUniformKernel,
      randomNormal: randomNormalKernel,
      ...createLightningKernels(matmul),
    };
  }

  allocate(byteLength: number): CpuStorage {
    const s = allocateBytes(byteLength);
    this.#live.add(s);
    this.#liveBytes += byteLength;
    this.#peak = Math.max(this.#peak, this.#liveBytes);
    return s;
  }

  free(storage: CpuStorage): void {
    if (this.#live.delete(storage)) this.#liveBytes -= storage.bytes.byteLength;
  }

  write(storage: CpuStorage, bytes: Uint8Array, byteOffset = 0): void {
    storage.bytes.set(bytes, byteOffset);
  }

  async read(storage: CpuStorage, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    return this.readSync(storage, byteOffset, byteLength);
  }

  readSync(storage: CpuStorage, byteOffset: number, byteLength: number): Uint8Array {
    return storage.bytes.slice(byteOffset, byteOffset + byteLength);
  }

  async sync(): Promise<void> {}

  memory(): MemoryStats {
    return { liveBytes: this.#liveBytes, liveBuffers: this.#live.size, pooledBytes: 0, peakBytes: this.#peak };
  }

  resetPeakMemory(): void {
    this.#peak = this.#liveBytes;
  }

  dispose(): void {
    this.#live.clear();
    this.#liveBytes = 0;
  }
}

export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  return new CpuBackend(options);
}
