/**
 * The CUDA backend: device memory through the addon's caching allocator, kernels enqueued on one
 * stream, and reads as the only points where JavaScript waits for the GPU.
 */
import { type Backend, type ByteCopy, type Capabilities, DTYPES, type KernelTable, type KernelTimer, type LightningDimsInfo, type MemoryStats } from "@lightning-ts/tensor";
import { LAUNCHERS } from "./codes.js";
import { type CudaGraph, recordGraph } from "./graph.js";
import { type CudaStorage, createKernels } from "./kernels.js";
import { loadAddon, type NativeRuntime, type RuntimeInfo } from "./native.js";

const COPY_MANY = LAUNCHERS.indexOf("copyMany");

export interface CudaBackendOptions {
  /** CUDA device ordinal (default 0). */
  device?: number;
}

/**
 * Kernel timing with CUDA events on the backend's stream (`profileOps`). `eventCreate` makes a new
 * cudaEvent every call and the runtime keeps each until it is disposed, so released events are
 * pooled here and reused by the next profile.
 */
class EventTimer implements KernelTimer {
  #free: number[] = [];
  /** Events made so far (the pool's size; later profiles reuse them). */
  created = 0;

  readonly #runtime: NativeRuntime;

  constructor(runtime: NativeRuntime) {
    this.#runtime = runtime;
  }

  mark(): number {
    let id = this.#free.pop();
    if (id === undefined) {
      id = this.#runtime.eventCreate();
      this.created++;
    }
    this.#runtime.eventRecord(id);
    return id;
  }

  /** Waits for the device to reach mark `b`. */
  elapsedMs(a: number, b: number): number {
    return this.#runtime.eventElapsed(a, b);
  }

  release(marks: readonly number[]): void {
    for (const id of marks) this.#free.push(id);
  }
}

export class CudaBackend implements Backend<CudaStorage> {
  readonly name = "cuda";
  readonly capabilities: Capabilities;
  readonly kernels: KernelTable<CudaStorage>;
  readonly info: RuntimeInfo;
  /** The native runtime, for timing with CUDA events (benchmarks). */
  readonly runtime: NativeRuntime;
  /** GPU time of each kernel, from CUDA events (`profileOps`). */
  readonly timer: EventTimer;

  constructor(runtime: NativeRuntime) {
    this.runtime = runtime;
    this.timer = new EventTimer(runtime);
    this.info = runtime.info();
    const cc = this.info.computeCapability;
    this.capabilities = {
      device: this.info.name,
      dtypes: ["f32", "f16", "bf16", "i32", "u8"],
      syncRead: true,
      features: ["f16", "bf16", `sm_${cc.replace(".", "")}`, ...(this.info.cublas === "cublas" ? ["cublas"] : [])],
      limits: { multiprocessors: this.info.smCount, totalMemoryBytes: this.info.totalMemory, maxBufferBytes: this.info.totalMemory },
    };
    this.kernels = createKernels(runtime);
  }

  allocate(byteLength: number): CudaStorage {
    const storage = { ptr: this.runtime.allocate(byteLength), byteLength };
    this.#recording?.push(storage);
    return storage;
  }

  /** Storages allocated while a graph is recorded (they become the graph's). */
  #recording: CudaStorage[] | null = null;

  /**
   * Records the kernels `fn` enqueues as a CUDA graph instead of running them; `replay()` runs
   * them again at the same addresses. Buffers allocated meanwhile are the graph's until
   * `dispose()`; reads, writes and syncs inside `fn` throw. Warm up first (run `fn`'s work once
   * eagerly): library set-up inside a recording is not supported everywhere.
   *
   * @example
   * const graph = backend.captureGraph(() => add(x, y)); // nothing ran yet
   * graph.replay(); // graph.result now holds x + y
   */
  captureGraph<T>(fn: () => T): CudaGraph<T> {
    if (this.#recording) throw new Error("captureGraph: a graph is already being recorded on this backend");
    return recordGraph(this.runtime, (list) => (this.#recording = list), fn);
  }

  free(storage: CudaStorage): void {
    this.runtime.free(storage.ptr);
  }

  /** The CUDA device ordinal this backend runs on (`cuda:<device>`). */
  get device(): number {
    return this.info.device;
  }

  /**
   * Copies `byteLength` bytes of another CUDA backend's storage into `dst`, device to device
   * (peer to peer where the GPUs allow it, else staged through the host by CUDA), ordered after
   * the work enqueued so far on both backends; the host does not wait. False for a source that is
   * not a CUDA backend (`copyTo` then reads it on the host).
   */
  copyFrom(dst: CudaStorage, source: Backend, src: unknown, byteLength: number): boolean {
    if (!(source instanceof CudaBackend)) return false;
    const from = src as CudaStorage;
    if (byteLength > from.byteLength || byteLength > dst.byteLength) {
      throw new Error(`copyFrom: byteLength ${byteLength} exceeds the source (${from.byteLength} bytes) or the destination (${dst.byteLength} bytes)`);
    }
    this.lastCopy = this.runtime.copyFrom(source.runtime, from.ptr, 0, dst.ptr, 0, byteLength);
    return true;
  }

  /**
   * Copies bytes between (or within) storages of this backend with cudaMemcpyAsync on its stream,
   * after the work enqueued so far; the host does not wait, and a CUDA graph can record it.
   */
  copyWithin(dst: CudaStorage, dstByteOffset: number, src: CudaStorage, srcByteOffset: number, byteLength: number): void {
    for (const [name, storage, offset] of [["dst", dst, dstByteOffset], ["src", src, srcByteOffset]] as const) {
      if (offset < 0 || offset + byteLength > storage.byteLength) {
        throw new Error(`copyWithin: ${byteLength} bytes at ${name} byte ${offset} run past its ${storage.byteLength} bytes`);
      }
    }
    if (byteLength === 0) return;
    this.runtime.copyFrom(this.runtime, src.ptr, srcByteOffset, dst.ptr, dstByteOffset, byteLength);
  }

  /**
   * Several copies within this backend's storages, and zero fills where `src` is null, as one kernel
   * on the stream (native/movement.cu copyMany; 64 ranges a launch): a decoder clears or moves one
   * row of every layer's state with one launch from JavaScript instead of one per layer.
   */
  copyMany(copies: readonly ByteCopy<CudaStorage>[]): void {
    const ptrs: number[] = [];
    const ints: number[] = [];
    for (const c of copies) {
      for (const [name, storage, offset] of [["dst", c.dst, c.dstByteOffset], ["src", c.src, c.srcByteOffset]] as const) {
        if (storage && (offset < 0 || offset + c.byteLength > storage.byteLength)) {
          throw new Error(`copyMany: ${c.byteLength} bytes at ${name} byte ${offset} run past its ${storage.byteLength} bytes`);
        }
      }
      ptrs.push(c.dst.ptr, c.src ? c.src.ptr : 0);
      ints.push(c.dstByteOffset, c.src ? c.srcByteOffset : 0, c.byteLength);
    }
    if (copies.length > 0) this.runtime.launch(COPY_MANY, ptrs, ints, []);
  }

  /** How the last `copyFrom` went: on one device, GPU to GPU, or staged through the host. */
  lastCopy: "same device" | "peer" | "staged" | null = null;

  write(storage: CudaStorage, bytes: Uint8Array, byteOffset = 0): void {
    if (bytes.byteLength > 0) this.runtime.write(storage.ptr, byteOffset, bytes);
  }

  read(storage: CudaStorage, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    return this.runtime.read(storage.ptr, byteOffset, byteLength);
  }

  readSync(storage: CudaStorage, byteOffset: number, byteLength: number): Uint8Array {
    return this.runtime.readSync(storage.ptr, byteOffset, byteLength);
  }

  sync(): Promise<void> {
    return this.runtime.sync();
  }

  memory(): MemoryStats {
    return this.runtime.memory();
  }

  resetPeakMemory(): void {
    this.runtime.resetPeak();
  }

  /**
   * The segment length of the Lightning forward's sequence split at these sizes where the backward
   * splits alike (bf16/f16 on the tensor-core kernels, a batch too small to fill the GPU), or 0:
   * `lightningAttention` then keeps the states entering those segments, which the forward makes
   * anyway, and the backward's dq pass reads them instead of making them again.
   * LIGHTNING_CUDA_LA_SEGMENT_STATES=0 (read at each call) names none, for comparison.
   */
  lightningSegmentTokens({ dtype, B, H, T, D, E }: LightningDimsInfo): number {
    const env = process.env.LIGHTNING_CUDA_LA_SEGMENT_STATES;
    if (env !== undefined && env !== "0" && env !== "1") throw new Error(`LIGHTNING_CUDA_LA_SEGMENT_STATES: expected 0 or 1, got '${env}'`);
    if (env === "0" || (dtype !== "bf16" && dtype !== "f16")) return 0;
    return this.runtime.lightningSegmentTokens(DTYPES.indexOf(dtype), B, H, T, D, E);
  }

  dispose(): void {
    this.runtime.dispose();
  }
}

/**
 * Starts the CUDA backend, or throws an Error saying why it cannot start here (addon not built,
 * no CUDA device, driver too old).
 *
 * @example
 * import { setBackend, randomNormal, matmul } from "@lightning-ts/tensor";
 * import { createCudaBackend } from "@lightning-ts/cuda";
 * setBackend(createCudaBackend());
 * const a = randomNormal([1024, 1024], { seed: 1 });
 * console.log((await matmul(a, a).data()).length); // 1048576
 */
export function createCudaBackend(options: CudaBackendOptions = {}): CudaBackend {
  const addon = loadAddon();
  if (addon.deviceCount === 0) {
    throw new Error(`no CUDA device: ${addon.deviceError || "cudaGetDeviceCount found 0 devices"}`);
  }
  return new CudaBackend(new addon.Runtime(options.device ?? 0));
}

/** Why the CUDA backend cannot start here, or null when it can (starts nothing). */
export function cudaUnavailableReason(): string | null {
  try {
    const addon = loadAddon();
    return addon.deviceCount === 0 ? `no CUDA device: ${addon.deviceError || "cudaGetDeviceCount found 0 devices"}` : null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}
