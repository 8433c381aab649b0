/** Runs a worker module of this folder as a CPU group, its TypeScript compiled on the fly. */
import { runCpuGroup } from "@lightning-ts/tensor/node";

const hooks = new URL("./ts-hooks.mjs", import.meta.url);

export function runGroup<R, A = undefined>(worker: string, worldSize: number, args?: A, options: { timeoutMs?: number; slotBytes?: number } = {}): Promise<R[]> {
  return runCpuGroup<R, A>(new URL(`./workers/${worker}.ts`, import.meta.url), { worldSize, args, preload: [hooks], timeoutMs: options.timeoutMs ?? 30_000, slotBytes: options.slotBytes });
}
