/**
 * collectives: NCCL all-reduce bus bandwidth on two GPUs, ours beside PyTorch's on the same machine
 * in the same run (tools/anchors/nccl-allreduce-bench.py, one process per GPU).
 *
 * Ours drives both GPUs from this one process (cuda:0 and cuda:1, each rank's call made together
 * in an NCCL group, as nccl-tests does by default); each case is first checked against the sum
 * computed on the host, then timed: `iters` all-reduces enqueued back to back, the host waiting for
 * both GPUs at the end. Bus bandwidth is NCCL's: 2(N−1)/N · bytes / time, N = 2.
 */
import {
  type CudaBackend,
  type CudaCollective,
  createCudaBackend,
  createNcclCollective,
  cudaUnavailableReason,
  ncclGroup,
  ncclUnavailableReason,
  ncclUniqueId,
  ncclVersion,
} from "@lightning-ts/cuda";
import { type DType, decode, encode, randomNormal, type Tensor } from "@lightning-ts/tensor";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type BenchResult, intList, result, type Suite, summarise } from "../suite.js";

const ANCHOR = fileURLToPath(new URL("../../../../tools/anchors/nccl-allreduce-bench.py", import.meta.url));
const MIB = 2 ** 20;
/** Elements checked against the host sum per case (spread over the buffer). */
const CHECKED = 1031;

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

/** Largest relative error of the all-reduced sample against the host sum, rounded once to the dtype. */
async function check(x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor, dtype: DType): Promise<number> {
  const count = x0.size;
  const positions = Array.from({ length: Math.min(CHECKED, count) }, (_, i) => Math.floor((i * (count - 1)) / Math.max(1, Math.min(CHECKED, count) - 1)));
  const [a, b, g0, g1] = await Promise.all([sample(x0, positions, dtype), sample(x1, positions, dtype), sample(y0, positions, dtype), sample(y1, positions, dtype)]);
  const want = decode(dtype, encode(dtype, a.map((v, i) => v + b[i])));
  let worst = 0;
  for (let i = 0; i < positions.length; i++) {
    for (const got of [g0[i], g1[i]]) {
      const e = want[i] === got ? 0 : Math.abs(got - want[i]) / Math.max(Math.abs(want[i]), 1e-30);
      worst = Math.max(worst, Number.isFinite(e) ? e : Infinity);
    }
  }
  return worst;
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
    const skip = cudaUnavailableReason() ?? ncclUnavailableReason();
    if (skip) {
      log(`collectives skipped: ${skip}`);
      return [];
    }
    let b0: CudaBackend;
    let b1: CudaBackend;
    try {
      b0 = createCudaBackend({ device: 0 });
      b1 = createCudaBackend({ device: 1 });
    } catch (err) {
      log(`collectives skipped: two CUDA devices are needed (${err instanceof Error ? err.message : String(err)})`);
      return [];
    }
    const nccl = ncclVersion();
    log(`NCCL ${nccl.version} from ${nccl.path}; ${b0.info.name} ×2`);
    const uniqueId = ncclUniqueId();
    const [c0, c1]: CudaCollective[] = await Promise.all([
      createNcclCollective({ backend: b0, rank: 0, worldSize: 2, uniqueId }),
      createNcclCollective({ backend: b1, rank: 1, worldSize: 2, uniqueId }),
    ]);
    const results: BenchResult[] = [];
    const device = `${b0.info.name} ×2`;
    try {
      for (const dtype of options.dtypes) {
        for (const mib of options.sizesMib) {
          const bytes = mib * MIB;
          const count = bytes / (dtype === "f32" ? 4 : 2);
          const x0 = filled(b0, count, dtype, 1 + mib);
          const x1 = filled(b1, count, dtype, 1001 + mib);
          const once = () => {
            const [y0, y1] = ncclGroup(() => [c0.allReduce(x0), c1.allReduce(x1)]);
            return [y0, y1];
          };
          const [y0, y1] = once();
          const rel_err = await check(x0, x1, y0, y1, dtype);
          y0.dispose();
          y1.dispose();
          const ok = rel_err === 0;
          const base = { suite: "collectives", backend: "cuda", device, dtype, op: "allreduce", gpus: 2, bytes, mib, rel_err, nccl: nccl.version };
          if (!ok) {
            log(`${dtype} ${mib} MiB: FAILED the host check (rel_err ${rel_err.toExponential(2)}), not timed`);
            results.push(result({ ...base, impl: "lightning-ts", ok }));
          } else {
            const round = async (iters: number) => {
              const t0 = performance.now();
              for (let k = 0; k < iters; k++) for (const y of once()) y.dispose();
              await Promise.all([b0.sync(), b1.sync()]);
              return (performance.now() - t0) / iters;
            };
            await round(warmup);
            // Several all-reduces per timed sample, so the host's wait is small beside them.
            const iters = Math.max(1, Math.min(50, Math.round((256 * MIB) / bytes)));
            const times: number[] = [];
            for (let r = 0; r < reps; r++) times.push(await round(iters));
            const t = summarise(times);
            const algbw = bytes / (t.median / 1e3) / 1e9;
            results.push(
              result({
                ...base,
                impl: "lightning-ts",
                ok,
                fwd_ms: t.median,
                time_us: t.median * 1e3,
                algbw_gbps: algbw,
                busbw_gbps: algbw * busFactor(2),
                gbps: algbw * busFactor(2),
                iters,
                reps,
                spread_pct: t.spread_pct,
              }),
            );
            log(`${dtype} ${mib} MiB: ${(algbw * busFactor(2)).toFixed(1)} GB/s bus bandwidth`);
          }
          x0.dispose();
          x1.dispose();
        }
      }
    } finally {
      ncclGroup(() => [c0.dispose(), c1.dispose()]);
      b0.dispose();
      b1.dispose();
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
      const mine = results.find((r) => r.dtype === row.dtype && r.bytes === row.bytes && r.impl === "lightning-ts");
      if (mine && typeof mine.busbw_gbps === "number") mine.ratio_vs_torch = mine.busbw_gbps / row.busbw_gbps;
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
