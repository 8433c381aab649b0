/** What the host offers, without importing Node modules in a browser. */

interface NodeOs {
  cpus(): { model: string }[];
  availableParallelism?(): number;
}

let nodeOs: NodeOs | null = null;
try {
  // `process.getBuiltinModule` exists on Node >= 20.16; elsewhere we fall back to navigator.
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  nodeOs = (proc?.getBuiltinModule?.("node:os") as NodeOs | undefined) ?? null;
} catch {
  nodeOs = null;
}

export function cpus(): { count: number; model: string } {
  if (nodeOs) {
    const list = nodeOs.cpus();
    const count = nodeOs.availableParallelism?.() ?? list.length;
    return { count: Math.max(1, count), model: list[0]?.model?.trim() || "cpu" };
  }
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  return { count: Math.max(1, nav?.hardwareConcurrency ?? 1), model: "cpu" };
}
