/**
 * copy: device copy bandwidth of `copy` (a contiguous copy into new storage) per backend and size,
 * the yardstick that attention and decode bandwidths are read against. Bytes moved count the read
 * and the write (2 · size). Each case is first checked bit for bit against its own input.
 *
 * With --split-mib, each size above it is also copied in parts of at most that size in one timed
 * round: as several tensors (impl `copy-split`: small buffers and dispatches) and as slices of one
 * tensor (`copy-slices`: one large source buffer bound a slice at a time). Against the one-buffer
 * copy they tell a falloff of large allocations from one of large bindings or of the bytes moved.
 *
 * WebGPU only, with --webgpu-order: each size is also copied by `probeCopy` of @lightning-ts/webgpu
 * between tensors made for it (impls probe-linear, probe-scattered): the same bytes with the
 * workgroups streaming through the buffers or spread over them (many pages of memory at once),
 * timed on the same buffers; --webgpu-buffers gives as many source/destination pairs per size,
 * each timed on its own (column `buffer`), to tell a slow allocation from a slow size, and
 * --webgpu-smi logs nvidia-smi's FB and BAR1 memory use before and after they are allocated
 * (where Dawn put them: BAR1 use grows only for memory the host can map).
 */
import { execFileSync } from "node:child_process";
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import type { Backend } from "@lightning-ts/tensor";
import type { CopyOrder, WebGpuBackend } from "@lightning-ts/webgpu";
import { type CommonOptions, intList, result, time, timeQueued, type BenchResult, type Suite, deviceTimer } from "../suite.js";

/** Bytes moved per wait on a GPU: enough that the submission and fence cost little beside them. */
const BYTES_PER_WAIT = 2 ** 32;

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/**
 * The copy of `size` MiB in parts of at most `part` MiB, all in one timed round, each part checked
 * bit for bit first: `copy-split` copies ⌈size / part⌉ tensors of their own (small buffers, small
 * dispatches); `copy-slices` copies slices of one tensor of `size` MiB into new tensors (a large
 * source buffer, bound a slice at a time, and small dispatches).
 */
async function partsCopy(backend: Backend, name: string, size: number, part: number, mode: "split" | "slices", common: CommonOptions, log: (line: string) => void): Promise<BenchResult> {
  const sizes = Array.from({ length: Math.ceil(size / part) }, (_, i) => Math.min(part, size - i * part));
  const base = { suite: "copy", impl: `copy-${mode}`, backend: name, device: backend.capabilities.device, dtype: "f32", mib: size, parts: sizes.length };
  const words = (mib: number) => (mib * 2 ** 20) / 4;
  const whole = mode === "slices" ? T.randomUniform([words(size)], { seed: size * 100, backend }) : null;
  const xs = whole ? [] : sizes.map((s, i) => T.randomUniform([words(s)], { seed: size * 100 + i, backend }));
  const starts = sizes.map((_, i) => words(i * part));
  const copyPart = (i: number) => (whole ? T.narrow(whole, 0, starts[i], words(sizes[i])) : T.copy(xs[i]));
  try {
    const wholeBits = whole ? bits((await whole.data()) as Float32Array) : null;
    for (let i = 0; i < sizes.length; i++) {
      const y = copyPart(i);
      const got = bits((await y.data()) as Float32Array);
      y.dispose();
      const want = wholeBits ? wholeBits.subarray(starts[i], starts[i] + got.length) : bits((await xs[i].data()) as Float32Array);
      const bad = want.length !== got.length ? 0 : want.findIndex((w, j) => w !== got[j]);
      if (bad >= 0) {
        log(`${name} ${size} MiB as ${sizes.length} ${mode}: FAILED, element ${bad} of part ${i} differs; not timed`);
        return result({ ...base, ok: false });
      }
    }
    const call = () => {
      for (let i = 0; i < sizes.length; i++) copyPart(i).dispose();
    };
    const bytes = 2 * size * 2 ** 20;
    const timing = await timeQueued(backend, call, Math.max(1, Math.round(BYTES_PER_WAIT / bytes)), common.warmup, common.reps, deviceTimer(backend));
    const gbps = bytes / (timing.median / 1000) / 1e9;
    log(`${name} ${size} MiB as ${sizes.length} ${mode}: ${gbps.toFixed(0)} GB/s`);
    return result({ ...base, ok: true, fwd_ms: timing.median, gbps, spread_pct: Math.round(timing.spread_pct), clock: timing.clock });
  } finally {
    for (const x of xs) x.dispose();
    whole?.dispose();
  }
}

/** nvidia-smi's used FB and BAR1 memory per GPU, in one line; why not where it cannot run. */
function smiMemory(): string {
  let out: string;
  try {
    out = execFileSync("nvidia-smi", ["-q", "-d", "MEMORY"], { encoding: "utf8", timeout: 20_000 });
  } catch (err) {
    return `nvidia-smi failed (${(err as Error).message.split("\n")[0]})`;
  }
  const parts: string[] = [];
  let section = "";
  for (const line of out.split("\n")) {
    const gpu = /^GPU (\S+)/.exec(line);
    if (gpu) parts.push(`GPU ${gpu[1]}:`);
    const head = /^\s*(FB|BAR1) Memory Usage/.exec(line);
    if (head) section = head[1];
    const used = /^\s*Used\s*:\s*(.+)$/.exec(line);
    if (used && section) {
      parts.push(`${section} ${used[1].trim()} used`);
      section = "";
    }
  }
  return parts.join(" ");
}

const COPY_ORDERS: readonly CopyOrder[] = ["linear", "scattered"];

/**
 * `probeCopy` of `size` MiB between `buffers` pairs of tensors, in each order, each pair and order
 * timed on its own. Before each check the destination is overwritten from a scrub tensor, so a
 * copy that wrote nothing cannot pass.
 */
async function probeCopies(backend: Backend, size: number, orders: readonly CopyOrder[], buffers: number, smi: boolean, common: CommonOptions, log: (line: string) => void): Promise<BenchResult[]> {
  const { probeCopy } = await import("@lightning-ts/webgpu");
  const gpu = backend as unknown as WebGpuBackend;
  const words = (size * 2 ** 20) / 4;
  const bytes = size * 2 ** 20;
  const storage = (t: T.Tensor) => t.handle.storage as Parameters<typeof probeCopy>[1];
  const results: BenchResult[] = [];
  if (smi) log(`webgpu ${size} MiB: before allocating ${buffers} pair(s): ${smiMemory()}`);
  const scrub = T.randomUniform([words], { seed: size * 1000 + 999, backend });
  const xs = Array.from({ length: buffers }, (_, i) => T.randomUniform([words], { seed: size * 1000 + i, backend }));
  const ys = Array.from({ length: buffers }, () => T.full([words], 0, { backend }));
  try {
    await backend.sync();
    if (smi) log(`webgpu ${size} MiB: after allocating ${buffers} pair(s) and a scrub buffer: ${smiMemory()}`);
    for (let i = 0; i < buffers; i++) {
      const want = bits((await xs[i].data()) as Float32Array);
      for (const order of orders) {
        const base = { suite: "copy", impl: `probe-${order}`, backend: "webgpu", device: backend.capabilities.device, dtype: "f32", mib: size, parts: 1, buffer: i };
        probeCopy(gpu, storage(scrub), storage(ys[i]), bytes, "linear");
        probeCopy(gpu, storage(xs[i]), storage(ys[i]), bytes, order);
        const got = bits((await ys[i].data()) as Float32Array);
        const bad = want.findIndex((w, j) => w !== got[j]);
        if (bad >= 0) {
          log(`webgpu ${size} MiB probe-${order} buffer ${i}: FAILED, element ${bad} differs; not timed`);
          results.push(result({ ...base, ok: false }));
          continue;
        }
        const call = () => probeCopy(gpu, storage(xs[i]), storage(ys[i]), bytes, order);
        const timing = await timeQueued(backend, call, Math.max(1, Math.round(BYTES_PER_WAIT / (2 * bytes))), common.warmup, common.reps, deviceTimer(backend));
        const gbps = (2 * bytes) / (timing.median / 1000) / 1e9;
        log(`webgpu ${size} MiB probe-${order} buffer ${i}: ${gbps.toFixed(0)} GB/s (least ${timing.min.toFixed(3)} ms, most ${timing.max.toFixed(3)} ms)`);
        results.push(result({ ...base, ok: true, fwd_ms: timing.median, gbps, spread_pct: Math.round(timing.spread_pct), clock: timing.clock }));
      }
    }
  } finally {
    for (const t of [scrub, ...xs, ...ys]) t.dispose();
  }
  return results;
}

export const copySuite: Suite = {
  name: "copy",
  description: "copy bandwidth (read + write) per backend and size, checked bit for bit",
  defaults: { warmup: 2, reps: 9 },
  configure(command) {
    command
      .option("--mib <list>", "tensor sizes in MiB (f32), comma-separated", intList, [16, 64, 256])
      .option("--split-mib <n>", "also copy each larger size in parts of at most this many MiB (impls copy-split, copy-slices)", (v) => Number.parseInt(v, 10))
      .option("--webgpu-order <list>", "WebGPU only: also copy each size by probeCopy in these chunk orders: linear, scattered (impls probe-ORDER)", (v: string) => v.split(","))
      .option("--webgpu-buffers <n>", "WebGPU only: with --webgpu-order, this many source/destination pairs per size, each timed on its own", (v) => Number.parseInt(v, 10), 1)
      .option("--webgpu-smi", "WebGPU only: with --webgpu-order, log nvidia-smi's FB and BAR1 memory use before and after allocating the pairs");
  },
  columns: [
    ["impl", "impl"],
    ["backend", "backend"],
    ["MiB", "mib"],
    ["parts", "parts"],
    ["buffer", "buffer"],
    ["median ms", "fwd_ms"],
    ["GB/s", "gbps"],
    ["spread %", "spread_pct"],
    ["clock", "clock"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const { mib, splitMib, webgpuOrder, webgpuBuffers = 1, webgpuSmi } = raw as { mib: number[]; splitMib?: number; webgpuOrder?: string[]; webgpuBuffers?: number; webgpuSmi?: boolean };
    if (splitMib !== undefined && !(Number.isInteger(splitMib) && splitMib > 0)) throw new Error(`--split-mib: expected a positive integer, got ${splitMib}`);
    const badOrder = webgpuOrder?.find((o) => !(COPY_ORDERS as readonly string[]).includes(o));
    if (badOrder !== undefined) throw new Error(`--webgpu-order: expected some of ${COPY_ORDERS.join(", ")}, got '${badOrder}'`);
    if (!(Number.isInteger(webgpuBuffers) && webgpuBuffers > 0)) throw new Error(`--webgpu-buffers: expected a positive integer, got ${webgpuBuffers}`);
    const orders = (webgpuOrder ?? []) as CopyOrder[];
    const results: BenchResult[] = [];
    for (const name of backends) {
      const backend = await startBackend(name, {}, log);
      if (!backend) continue;
      for (const size of mib) {
        const n = (size * 2 ** 20) / 4;
        const base = { suite: "copy", impl: "copy", backend: name, device: backend.capabilities.device, dtype: "f32", mib: size };
        const x = T.randomUniform([n], { seed: size, backend });
        const want = (await x.data()) as Float32Array;
        const y = T.copy(x);
        const got = (await y.data()) as Float32Array;
        y.dispose();
        const wantBits = new Uint32Array(want.buffer, want.byteOffset, n);
        const gotBits = new Uint32Array(got.buffer, got.byteOffset, n);
        const bad = wantBits.findIndex((w, i) => w !== gotBits[i]);
        if (bad >= 0) {
          log(`${name} ${size} MiB: FAILED, element ${bad} differs; not timed`);
          results.push(result({ ...base, ok: false }));
          x.dispose();
          continue;
        }
        const call = () => T.copy(x).dispose();
        const bytes = 2 * n * 4;
        const timing =
          name === "cpu" ? time(call, common.warmup, common.reps) : await timeQueued(backend, call, Math.max(1, Math.round(BYTES_PER_WAIT / bytes)), common.warmup, common.reps, deviceTimer(backend));
        const gbps = bytes / (timing.median / 1000) / 1e9;
        log(`${name} ${size} MiB: ${gbps.toFixed(0)} GB/s`);
        results.push(result({ ...base, ok: true, parts: 1, fwd_ms: timing.median, gbps, spread_pct: Math.round(timing.spread_pct), clock: timing.clock }));
        x.dispose();
        if (splitMib !== undefined && size > splitMib) {
          for (const mode of ["split", "slices"] as const) results.push(await partsCopy(backend, name, size, splitMib, mode, common, log));
        }
        if (name === "webgpu" && orders.length) results.push(...(await probeCopies(backend, size, orders, webgpuBuffers, webgpuSmi === true, common, log)));
      }
      backend.dispose();
    }
    return results;
  },
};
