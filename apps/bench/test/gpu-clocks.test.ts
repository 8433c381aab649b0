import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import * as T from "@lightning-ts/tensor";
import type { Backend, KernelTimer } from "@lightning-ts/tensor";
import { addClocks, ClockSampler, type ClockSample, clockStats, parseSample, startClocks } from "../src/gpu-clocks.js";
import { beginTimed, DEFAULT_DEVICE_WARMUP_MS, deviceTimer, result, setDeviceWarmupMs, summarise, timedSpan, timeQueued, warmUp } from "../src/suite.js";
import { copySuite } from "../src/suites/copy.js";

/**
 * A stand-in for nvidia-smi: prints a sample of the current time every 50 ms, with the SM clock
 * given (and whatever arguments it was called with on its first line's stderr, for the test).
 */
function fakeSmi(smMhz: number): string {
  const dir = mkdtempSync(join(tmpdir(), "fake-smi-"));
  const file = join(dir, "nvidia-smi");
  writeFileSync(
    file,
    `#!/usr/bin/env bash
echo "args: $*" >&2
while true; do
  echo "$(date +'%Y/%m/%d %H:%M:%S.%3N'), P0, ${smMhz}, 3201"
  sleep 0.05
done
`,
  );
  chmodSync(file, 0o755);
  return file;
}

const sample = (at: number, smMhz: number, pstate = "P0"): ClockSample => ({ at, pstate, smMhz, memMhz: 3201 });

describe("GPU clocks while timing (--gpu-clocks)", () => {
  it("a GPU backend is timed by its own clock (CUDA events, WebGPU timestamps), the CPU by the host's", async () => {
    expect(deviceTimer(T.createCpuBackend())).toBeUndefined();
    // A device whose clock advances only while the queued calls run: 3 ms a call.
    let deviceMs = 0;
    const marks: number[] = [];
    const timer: KernelTimer = { mark: () => marks.push(deviceMs) - 1, elapsedMs: (a, b) => marks[b] - marks[a], release: () => {} };
    const gpu = { name: "cuda", timer, sync: async () => {} } as unknown as Backend;
    expect(deviceTimer(gpu)).toBe(timer);
    setDeviceWarmupMs(0);
    try {
      const timing = await timeQueued(gpu, () => (deviceMs += 3), 5, 1, 4, deviceTimer(gpu));
      expect(timing.clock).toBe("gpu-timestamp");
      expect(timing.times).toEqual([3, 3, 3, 3]);
    } finally {
      setDeviceWarmupMs(DEFAULT_DEVICE_WARMUP_MS);
    }
  });

  it("reads nvidia-smi's csv lines in local time, and refuses lines that are not samples", () => {
    const s = parseSample("2026/12/03 06:10:11.123, P0, 1980, 3201");
    expect(s).toEqual({ at: new Date(2026, 11, 3, 6, 10, 11, 123).getTime(), pstate: "P0", smMhz: 1980, memMhz: 3201 });
    expect(parseSample("2026/12/03 06:10:11.5, P8, 345, 3201")?.at).toBe(new Date(2026, 11, 3, 6, 10, 11, 500).getTime());
    expect(parseSample("2026/12/03 06:10:11.123, P0, [N/A], 3201")).toBeNull();
    expect(parseSample("No devices were found")).toBeNull();
  });

  it("gives a window's median, least and most SM clock, or the last sample before a window too short for one", () => {
    const samples = [sample(1000, 345, "P8"), sample(1100, 1200), sample(1200, 1980), sample(1300, 1980), sample(1400, 1755)];
    expect(clockStats(samples, 1050, 1450)).toEqual({
      gpu_sm_mhz: 1867.5,
      gpu_sm_mhz_min: 1200,
      gpu_sm_mhz_max: 1980,
      gpu_mem_mhz: 3201,
      gpu_pstate: "P0",
      gpu_clock_samples: 4,
    });
    expect(clockStats(samples, 950, 1150)?.gpu_pstate).toBe("P8/P0");
    expect(clockStats(samples, 1210, 1250)).toMatchObject({ gpu_sm_mhz: 1980, gpu_clock_samples: 1 });
    expect(clockStats(samples, 100, 900)).toBeNull();
  });

  it("each timed row of a suite gets the clocks of its timed repetitions; rows without a time get none", async () => {
    const log: string[] = [];
    const sampler = await startClocks("0", (line) => log.push(line), fakeSmi(1755));
    expect(log).toEqual([]);
    expect(sampler).not.toBeNull();
    const context = { backends: ["cpu" as const], options: { backends: ["cpu"], warmup: 0, reps: 3 }, log: () => {} };
    const rows = await copySuite.run(context, { mib: [1, 2] });
    const untimed = result({ suite: "copy", impl: "copy", backend: "cpu", device: "cpu", dtype: "f32", ok: false });
    await sampler!.stop();
    addClocks([...rows, untimed], sampler!, (line) => log.push(line));
    for (const r of rows) {
      expect(r).toMatchObject({ gpu_sm_mhz: 1755, gpu_sm_mhz_min: 1755, gpu_mem_mhz: 3201, gpu_pstate: "P0" });
      expect(r.gpu_clock_samples).toBeGreaterThanOrEqual(1);
    }
    expect(untimed.gpu_sm_mhz).toBeUndefined();
    expect(log).toEqual([]);
  });

  it("a span opens after the warm-up, which lasts at least --warmup-ms on a device-timed loop", async () => {
    setDeviceWarmupMs(120);
    try {
      let calls = 0;
      const t0 = Date.now();
      await warmUp({ sync: async () => {} }, () => calls++, 1);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(120);
      expect(calls).toBeGreaterThan(1);
      beginTimed();
      const opened = Date.now();
      summarise([0.5, 0.7, 0.6]);
      const row = result({ suite: "x", impl: "y", backend: "cpu", device: "cpu", dtype: "f32", ok: true, fwd_ms: 0.6 });
      const span = timedSpan(row)!;
      expect(span[0]).toBeGreaterThanOrEqual(opened);
      expect(span[1]).toBeGreaterThanOrEqual(span[0]);
      // The CPU backend warms up by count alone.
      let cpuCalls = 0;
      await warmUp({ name: "cpu", sync: async () => {} }, () => cpuCalls++, 3);
      expect(cpuCalls).toBe(3);
    } finally {
      setDeviceWarmupMs(DEFAULT_DEVICE_WARMUP_MS);
    }
    expect(() => setDeviceWarmupMs(-1)).toThrow(/--warmup-ms: expected a non-negative number of milliseconds, got -1/);
  });

  it("a queued loop warms up with as many calls a wait as it times", async () => {
    setDeviceWarmupMs(0);
    try {
      let calls = 0;
      const waits: number[] = [];
      const backend = {
        name: "webgpu",
        sync: () => {
          waits.push(calls);
          return Promise.resolve();
        },
      };
      const timing = await timeQueued(backend, () => calls++, 5, 2, 3);
      expect(timing.times).toHaveLength(3);
      // Two warm-up waits and three timed ones, each after 5 more calls.
      expect(waits).toEqual([5, 10, 15, 20, 25]);
    } finally {
      setDeviceWarmupMs(DEFAULT_DEVICE_WARMUP_MS);
    }
  });

  it("without nvidia-smi, or for a bad index, the benchmark runs without clocks and says why", async () => {
    const log: string[] = [];
    expect(await startClocks(true, (line) => log.push(line), join(tmpdir(), "no-such-dir", "nvidia-smi"))).toBeNull();
    expect(log).toHaveLength(1);
    expect(log[0]).toMatch(/^--gpu-clocks: .*nvidia-smi.*; the rows carry no clocks$/);
    expect(() => new ClockSampler(-1)).toThrow(/--gpu-clocks: expected a GPU index \(a non-negative integer\), got -1/);
  });
});
