/**
 * Loading the native addon, and the reason when it cannot be loaded: not built (no nvcc when the
 * package was installed, or a failed build; build/cuda-status.json says which), or built but no
 * CUDA device here.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface RuntimeInfo {
  name: string;
  /** The CUDA device ordinal. */
  device: number;
  smCount: number;
  computeCapability: string;
  totalMemory: number;
  cublas: string;
  runtimeVersion: number;
  driverVersion: number;
}

/** The Runtime class of native/addon.cc: one device, one stream, one caching allocator. */
export interface NativeRuntime {
  info(): RuntimeInfo;
  allocate(bytes: number): number;
  free(ptr: number): void;
  write(ptr: number, byteOffset: number, bytes: Uint8Array): void;
  readSync(ptr: number, byteOffset: number, byteLength: number): Uint8Array;
  read(ptr: number, byteOffset: number, byteLength: number): Promise<Uint8Array>;
  sync(): Promise<void>;
  syncNow(): void;
  /**
   * Runs launcher `LAUNCHERS[launcher]` (src/codes.ts) with device pointers, integers and floats.
   * False when the launcher declined (it does not apply to these arguments and enqueued nothing).
   */
  launch(launcher: number, ptrs: number[], ints: number[], floats: number[]): boolean;
  memory(): { liveBytes: number; liveBuffers: number; pooledBytes: number; peakBytes: number; cacheReleases: number };
  /** Starts a new peak at the live bytes now. */
  resetPeak(): void;
  /**
   * The segment length (a multiple of 64) whose entering states the Lightning forward keeps for
   * the backward at these sizes (dtype code of src/codes.ts), or 0 (native/lightning.cu).
   */
  lightningSegmentTokens(dtype: number, B: number, H: number, T: number, D: number, E: number): number;
  trim(): void;
  eventCreate(): number;
  eventRecord(id: number): void;
  eventElapsed(start: number, end: number): number;
  /**
   * Copies bytes of `source`'s memory into this runtime's, on this runtime's stream after the work
   * enqueued so far on both (native/addon.cc CopyFrom); says how: on one device, GPU to GPU, or
   * staged through the host by CUDA where the GPUs cannot reach each other.
   */
  copyFrom(source: NativeRuntime, srcPtr: number, srcOffset: number, dstPtr: number, dstOffset: number, byteLength: number): "same device" | "peer" | "staged";
  /** Starts recording the stream's work as a CUDA graph (native/addon.cc "graph capture"). */
  captureBegin(): void;
  /** Ends the recording: with `keep`, the id of the instantiated graph; else it is dropped (−1). */
  captureEnd(keep: boolean): number;
  graphLaunch(id: number): void;
  /** Frees the graph and hands the buffers recorded into it back to the allocator. */
  graphDestroy(id: number): void;
  dispose(): void;
}

/** A communicator of native/nccl.cc: NCCL calls on device pointers; counts are elements. */
export interface NativeCommunicator {
  /** ncclCommInitRank off the JavaScript thread: resolves once every rank has joined. */
  init(): Promise<void>;
  /** Returns a token for `wait` when `async` (the communication stream), else -1. */
  allReduce(send: number, recv: number, count: number, dtype: number, op: string, async: boolean): number;
  allGather(send: number, recv: number, sendCount: number, dtype: number): void;
  reduceScatter(send: number, recv: number, recvCount: number, dtype: number, op: string): void;
  broadcast(send: number, recv: number, count: number, dtype: number, root: number): void;
  /** With `async`, on the communication stream: returns the token for `wait`, else -1. */
  send(ptr: number, count: number, dtype: number, peer: number, async?: boolean): number;
  /** With `async`, on the communication stream: returns the token for `wait`, else -1. */
  recv(ptr: number, count: number, dtype: number, peer: number, async?: boolean): number;
  /** Later work on the compute stream waits for the asynchronous collective `token`. */
  wait(token: number): void;
  /** Why the communicator failed ("" while it has not). */
  failure(): string;
  dispose(): void;
}

export interface NativeNccl {
  /** The loaded library, or throws saying where it looked and which variable to set. */
  version(): { code: number; version: string; path: string };
  uniqueId(): Uint8Array;
  groupStart(): void;
  groupEnd(): void;
  Communicator: new (runtime: NativeRuntime, uniqueId: Uint8Array, worldSize: number, rank: number, timeoutMs: number) => NativeCommunicator;
}

export interface NativeAddon {
  Runtime: new (device?: number) => NativeRuntime;
  deviceCount: number;
  deviceError: string;
  /** The device that owns a device pointer (cudaPointerGetAttributes); -1 for other memory. */
  pointerDevice(ptr: number): number;
  /** The calling thread's current CUDA device. */
  currentDevice(): number;
  nccl: NativeNccl;
}

/** The package root: this file is src/native.ts in tests and dist/index.js once built. */
const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

let cached: { addon: NativeAddon } | { reason: string } | null = null;

/** The addon, or throws an Error saying why it is not available. */
export function loadAddon(): NativeAddon {
  cached ??= tryLoad();
  if ("reason" in cached) throw new Error(cached.reason);
  return cached.addon;
}

/** The addon file loaded (or looked for): LIGHTNING_CUDA_ADDON, else the package's build. */
export function addonPath(): string {
  return process.env.LIGHTNING_CUDA_ADDON ?? join(packageRoot, "build", "Release", "lightning_cuda.node");
}

function tryLoad(): { addon: NativeAddon } | { reason: string } {
  const file = addonPath();
  if (!existsSync(file)) {
    const statusFile = join(packageRoot, "build", "cuda-status.json");
    if (existsSync(statusFile)) {
      const status = JSON.parse(readFileSync(statusFile, "utf8")) as { ok: boolean; reason?: string };
      if (!status.ok) return { reason: `CUDA addon not built: ${status.reason}` };
    }
    return { reason: `CUDA addon not built: ${file} is missing (run \`pnpm --filter @lightning-ts/cuda build:native\` on a machine with nvcc)` };
  }
  try {
    return { addon: createRequire(import.meta.url)(file) as NativeAddon };
  } catch (err) {
    return { reason: `CUDA addon ${file} failed to load: ${err instanceof Error ? err.message : String(err)}` };
  }
}
