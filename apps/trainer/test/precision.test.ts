/**
 * The trainer's --dtype: bf16 and f16 runs on the CPU track the f32 run, store their weights in
 * their own dtype with f32 master weights beside them, and resume bit for bit (f16 with its loss
 * scale).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors } from "@lightning-ts/tensor/node";
import { inspectCheckpoint } from "@lightning-ts/tnl";
import { describe, expect, it } from "vitest";
import type { TrainerState } from "../src/checkpoint.js";
import { resolveConfig, type TrainConfig } from "../src/config.js";
import { train, type TrainResult } from "../src/train.js";
import { corpus, quiet as quietIn, small as smallOn, tempRoot } from "./helpers.js";

const root = tempRoot("trainer-precision");
const dataFile = join(root, "corpus.txt");
writeFileSync(dataFile, corpus);
const quiet = quietIn(join(root, "cache"));
const small = (outDir: string, extra: Partial<TrainConfig> = {}): TrainConfig => smallOn(dataFile, join(root, outDir), extra);

/** A whole run, and the same run stopped after step 3 and resumed; `nonFiniteSteps` (≤ 3) are skipped in both. */
async function wholeAndResumed(dtype: "bf16" | "f16", nonFiniteSteps: number[] = []): Promise<{ whole: TrainResult; split: TrainResult[] }> {
  const whole = await train({ ...quiet, config: small(`${dtype}-whole`, { dtype }), nonFiniteSteps });
  const first = await train({ ...quiet, config: small(`${dtype}-split`, { dtype }), stopAfterStep: 3, nonFiniteSteps });
  const rest = await train({ ...quiet, config: small("ignored", { dtype }), resume: join(root, `${dtype}-split`) });
  return { whole, split: [first, rest] };
}

describe("trainer --dtype", () => {
  let f32: TrainResult;

  it("bf16: tracks the f32 losses, stores BF16 weights with f32 master weights, resumes bit for bit", async () => {
    f32 = await train({ ...quiet, config: small("f32") });
    const { whole, split } = await wholeAndResumed("bf16");
    expect(split.flatMap((r) => r.losses)).toEqual(whole.losses);
    const rel = whole.losses.map((l, i) => Math.abs(l.loss - f32.losses[i].loss) / f32.losses[i].loss);
    console.log(`bf16 vs f32 over 8 steps: |Δloss|/loss max ${(100 * Math.max(...rel)).toFixed(2)}%; held-out ${whole.summary!.heldout_loss.toFixed(4)} vs ${f32.summary!.heldout_loss.toFixed(4)}`);
    expect(Math.max(...rel)).toBeLessThan(0.01);
    expect(Math.abs(whole.summary!.heldout_loss - f32.summary!.heldout_loss) / f32.summary!.heldout_loss).toBeLessThan(0.01);
    expect([whole.summary!.dtype, f32.summary!.dtype]).toEqual(["bf16", "f32"]);
    const ckpt = join(root, "bf16-whole", "checkpoints", "step-000008");
    expect((await inspectCheckpoint(join(ckpt, "model"))).dtypes).toEqual(["BF16"]);
    expect((await inspectCheckpoint(join(root, "bf16-whole", "model"))).dtypes).toEqual(["BF16"]);
    const { tensors } = await readSafetensors(join(ckpt, "optimizer.safetensors"));
    const masters = Object.keys(tensors).filter((k) => k.startsWith("master/"));
    expect(masters.length).toBeGreaterThan(0);
    for (const t of Object.values(tensors)) expect(t.dtype).toBe("f32");
    for (const t of Object.values(tensors)) t.dispose();
  });

  it("f16: a non-finite step halves the loss scale, which the checkpoint keeps; resumes bit for bit", async () => {
    const { whole, split } = await wholeAndResumed("f16", [2]);
    expect(whole.losses.map((l) => l.step)).toEqual([1, 3, 4, 5, 6, 7, 8]);
    expect(split.flatMap((r) => r.losses)).toEqual(whole.losses);
    const lossScale = (run: string) =>
      (JSON.parse(readFileSync(join(root, run, "checkpoints", "step-000008", "trainer.json"), "utf8")) as TrainerState).lossScale;
    // 2¹⁶ halved at step 2, then six finite steps (of the 2,000 before it grows again); the resumed run restored it.
    expect(lossScale("f16-whole")).toEqual({ scale: 2 ** 15, growthTracker: 6 });
    expect(lossScale("f16-split")).toEqual(lossScale("f16-whole"));
    const f32Loss = new Map(f32.losses.map((l) => [l.step, l.loss]));
    const rel = whole.losses.filter((l) => l.step === 1).map((l) => Math.abs(l.loss - f32Loss.get(l.step)!) / f32Loss.get(l.step)!);
    expect(Math.max(...rel)).toBeLessThan(0.02);
    expect((await inspectCheckpoint(join(root, "f16-whole", "model"))).dtypes).toEqual(["F16"]);
  });

  it("names --dtype when the value is not a model dtype", () => {
    expect(() => resolveConfig({ overrides: { dtype: "f64" } })).toThrow('--dtype expected one of "bf16", "f16", "f32" or null, got "f64"');
    expect(resolveConfig({ overrides: { dtype: "bf16" } }).dtype).toBe("bf16");
    expect(resolveConfig({}).dtype).toBeNull(); // the backend's default: f32 on the CPU, bf16 on CUDA
  });
});
