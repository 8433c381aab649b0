/**
 * Per-op kernel time: `profileOps` runs a function with every entry of a backend's kernel table
 * wrapped between two marks of the backend's `timer` (GPU events on CUDA, the wall clock on the
 * CPU, whose kernels run to completion when called), and sums the time per op name.
 *
 * What a row means:
 * - Time goes to the kernel that ran. A composite op (`COMPOSITE_OPS`) the backend has a kernel for
 *   is one row under its own name; one it has no kernel for runs as its decomposition, and its time
 *   lands on the primitives of that decomposition (a CPU `softmax` shows up as `exp`, `sum`, `div`…).
 * - A kernel that calls another kernel through the table is timed once, as the outer op.
 * - `reshape` runs no kernel and never appears. Time spent in JavaScript between kernels is in
 *   `wallMs` but not in `totalMs`: on a GPU, wallMs far above totalMs means the device waited on the host.
 * - Every kernel of the backend is timed while `fn` runs, including any run by other code during
 *   an `await` inside `fn`.
 *
 * Marks are read only once `fn` has finished and the backend has synced, so the run is not
 * serialised by the measurement (though each mark costs a little host time).
 */
import type { Backend, Kernel, KernelTimer } from "./backend.js";
import type { KernelOpName } from "./ops/attrs.js";

export interface OpProfileRow {
  op: string;
  calls: number;
  /** Summed kernel time of the op, in milliseconds. */
  ms: number;
  /** Share of `OpProfile.totalMs`, in percent. */
  pct: number;
}

export interface OpProfile {
  /** By `ms`, largest first. */
  rows: OpProfileRow[];
  /** Sum of every kernel's time. */
  totalMs: number;
  /** Wall-clock time of `fn`, up to the backend's sync after it. */
  wallMs: number;
  backend: string;
}

/** Backends being profiled: their tables are wrapped, and a second profile would wrap the wrappers. */
const active = new WeakSet<Backend>();

/**
 * Runs `fn` with every kernel of `backend` timed; rows sorted by ms descending. The kernel table is
 * restored when `fn` returns or throws. Throws where the backend has no `timer` (WebGPU without
 * the `timestamp-query` feature).
 *
 * @example
 * import { createCpuBackend, formatProfile, matmul, profileOps, randomNormal, scope } from "@lightning-ts/tensor";
 * const cpu = createCpuBackend();
 * const a = randomNormal([256, 256], { backend: cpu });
 * const { profile } = await profileOps(cpu, () => scope(() => matmul(a, a).dataSync()));
 * console.log(formatProfile(profile)); // one row: matmul, 1 call
 */
export async function profileOps<T>(backend: Backend, fn: () => T | Promise<T>): Promise<{ result: T; profile: OpProfile }> {
  const timer = backend.timer;
  if (!timer) throw new Error(`profileOps: the ${backend.name} backend cannot time its kernels (it has no Backend.timer)`);
  if (active.has(backend)) throw new Error(`profileOps: the ${backend.name} backend is already being profiled`);

  const calls: { op: string; start: number; end: number }[] = [];
  const table = backend.kernels as unknown as Record<string, unknown>;
  const originals = new Map<string, unknown>();
  let depth = 0;
  for (const [op, entry] of Object.entries(table)) {
    if (typeof entry !== "function") continue; // `Unsupported`: throws in the engine, runs nothing
    const kernel = entry as Kernel<KernelOpName, unknown>;
    originals.set(op, entry);
    table[op] = ((args) => {
      if (depth > 0) return kernel(args);
      depth++;
      const start = timer.mark();
      try {
        kernel(args);
      } finally {
        calls.push({ op, start, end: timer.mark() });
        depth--;
      }
    }) satisfies Kernel<KernelOpName, unknown>;
  }

  active.add(backend);
  const marks = () => calls.flatMap((c) => [c.start, c.end]);
  let result: T;
  let wallMs: number;
  try {
    const t0 = performance.now();
    result = await fn();
    await backend.sync();
    wallMs = performance.now() - t0;
  } catch (err) {
    timer.release?.(marks());
    throw err;
  } finally {
    for (const [op, entry] of originals) table[op] = entry;
    active.delete(backend);
  }
  try {
    return { result, profile: summarise(timer, calls, backend.name, wallMs) };
  } finally {
    timer.release?.(marks());
  }
}

function summarise(timer: KernelTimer, calls: readonly { op: string; start: number; end: number }[], backend: string, wallMs: number): OpProfile {
  const byOp = new Map<string, { calls: number; ms: number }>();
  let totalMs = 0;
  for (const c of calls) {
    const ms = timer.elapsedMs(c.start, c.end);
    const row = byOp.get(c.op) ?? { calls: 0, ms: 0 };
    row.calls++;
    row.ms += ms;
    byOp.set(c.op, row);
    totalMs += ms;
  }
  const rows = [...byOp].map(([op, r]) => ({ op, calls: r.calls, ms: r.ms, pct: totalMs > 0 ? (r.ms / totalMs) * 100 : 0 }));
  rows.sort((a, b) => b.ms - a.ms || a.op.localeCompare(b.op));
  return { rows, totalMs, wallMs, backend };
}

/**
 * A text table of the `top` ops by time (default 20; the rest summed in one line), with the
 * kernel total and the wall time.
 */
export function formatProfile(p: OpProfile, top = 20): string {
  const shown = p.rows.slice(0, Math.max(0, top));
  const rest = p.rows.slice(shown.length);
  const ms = (x: number) => (x >= 100 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
  const body = shown.map((r) => [r.op, String(r.calls), ms(r.ms), ms(r.ms / r.calls), `${r.pct.toFixed(1)}%`]);
  if (rest.length > 0) {
    const restMs = rest.reduce((a, r) => a + r.ms, 0);
    const restCalls = rest.reduce((a, r) => a + r.calls, 0);
    body.push([`(${rest.length} more ops)`, String(restCalls), ms(restMs), "", `${p.totalMs > 0 ? ((restMs / p.totalMs) * 100).toFixed(1) : "0.0"}%`]);
  }
  const header = ["op", "calls", "ms", "ms/call", "%"];
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [
    line(header),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...body.map(line),
    `kernels ${ms(p.totalMs)} ms of ${ms(p.wallMs)} ms wall on ${p.backend} (${p.rows.reduce((a, r) => a + r.calls, 0)} kernel calls)`,
  ].join("\n");
}
