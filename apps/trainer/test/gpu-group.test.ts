/**
 * `pnpm train --gpus 2` on two CUDA GPUs, as a user runs it: the dry run's NCCL check, data- and
 * sequence-parallel losses against one GPU over the same global batches (f32: ≤ 1e-5 relative per
 * step; bf16: within 1%), the same for ZeRO-1 (`--zero 1`) with its checkpoint resumed on one GPU, and a rank killed mid-run: the launcher names it within 60 s and the run
 * resumes on one GPU from its last checkpoint. Skipped, with the reason printed, without two GPUs
 * and NCCL.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { corpus, tempRoot } from "./helpers.js";
import { bundleMain, isAlive, killStarted, pids, start, until } from "./processes.js";

async function twoGpus(): Promise<string | null> {
  try {
    const cuda = await import("@lightning-ts/cuda");
    const reason = cuda.cudaUnavailableReason() ?? cuda.ncclUnavailableReason();
    if (reason) return reason;
    cuda.createCudaBackend({ device: 1 }).dispose();
    return null;
  } catch (err) {
    return `two CUDA devices needed: ${(err as Error).message}`;
  }
}

const skip = await twoGpus();
if (skip) console.log(`gpu-group.test.ts: skipped: ${skip}`);

const root = tempRoot("gpu-group");
const data = join(root, "corpus.txt");
// A small TNL, T divisible by 2 for sequence parallel, 4 rows for 2 data-parallel ranks.
const MODEL = ["--data", data, "--vocab-size", "300", "--d-model", "64", "--layers", "2", "--heads", "2", "--glu-dim", "128", "--batch-size", "4", "--seq-len", "130", "--peak-tflops", "1", "--backend", "cuda"];

beforeAll(() => {
  writeFileSync(data, corpus);
  bundleMain();
});
afterAll(killStarted);

function losses(outDir: string): { step: number; loss: number }[] {
  return readFileSync(join(outDir, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { kind: string; step: number; loss: number })
    .filter((r) => r.kind === "train")
    .map(({ step, loss }) => ({ step, loss }));
}

async function run(name: string, args: string[]): Promise<{ step: number; loss: number }[]> {
  const out = join(root, name);
  const r = start([...MODEL, ...args, "--out", out, "--no-progress"], {}, root);
  const { code } = await r.exit;
  expect(code, r.output()).toBe(0);
  return losses(out);
}

function expectClose(got: { step: number; loss: number }[], want: { step: number; loss: number }[], tolerance: number, label: string): void {
  expect(got.map((l) => l.step), label).toEqual(want.map((l) => l.step));
  got.forEach((l, i) => expect(Math.abs(l.loss - want[i].loss) / want[i].loss, `${label}: step ${l.step}: ${l.loss} vs ${want[i].loss}`).toBeLessThanOrEqual(tolerance));
}

describe.skipIf(skip !== null)("pnpm train --gpus 2 on cuda", () => {
  it("--dry-run: the ranks meet and NCCL all-reduces correctly", async () => {
    const r = start(["--gpus", "2", "--backend", "cuda", "--dry-run", "--steps", "3"], {}, root);
    expect((await r.exit).code, r.output()).toBe(0);
    expect(r.output()).toContain("NCCL all-reduce over 2 ranks correct");
  });

  it("f32 data parallel and sequence parallel: the one-GPU losses within 1e-5 relative per step for 10 steps", async () => {
    const steps = ["--dtype", "f32", "--steps", "10", "--eval-interval", "10", "--checkpoint-interval", "10"];
    const one = await run("f32-one", steps);
    expectClose(await run("f32-dp", [...steps, "--gpus", "2"]), one, 1e-5, "dp");
    expectClose(await run("f32-sp", [...steps, "--gpus", "2", "--sequence-parallel", "2"]), one, 1e-5, "sp");
    const summary = JSON.parse(readFileSync(join(root, "f32-sp", "summary.json"), "utf8")) as Record<string, unknown>;
    expect(summary).toMatchObject({ gpus: 2, mode: "sp", T: 130 });
  });

  it("--zero 1: f32 within 1e-5 and bf16 within 1% of one GPU; its checkpoint resumes on one GPU as the uninterrupted run continues", async () => {
    const steps = ["--steps", "10", "--eval-interval", "10", "--checkpoint-interval", "5"];
    const one = await run("zero-f32-one", ["--dtype", "f32", ...steps]);
    expectClose(await run("zero-f32", ["--dtype", "f32", ...steps, "--gpus", "2", "--zero", "1"]), one, 1e-5, "f32 ZeRO-1");
    expectClose(await run("zero-bf16", ["--dtype", "bf16", ...steps, "--gpus", "2", "--zero", "1"]), await run("zero-bf16-one", ["--dtype", "bf16", ...steps]), 0.01, "bf16 ZeRO-1");
    // Back to step 5 of the ZeRO-1 run (rank 0 gathered the full state), continued on one GPU:
    // its log gets steps 6–10 again, which must be the one-GPU run's.
    const out = join(root, "zero-f32");
    const resumed = start(["--resume", join(out, "checkpoints", "step-000005"), "--no-progress"], {}, root);
    expect((await resumed.exit).code, resumed.output()).toBe(0);
    expect(resumed.output()).toContain("at step 5");
    expectClose(losses(out).slice(-5), one.slice(5), 1e-5, "ZeRO-1 checkpoint resumed on one GPU");
  });

  it("bf16 data parallel: the one-GPU curve within 1%", async () => {
    const steps = ["--dtype", "bf16", "--steps", "10", "--eval-interval", "10", "--checkpoint-interval", "10"];
    expectClose(await run("bf16-dp", [...steps, "--gpus", "2"]), await run("bf16-one", steps), 0.01, "bf16 dp");
  });

  it("rank 1 killed mid-run: the launcher names it within 60 s, and --resume on one GPU continues from the last checkpoint", async () => {
    const out = join(root, "killed");
    const r = start([...MODEL, "--dtype", "f32", "--steps", "100000", "--time-limit", "0", "--checkpoint-interval", "3", "--eval-interval", "1000", "--out", out, "--no-progress", "--gpus", "2"], {}, root);
    const [p0, p1] = await pids(r, 2);
    const latest = join(out, "checkpoints", "latest.json");
    await until("a checkpoint", () => {
      try {
        return (JSON.parse(readFileSync(latest, "utf8")) as { step: number }).step >= 3;
      } catch {
        return false;
      }
    });
    const killedAt = performance.now();
    process.kill(p1, "SIGKILL");
    const { code } = await r.exit;
    expect(code, r.output()).toBe(1);
    expect(r.output()).toContain(`the group failed: rank 1 (pid ${p1}) was killed by SIGKILL`);
    expect((performance.now() - killedAt) / 1000).toBeLessThan(60);
    expect([p0, p1].filter(isAlive)).toEqual([]);

    const { step } = JSON.parse(readFileSync(latest, "utf8")) as { step: number };
    const resumed = start(["--resume", out, "--steps", String(step + 2), "--no-progress"], {}, root);
    expect((await resumed.exit).code, resumed.output()).toBe(0);
    expect(resumed.output()).toContain(`at step ${step}`);
    expect(losses(out).at(-1)!.step).toBe(step + 2);
  });
});
