/**
 * The backend contract: storage methods plus one kernel table keyed by op name.
 *
 * A backend owns opaque storage handles (`S`): an ArrayBuffer on the CPU, a GPUBuffer on WebGPU, a
 * device pointer on CUDA. Kernels receive already-validated inputs and already-allocated outputs;
 * on a GPU they only enqueue work, and only `read` waits for it. An output is fresh storage, or
 * (placed with `runOp`'s `into`) a live tensor's storage, which is never an input's storage except
 * for the pairs in `ALIASED_OUTPUTS`.
 */
import type { DType } from "./dtype.js";
import type { CompositeOpName, KernelOpName, OpAttrs } from "./ops/attrs.js";

/** A contiguous, row-major tensor as a kernel sees it. */
export interface TensorRef<S> {
  readonly storage: S;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
}

export interface KernelArgs<K extends KernelOpName, S> {
  readonly inputs: readonly TensorRef<S>[];
  readonly outputs: readonly TensorRef<S>[];
  readonly attrs: OpAttrs[K];
}

export type Kernel<K extends KernelOpName, S> = (args: KernelArgs<K, S>) => void;

/** How a backend declares an op it truly cannot run; calling the op throws with this reason. */
export interface Unsupported {
  readonly unsupported: string;
}

/**
 * One entry per op: a kernel, or `Unsupported` with a reason. Composite ops (`COMPOSITE_OPS`) may be
 * left out, and the engine then runs their decomposition into primitives on this backend.
 */
export type KernelTable<S> = { [K in Exclude<KernelOpName, CompositeOpName>]: Kernel<K, S> | Unsupported } & {
  [K in CompositeOpName]?: Kernel<K, S> | Unsupported;
};

/**
 * Outputs that may be written over an input's storage: [output, input] index pairs per op. Every
 * backend's kernel for such an op must accept `outputs[o].storage === inputs[i].storage` and give
 * the same bits as with separate storage (each element read before it is written, by the same
 * thread). lightningStep's new state over its state is what a decoder updates in place, and
 * decodeLayer's the same (its state is input 6).
 */
export const ALIASED_OUTPUTS: Readonly<Partial<Record<KernelOpName, readonly (readonly [output: number, input: number])[]>>> = {
  lightningStep: [[1, 4]],
  decodeLayer: [[1, 6]],
};

export function isUnsupported(k: unknown): k is Unsupported {
  return typeof k === "object" && k !== null && "unsupported" in k;
}

export interface MemoryStats {
  /** Bytes held by live tensors. */
  liveBytes: number;
  liveBuffers: number;
  /** Bytes kept by a caching allocator for reuse (0 where there is none). */
  pooledBytes: number;
  peakBytes: number;
  /** Allocations that found the device full and gave cached blocks back (a caching allocator near its limit). */
  cacheReleases?: number;
}

/**
 * Timestamps in a backend's stream of work, for `profileOps`. A mark is taken just before and just
 * after a kernel is enqueued; on a GPU it is an event recorded on the stream, so the difference is
 * device time, and reading it may wait for the device (callers read only after a sync).
 */
export interface KernelTimer {
  /** Records a point in the stream of work; returns its id. */
  mark(): number;
  /** Milliseconds from mark `a` to mark `b`. */
  elapsedMs(a: number, b: number): number;
  /** Hands marks back for reuse once read (GPU events are pooled); absent where marks cost nothing. */
  release?(marks: readonly number[]): void;
}

export interface Capabilities {
  /** Human-readable device name, e.g. the CPU model or the GPU name. */
  device: string;
  dtypes: readonly DType[];
  /** Whether `readSync` is available. */
  syncRead: boolean;
  /** Optional features, e.g. "shader-f16", "subgroups", "threads". */
  features: readonly string[];
  limits: Readonly<Record<string, number>>;
}

/** The sizes of a Lightning Attention call: q, k [B, H, T, D] and v [B, H, T, E] of `dtype`. */
export interface LightningDimsInfo {
  dtype: DType;
  B: number;
  H: number;
  T: number;
  D: number;
  E: number;
}

/** One range of `Backend.copyMany`: `byteLength` bytes of `src` from `srcByteOffset`, or zeros where `src` is null, into `dst` at `dstByteOffset`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- as Backend's storage type (see below)
export interface ByteCopy<S = any> {
  dst: S;
  dstByteOffset: number;
  src: S | null;
  srcByteOffset: number;
  byteLength: number;
}

// The default is `any` because kernel tables are contravariant in the storage type: a
// Backend<CpuStorage> must still be usable where code only moves tensors around.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the storage type defaults to any (see above)
export interface Backend<S = any> {
  readonly name: string;
  readonly capabilities: Capabilities;
  allocate(byteLength: number): S;
  free(storage: S): void;
  write(storage: S, bytes: Uint8Array, byteOffset?: number): void;
  /** A copy of the bytes, owned by the caller (never a view of live storage). */
  read(storage: S, byteOffset: number, byteLength: number): Promise<Uint8Array>;
  readSync?(storage: S, byteOffset: number, byteLength: number): Uint8Array;
  /** Resolves when all enqueued work has finished. */
  sync(): Promise<void>;
  memory(): MemoryStats;
  /** Starts a new peak: `memory().peakBytes` becomes the live bytes now (for per-call measurements). */
  resetPeakMemory?(): void;
  /** Per-kernel timing (`profileOps`); absent where the backend cannot time its kernels. */
  readonly timer?: KernelTimer;
  /**
   * Copies `byteLength` bytes of another backend's storage into `dst` (a device-to-device copy,
   * e.g. between two GPUs), ordered after the work already enqueued on both. Returns false when
   * it cannot copy from that backend; `copyTo` then goes through the host (the source's
   * `readSync` and this backend's `write`).
   */
  copyFrom?(dst: S, source: Backend, src: unknown, byteLength: number): boolean;
  /**
   * Copies `byteLength` bytes of `src` from `srcByteOffset` into `dst` at `dstByteOffset`, on the
   * device and ordered after the work enqueued so far (`copyInto`). `dst` and `src` may be one
   * storage; the two ranges never overlap (the caller checks). Absent where the backend cannot.
   */
  copyWithin?(dst: S, dstByteOffset: number, src: S, srcByteOffset: number, byteLength: number): void;
  /**
   * Several `copyWithin`s at once, and zero fills where `src` is null, as one device launch where
   * the backend can (`copyIntoMany`): a decoder moves or clears one row of every layer's state in
   * one go instead of one launch per layer. Ordered after the work enqueued so far; no destination
   * overlaps another copy's destination or source (the caller checks), so they may run in any order.
   */
  copyMany?(copies: readonly ByteCopy<S>[]): void;
  /**
   * Records the device work that `fn` enqueues, without running it, as a graph that `replay()`
   * runs again (CUDA graphs): buffers `fn` allocates stay reserved for the graph until `dispose()`.
   * Absent where the backend cannot record (CPU, WebGPU).
   */
  captureGraph?<T>(fn: () => T): CapturedGraph<T>;
  /**
   * Lightning Attention: the tokens per segment (a multiple of 64) of the sequence split that this
   * backend's forward runs for these sizes, where it keeps the states entering its segments and
   * `lightningAttention` with `segmentTokens` equal to it returns them at no extra work; 0 where it
   * runs no split or keeps no states. Absent: 0.
   */
  lightningSegmentTokens?(dims: LightningDimsInfo): number;
  /** Releases every resource; the backend cannot be used afterwards. */
  dispose(): void;
  readonly kernels: KernelTable<S>;
}

/**
 * Device work recorded once by `Backend.captureGraph` and replayed at the same addresses: what
 * `fn` returned (`result`), `replay()` to run the recorded work again, `dispose()` to release the
 * graph and the buffers reserved for it.
 */
export interface CapturedGraph<T> {
  readonly result: T;
  replay(): void;
  dispose(): void;
}
