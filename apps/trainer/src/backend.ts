/**
 * The backend a run uses, chosen by name. GPU backends are optional packages: they are imported
 * only when asked for, and a missing or unusable one is a clear error, never a silent CPU fallback.
 */
import { type Backend, createCpuBackend } from "@lightning-ts/tensor";

const PACKAGES: Record<string, { pkg: string; factory: string }> = {
  cuda: { pkg: "@lightning-ts/cuda", factory: "createCudaBackend" },
  webgpu: { pkg: "@lightning-ts/webgpu", factory: "createWebGpuBackend" },
};

export async function createBackend(name: "cpu" | "cuda" | "webgpu"): Promise<Backend> {
  if (name === "cpu") return createCpuBackend();
  const { pkg, factory } = PACKAGES[name]!;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pkg)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`backend "${name}": the package ${pkg} cannot be loaded (${(err as Error).message})`);
  }
  const create = mod[factory] as ((options?: object) => Backend | Promise<Backend>) | undefined;
  if (typeof create !== "function") throw new Error(`backend "${name}": ${pkg} has no ${factory}()`);
  try {
    return await create();
  } catch (err) {
    throw new Error(`backend "${name}" cannot start: ${(err as Error).message}`);
  }
}
