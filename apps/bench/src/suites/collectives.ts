/**
 * collectives: NCCL all-reduce bus bandwidth on two GPUs, ours beside PyTorch's on the same machine
 * in the same run (tools/anchors/nccl-allreduce-bench.py, one process per GPU).
 *
 * Ours runs as in production, as the anchor does: one process per GPU, each driving only its own
 * rank. This process is rank 0 on cuda:0; it starts itself again (the same script and arguments,
 * LIGHTNING_BENCH_NCCL_RANK=1) as rank 1 on cuda:1 and hands it the NCCL unique id on stdin. Both
 * make the same calls in the same order. Each case is first checked on rank 0 against the sum
 * computed on the host (rank 1's input is the same seeded draw, so rank 0 makes it again), then
 * timed twice, out of place (a new output per call) and in place (what data parallelism does with
 * its gradient buckets, and what torch's `dist.all_reduce(x)` does): `iters` all-reduces of the
 * same buffer enqueued back to back, then a device sync, `reps` times; the larger of the two ranks'
 * medians is reported, as the anchor does. Bus bandwidth is NCCL's: 2(N−1)/N · bytes / time, N = 2.
 *
 * The NCCL library is torch's (its nvidia-nccl wheel) when the anchor runs and python3 finds it,
 * so both sides use the same NCCL; LIGHTNING_NCCL_LIBRARY, when set, wins. The log names the one used.
 */
import {
  type CudaBackend,
  type CudaCollective,
  createCudaBackend,
  createNcclCollective,
  cudaUnavailableReason,
  ncclUnavailableReason,
  ncclUniqueId,
  ncclVersion,
} from "@lightning-ts/cuda";
import { type DType, decode, encode, randomNormal, type Tensor, tensor } from "@lightning-ts/tensor";
import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type BenchResult, intList, result, type Suite, summarise } from "../suite.js";

const ANCHOR = fileURLToPath(new URL("../../../../tools/anchors/nccl-allreduce-bench.py", import.meta.url));
const MIB = 2 ** 20;
/** Elements checked against the host sum per case (spread over the buffer). */
const CHECKED = 1031;
/** Set in the environment of the process this suite starts for rank 1. */
const RANK_ENV = "LIGHTNING_BENCH_NCCL_RANK";
const WORLD = 2;

interface CollectivesOptions {
  sizesMib: number[];
  dtypes: DType[];
  anchor: boolean;
}

const busFactor = (n: number) => (2 * (n - 1)) / n;

/** Seeded normal values, made on the GPU (a GiB made on the host would take longer than the benchmark). */
function filled(backend: CudaBackend, count: number, dtype: DType, seed: number): Tensor {
  return randomNormal([count], { seed, dtype, backend });
}

const seedOf = (rank: number, mib: number) => 1 + 1000 * rank + mib;

/** The elements at `positions` of a tensor, read piece by piece. */
async function sample(t: Tensor, positions: number[], dtype: DType): Promise<number[]> {
  const esize = dtype === "f32" ? 4 : 2;
  const out: number[] = [];
  for (const p of positions) {
    const bytes = await t.backend.read(t.handle.storage, p * esize, esize);
    out.push(decode(dtype, dtype === "f32" ? new Float32Array(bytes.buffer, bytes.byteOffset, 1) : new Uint16Array(bytes.buffer, bytes.byteOffset, 1))[0]);
  }
  return out;
}

function positionsFor(count: number): number[] {
  const m = Math.min(CHECKED, count);
  return Array.from({ length: m }, (_, i) => Math.floor((i * (count - 1)) / Math.max(1, m - 1)));
}

/** The host sum of both ranks' inputs at `positions`, rounded once to the dtype. */
async function hostSum(x0: Tensor, x1: Tensor, positions: number[], dtype: DType): Promise<number[]> {
  const [a, b] = await Promise.all([sample(x0, positions, dtype), sample(x1, positions, dtype)]);
  return Array.from(decode(dtype, encode(dtype, a.map((v, i) => v + b[i]))));
}

/** Largest relative error of the all-reduced sample against the host sum. */
async function check(y: Tensor, want: number[], positions: number[], dtype: DType): Promise<number> {
  const got = await sample(y, positions, dtype);
  let worst = 0;
  for (let i = 0; i < positions.length; i++) {
    const e = want[i] === got[i] ? 0 : Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-30);
    worst = Math.max(worst, Number.isFinite(e) ? e : Infinity);
  }
  return worst;
}

/** The path of torch's NCCL (its nvidia-nccl wheel), or null when python3 or the wheel is missing. */
function torchNcclPath(): string | null {
  const code = "import os, nvidia.nccl as m; p = os.path.join(list(m.__path__)[0], 'lib', 'libnccl.so.2'); print(p if os.path.exists(p) else '')";
  const run = spawnSync("python3", ["-c", code], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const path = run.status === 0 ? run.stdout.trim() : "";
  return path || null;
}

/** Rank 1: this script again, told its rank by the environment; the unique id goes down its stdin. */
function startPeer(uniqueId: Uint8Array, log: (line: string) => void): { done: Promise<void> } {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    env: { ...process.env, [RANK_ENV]: "1" },
    stdio: ["pipe", "ignore", "inherit"],
  });
  child.stdin.end(`${Buffer.from(uniqueId).toString("hex")}\n`);
  const done = new Promise<void>((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`the rank 1 process exited with ${code ?? signal}`));
    });
  });
  done.catch((err: unknown) => log(`collectives: ${err instanceof Error ? err.message : String(err)}`));
  return { done };
}

async function readUniqueId(): Promise<Uint8Array> {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    const id = Uint8Array.from(Buffer.from(line.trim(), "hex"));
    if (id.byteLength !== 128) throw new Error(`${RANK_ENV}: expected the 128-byte NCCL unique id in hex on stdin, got ${id.byteLength} bytes`);
    return id;
  }
  throw new Error(`${RANK_ENV}: stdin closed before the NCCL unique id came`);
}

/** Timing of one mode on this rank: the larger median of the two ranks, in ms per all-reduce. */
async function timeMode(c: CudaCollective, x: Tensor, inPlace: boolean, warmup: number, reps: number, iters: number): Promise<{ median: number; spread_pct: number }> {
  const b = c.backend;
  // The host blocks in cudaStreamSynchronize, as torch.cuda.synchronize() does in the anchor: an
  // awaited sync resolves through the thread pool and the event loop, ~0.1 ms per round that
  // would count against the all-reduces (a round is ~1 ms from 8 MiB up).
  const round = (n: number) => {
    b.runtime.syncNow();
    const t0 = performance.now();
    for (let k = 0; k < n; k++) c.allReduce(x, "sum", { inPlace }).dispose();
    b.runtime.syncNow();
    return (performance.now() - t0) / n;
  };
  round(warmup);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) times.push(round(iters));
  const t = summarise(times);
  const mine = tensor([t.median], [1], { dtype: "f32", backend: b });
  const slowest = c.allReduce(mine, "max", { inPlace: true });
  const [median] = await slowest.data();
  slowest.dispose();
  mine.dispose();
  return { median, spread_pct: t.spread_pct };
}

/**
 * One rank's part of every case, the same calls on both ranks; rank 0 checks and returns the rows.
 */
async function measure(c: CudaCollective, options: CollectivesOptions, warmup: number, reps: number, nccl: string, log: (line: string) => void): Promise<BenchResult[]> {
  const b = c.backend;
  const results: BenchResult[] = [];
  const device = `${b.info.name} ×${WORLD}`;
  for (const dtype of options.dtypes) {
    for (const mib of options.sizesMib) {
      const bytes = mib * MIB;
      const count = bytes / (dtype === "f32" ? 4 : 2);
      const x = filled(b, count, dtype, seedOf(c.rank, mib));
      let want: number[] = [];
      const positions = positionsFor(count);
      if (c.rank === 0) {
        const peer = filled(b, count, dtype, seedOf(1, mib));
        want = await hostSum(x, peer, positions, dtype);
        peer.dispose();
      }
      // Several all-reduces per timed sample, so the host's wait is small beside them.
      const iters = Math.max(1, Math.min(50, Math.round((256 * MIB) / bytes)));
      const base = { suite: "collectives", backend: "cuda", device, dtype, op: "allreduce", gpus: WORLD, bytes, mib, nccl, iters, reps };
      for (const inPlace of [false, true]) {
        const y = c.allReduce(x, "sum", { inPlace });
        const rel_err = c.rank === 0 ? await check(y, want, positions, dtype) : 0;
        y.dispose();
        const ok = rel_err === 0;
        const t = await timeMode(c, x, inPlace, warmup, reps, iters);
        const algbw = bytes / (t.median / 1e3) / 1e9;
        const impl = inPlace ? "lightning-ts in-place" : "lightning-ts out-of-place";
        if (c.rank !== 0) continue;
        if (!ok) log(`${dtype} ${mib} MiB ${impl}: FAILED the host check (rel_err ${rel_err.toExponential(2)})`);
        results.push(
          result({
            ...base,
            impl,
            ok,
            rel_err,
            fwd_ms: t.median,
            time_us: t.median * 1e3,
            algbw_gbps: algbw,
            busbw_gbps: algbw * busFactor(WORLD),
            gbps: algbw * busFactor(WORLD),
            spread_pct: t.spread_pct,
          }),
        );
        log(`${dtype} ${mib} MiB ${impl}: ${(algbw * busFactor(WORLD)).toFixed(1)} GB/s bus bandwidth`);
      }
      x.dispose();
    }
  }
  return results;
}

interface AnchorRow {
  dtype: string;
  bytes: number;
  time_us: number;
  busbw_gbps: number;
  algbw_gbps: number;
  torch: string;
  nccl: string;
  device: string;
}

function torchAnchor(sizesMib: number[], dtypes: DType[], warmup: number, reps: number): AnchorRow[] {
  const run = spawnSync("python3", [ANCHOR, "--sizes-mib", sizesMib.join(","), "--dtypes", dtypes.join(","), "--warmup", String(warmup), "--reps", String(reps)], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (run.status !== 0) throw new Error(`the PyTorch anchor failed (exit ${run.status ?? run.signal}): ${run.error?.message ?? "see its output above"}`);
  return run.stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as AnchorRow);
}

export const collectivesSuite: Suite = {
  name: "collectives",
  description: "NCCL all-reduce bus bandwidth on 2 GPUs, beside PyTorch's torch.distributed on the same sizes",
  defaults: { warmup: 5, reps: 20 },
  configure(command) {
    command
      .option("--sizes-mib <list>", "buffer sizes in MiB, comma-separated", intList, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
      .option("--dtypes <list>", "f32, bf16", (v: string) => v.split(",") as DType[], ["f32", "bf16"] as DType[])
      .option("--no-anchor", "skip the PyTorch anchor");
  },
  columns: [
    ["impl", "impl"],
    ["dtype", "dtype"],
    ["MiB", "mib"],
    ["time µs", "time_us"],
    ["algbw GB/s", "algbw_gbps"],
    ["busbw GB/s", "busbw_gbps"],
    ["vs torch", "ratio_vs_torch"],
    ["rel_err", "rel_err"],
    ["ok", "ok"],
  ],

  async run({ options: common, log }, raw) {
    const options = raw as unknown as CollectivesOptions;
    const { warmup, reps } = common;
    for (const d of options.dtypes) if (d !== "f32" && d !== "bf16") throw new Error(`--dtypes: f32 and bf16 are measured, got ${d}`);
    const rank = process.env[RANK_ENV] === "1" ? 1 : 0;
    if (rank === 0 && options.anchor && !process.env.LIGHTNING_NCCL_LIBRARY) {
      // Read when NCCL is first loaded, below; rank 1 inherits it.
      const torchs = torchNcclPath();
      if (torchs) process.env.LIGHTNING_NCCL_LIBRARY = torchs;
    }
    if (rank === 1) {
      // The peer of a rank-0 run: measure alongside it, report nothing, and leave without the
      // bench's own output (the results file is rank 0's).
      const uniqueId = await readUniqueId();
      const backend = createCudaBackend({ device: 1 });
      const c = await createNcclCollective({ backend, rank: 1, worldSize: WORLD, uniqueId });
      await measure(c, options, warmup, reps, "", log);
      c.dispose();
      backend.dispose();
      process.exit(0);
    }
    const skip = cudaUnavailableReason() ?? ncclUnavailableReason();
    if (skip) {
      log(`collectives skipped: ${skip}`);
      return [];
    }
    let b0: CudaBackend;
    try {
      b0 = createCudaBackend({ device: 0 });
      createCudaBackend({ device: 1 }).dispose();
    } catch (err) {
      log(`collectives skipped: two CUDA devices are needed (${err instanceof Error ? err.message : String(err)})`);
      return [];
    }
    const nccl = ncclVersion();
    log(`NCCL ${nccl.version} from ${nccl.path}; ${b0.info.name} ×${WORLD}, one process per GPU`);
    const uniqueId = ncclUniqueId();
    const peer = startPeer(uniqueId, log);
    let results: BenchResult[];
    try {
      const c0 = await Promise.race([createNcclCollective({ backend: b0, rank: 0, worldSize: WORLD, uniqueId }), peer.done.then(() => Promise.reject(new Error("the rank 1 process ended before joining")))]);
      try {
        results = await measure(c0, options, warmup, reps, nccl.version, log);
      } finally {
        c0.dispose();
      }
      await peer.done;
    } finally {
      b0.dispose();
    }

    if (!options.anchor) return results;
    let anchor: AnchorRow[];
    try {
      anchor = torchAnchor(options.sizesMib, options.dtypes, warmup, reps);
    } catch (err) {
      log(`PyTorch anchor skipped: ${err instanceof Error ? err.message : String(err)}`);
      return results;
    }
    for (const row of anchor) {
      for (const mine of results.filter((r) => r.dtype === row.dtype && r.bytes === row.bytes && r.impl.startsWith("lightning-ts"))) {
        if (typeof mine.busbw_gbps === "number") mine.ratio_vs_torch = mine.busbw_gbps / row.busbw_gbps;
      }
      results.push(
        result({
          suite: "collectives",
          impl: "torch.distributed",
          backend: "torch",
          device: row.device,
          dtype: row.dtype,
          ok: true,
          op: "allreduce",
          gpus: 2,
          bytes: row.bytes,
          mib: row.bytes / MIB,
          fwd_ms: row.time_us / 1e3,
          time_us: row.time_us,
          algbw_gbps: row.algbw_gbps,
          busbw_gbps: row.busbw_gbps,
          gbps: row.busbw_gbps,
          anchor: `torch ${row.torch}, NCCL ${row.nccl}`,
        }),
      );
    }
    return results;
  },
};
