/**
 * The native anchor: NumPy's matmul (OpenBLAS on the CI machine), timed by a small inline Python
 * script in a child process, so that it runs side by side with ours in one benchmark run.
 */
import { spawnSync } from "node:child_process";

const SCRIPT = String.raw`
import json, sys, time
import numpy as np
cfg = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
times = []
for m, k, n in cfg["shapes"]:
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    for _ in range(cfg["warmup"]):
        a @ b
    t = []
    for _ in range(cfg["reps"]):
        t0 = time.perf_counter()
        a @ b
        t.append((time.perf_counter() - t0) * 1e3)
    times.append(t)
blas = "?"
try:
    info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    blas = f"{info['name']} {info['version']}"
except Exception:
    pass
print(json.dumps({"times": times, "numpy": np.__version__, "blas": blas}))
`;

export interface AnchorTimes {
  /** Per shape, the times of each repetition in ms. */
  times: number[][];
  /** e.g. "numpy 2.4.6, scipy-openblas 0.3.31". */
  version: string;
}

/** Whether python3 with numpy is here; the reason when it is not. */
export function numpyUnavailable(): string | null {
  const probe = spawnSync("python3", ["-c", "import numpy"], { encoding: "utf8" });
  if (probe.error) return `python3 not found (${probe.error.message})`;
  if (probe.status !== 0) return `python3 cannot import numpy: ${probe.stderr.trim().split("\n").pop()}`;
  return null;
}

/** f32 matmul times for each (m, k, n), with OpenBLAS limited to `threads` threads. */
export function numpyMatmul(shapes: [number, number, number][], options: { warmup: number; reps: number; threads: number }): AnchorTimes {
  const config = JSON.stringify({ shapes, warmup: options.warmup, reps: options.reps });
  const threads = String(options.threads);
  const run = spawnSync("python3", ["-c", SCRIPT, config], {
    encoding: "utf8",
    env: { ...process.env, OPENBLAS_NUM_THREADS: threads, OMP_NUM_THREADS: threads, MKL_NUM_THREADS: threads },
    maxBuffer: 1 << 24,
  });
  if (run.status !== 0) throw new Error(`numpy anchor failed: ${run.stderr || run.error?.message}`);
  const parsed = JSON.parse(run.stdout) as { times: number[][]; numpy: string; blas: string };
  return { times: parsed.times, version: `numpy ${parsed.numpy}, ${parsed.blas}` };
}
