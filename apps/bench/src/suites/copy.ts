/**
 * copy: device copy bandwidth of `copy` (a contiguous copy into new storage) per backend and size,
 * the yardstick that attention and decode bandwidths are read against. Bytes moved count the read
 * and the write (2 · size). Each case is first checked bit for bit against its own input.
 *
 * With --split-mib, each size above it is also copied as several tensors of at most that size in
 * one timed round (impl `copy-split`): the same bytes and kernels in smaller buffers and
 * dispatches, which tells a falloff of large buffers from one of the bytes moved.
 */
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import type { Backend } from "@lightning-ts/tensor";
import { type CommonOptions, intList, result, time, timeQueued, type BenchResult, type Suite, webgpuTimer } from "../suite.js";

/** Bytes moved per wait on a GPU: enough that the submission and fence cost little beside them. */
const BYTES_PER_WAIT = 2 ** 32;

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/**
 * The copy of `size` MiB as ⌈size / part⌉ tensors of at most `part` MiB, all in one timed round,
 * each part checked bit for bit first.
 */
async function splitCopy(backend: Backend, name: string, size: number, part: number, common: CommonOptions, log: (line: string) => void): Promise<BenchResult> {
  const sizes = Array.from({ length: Math.ceil(size / part) }, (_, i) => Math.min(part, size - i * part));
  const base = { suite: "copy", impl: "copy-split", backend: name, device: backend.capabilities.device, dtype: "f32", mib: size, parts: sizes.length };
  const xs = sizes.map((s, i) => T.randomUniform([(s * 2 ** 20) / 4], { seed: size * 100 + i, backend }));
  try {
    for (const x of xs) {
      const y = T.copy(x);
      const [want, got] = [bits((await x.data()) as Float32Array), bits((await y.data()) as Float32Array)];
      y.dispose();
      const bad = want.findIndex((w, i) => w !== got[i]);
      if (bad >= 0) {
        log(`${name} ${size} MiB in ${sizes.length} parts: FAILED, element ${bad} of a part differs; not timed`);
        return result({ ...base, ok: false });
      }
    }
    const call = () => {
      for (const x of xs) T.copy(x).dispose();
    };
    const bytes = 2 * size * 2 ** 20;
    const timing = await timeQueued(backend, call, Math.max(1, Math.round(BYTES_PER_WAIT / bytes)), common.warmup, common.reps, webgpuTimer(backend));
    const gbps = bytes / (timing.median / 1000) / 1e9;
    log(`${name} ${size} MiB in ${sizes.length} parts: ${gbps.toFixed(0)} GB/s`);
    return result({ ...base, ok: true, fwd_ms: timing.median, gbps, spread_pct: Math.round(timing.spread_pct), clock: timing.clock });
  } finally {
    for (const x of xs) x.dispose();
  }
}

export const copySuite: Suite = {
  name: "copy",
  description: "copy bandwidth (read + write) per backend and size, checked bit for bit",
  defaults: { warmup: 2, reps: 9 },
  configure(command) {
    command
      .option("--mib <list>", "tensor sizes in MiB (f32), comma-separated", intList, [16, 64, 256])
      .option("--split-mib <n>", "also copy each larger size as tensors of at most this many MiB (impl copy-split)", (v) => Number.parseInt(v, 10));
  },
  columns: [
    ["impl", "impl"],
    ["backend", "backend"],
    ["MiB", "mib"],
    ["parts", "parts"],
    ["median ms", "fwd_ms"],
    ["GB/s", "gbps"],
    ["spread %", "spread_pct"],
    ["clock", "clock"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const { mib, splitMib } = raw as { mib: number[]; splitMib?: number };
    if (splitMib !== undefined && !(Number.isInteger(splitMib) && splitMib > 0)) throw new Error(`--split-mib: expected a positive integer, got ${splitMib}`);
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
          name === "cpu" ? time(call, common.warmup, common.reps) : await timeQueued(backend, call, Math.max(1, Math.round(BYTES_PER_WAIT / bytes)), common.warmup, common.reps, webgpuTimer(backend));
        const gbps = bytes / (timing.median / 1000) / 1e9;
        log(`${name} ${size} MiB: ${gbps.toFixed(0)} GB/s`);
        results.push(result({ ...base, ok: true, parts: 1, fwd_ms: timing.median, gbps, spread_pct: Math.round(timing.spread_pct), clock: timing.clock }));
        x.dispose();
        if (splitMib !== undefined && size > splitMib) results.push(await splitCopy(backend, name, size, splitMib, common, log));
      }
      backend.dispose();
    }
    return results;
  },
};
