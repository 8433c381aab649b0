/**
 * The backends a suite can run on: one entry each. A GPU backend is added here as one more entry
 * (its `create` may fail on a machine without the device; the suite then reports it as skipped).
 */
import { type Backend, CpuBackend, setBackend } from "@lightning-ts/tensor";

export interface BackendOptions {
  /** CPU worker threads (the calling thread included); ignored by GPU backends. */
  threads?: number;
}

export interface BackendEntry {
  name: string;
  create(options: BackendOptions): Backend | Promise<Backend>;
}

export const BACKENDS: Record<string, BackendEntry> = {
  cpu: { name: "cpu", create: ({ threads }) => new CpuBackend(threads === undefined ? {} : { threads }) },
  // Loaded on demand: Dawn (Node) is an optional dependency, and a machine without an adapter
  // gets the reason from createWebGpuBackend().
  webgpu: { name: "webgpu", create: async () => (await import("@lightning-ts/webgpu")).createWebGpuBackend() },
};

/**
 * Starts `entry` and makes it the current backend, or logs why it cannot start here and returns
 * null (the suite then reports that backend as skipped).
 */
export async function startBackend(entry: BackendEntry, options: BackendOptions, log: (line: string) => void): Promise<Backend | null> {
  try {
    const backend = await entry.create(options);
    setBackend(backend);
    return backend;
  } catch (e) {
    log(`${entry.name}: skipped, cannot start (${(e as Error).message})`);
    return null;
  }
}
