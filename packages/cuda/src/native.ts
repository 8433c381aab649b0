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
  /** Runs launcher `LAUNCHERS[launcher]` (src/codes.ts) with device pointers, integers and floats. */
  launch(launcher: number, ptrs: number[], ints: number[], floats: number[]): void;
  memory(): { liveBytes: number; liveBuffers: number; pooledBytes: number; peakBytes: number };
  /** Starts a new peak at the live bytes now. */
  resetPeak(): void;
  trim(): void;
  eventCreate(): number;
  eventRecord(id: number): void;
  eventElapsed(start: number, end: number): number;
  dispose(): void;
}

export interface NativeAddon {
  Runtime: new (device?: number) => NativeRuntime;
  deviceCount: number;
  deviceError: string;
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

function tryLoad(): { addon: NativeAddon } | { reason: string } {
  const file = process.env.LIGHTNING_CUDA_ADDON ?? join(packageRoot, "build", "Release", "lightning_cuda.node");
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
