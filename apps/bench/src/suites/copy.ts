/**
 * copy: device copy bandwidth of `copy` (a contiguous copy into new storage) per backend and size,
 * the yardstick that attention and decode bandwidths are read against. Bytes moved count the read
 * and the write (2 · size). Each case is first checked bit for bit against its own input.
 */
import { startBackend } from "@lightning-ts/backends";
import * as T from "@lightning-ts/tensor";
import { intList, result, time, timeQueued, type BenchResult, type Suite, webgpuTimer } from "../suite.js";

/** Bytes moved per wait on a GPU: enough that the submission and fence cost little beside them. */
const BYTES_PER_WAIT = 2 ** 32;

export const copySuite: Suite = {
  name: "copy",
  description: "copy bandwidth (read + write) per backend and size, checked bit for bit",
  defaults: { warmup: 2, reps: 9 },
  configure(command) {
    command.option("--mib <list>", "tensor sizes in MiB (f32), comma-separated", intList, [16, 64, 256]);
  },
  columns: [
    ["backend", "backend"],
    ["MiB", "mib"],
    ["median ms", "fwd_ms"],
    ["GB/s", "gbps"],
    ["spread %", "spread_pct"],
    ["clock", "clock"],
    ["ok", "ok"],
  ],

  async run({ backends, options: common, log }, raw) {
    const { mib } = raw as { mib: number[] };
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
        results.push(result({ ...base, ok: true, fwd_ms: timing.median, gbps, spread_pct: Math.round(timing.spread_pct), clock: timing.clock }));
        x.dispose();
      }
      backend.dispose();
    }
    return results;
  },
};
