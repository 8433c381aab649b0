/**
 * Picks the compute backend by name. The CPU backend ships with the tensor core; the GPU backends
 * are optional packages loaded only when asked for, so the server runs where they are not installed.
 */
import { type Backend, createCpuBackend } from "@lightning-ts/tensor";

export type BackendName = "cpu" | "cuda" | "webgpu";

interface CudaModule {
  createCudaBackend(): Backend;
}
interface WebGpuModule {
  createWebGpuBackend(): Promise<Backend>;
}

async function optional<M>(specifier: string, what: string): Promise<M> {
  try {
    // A variable specifier: neither the type checker nor the bundler should require the package.
    return (await import(specifier)) as M;
  } catch (err) {
    throw new Error(`--backend ${what} needs the package ${specifier}, which could not be loaded (${(err as Error).message}); build it with \`pnpm build\` or pick --backend cpu`);
  }
}

/**
 * @example
 * setBackend(await createBackend("cpu"));
 */
export async function createBackend(name: BackendName): Promise<Backend> {
  switch (name) {
    case "cpu":
      return createCpuBackend();
    case "cuda":
      return (await optional<CudaModule>("@lightning-ts/cuda", "cuda")).createCudaBackend();
    case "webgpu":
      return (await optional<WebGpuModule>("@lightning-ts/webgpu", "webgpu")).createWebGpuBackend();
  }
}
