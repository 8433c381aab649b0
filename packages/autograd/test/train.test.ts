/**
 * End to end on the CPU backend: a small MLP learns a synthetic classification task with AdamW,
 * and a run resumed from saved parameters and optimizer state reproduces the uninterrupted run
 * bit for bit.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { add, argmax, matmul, mean, scope, softmaxCrossEntropy, tanh, type Tensor } from "@lightning-ts/tensor";
import { readSafetensors, writeSafetensors } from "@lightning-ts/tensor/node";
import { afterAll, describe, expect, it } from "vitest";
import { disposeTree, valueAndGrad } from "../src/index.js";
import { AdamW, clipGradNorm, loadOptimizerState, saveOptimizerState, warmupCosine } from "../src/optim/index.js";
import { rand } from "./helpers.js";

// N samples of F features, H hidden units, K classes.
const [N, F, H, K] = [96, 7, 24, 5];
const STEPS = 60;
const TARGET = 0.08;

interface Mlp {
  w1: Tensor;
  b1: Tensor;
  w2: Tensor;
  b2: Tensor;
}

const forward = (p: Mlp, x: Tensor) => add(matmul(tanh(add(matmul(x, p.w1), p.b1)), p.w2), p.b2);
const loss = (p: Mlp, x: Tensor, y: Tensor) => mean(softmaxCrossEntropy(forward(p, x), y));

/** Labels from a random linear "teacher", so the task is learnable but not trivial. */
function data(): { x: Tensor; y: Tensor } {
  const x = rand(1, [N, F]);
  const teacher = rand(2, [F, K]);
  const y = scope(() => argmax(matmul(x, teacher), 1));
  teacher.dispose();
  return { x, y };
}

const init = (): Mlp => ({
  w1: rand(10, [F, H], (v) => v / Math.sqrt(F)),
  b1: rand(11, [H], (v) => 0.1 * v),
  w2: rand(12, [H, K], (v) => v / Math.sqrt(H)),
  b2: rand(13, [K], (v) => 0.1 * v),
});

const makeOptimizer = () =>
  new AdamW({ lr: warmupCosine({ peak: 0.03, warmupSteps: 10, totalSteps: STEPS, floor: 0.003 }), weightDecay: 0.01 }, [
    { name: "no_decay", match: /^b\d$/, weightDecay: 0 },
  ]);

/** Steps [from, to) of training; returns the losses and the final parameters. */
function train(params: Mlp, opt: AdamW, x: Tensor, y: Tensor, from: number, to: number): { losses: number[]; params: Mlp } {
  const losses: number[] = [];
  for (let s = from; s < to; s++) {
    const { value, grads } = valueAndGrad(loss)(params, x, y);
    losses.push(value.dataSync()[0]);
    const { grads: clipped, norm } = clipGradNorm(grads, 1.0);
    params = opt.step(params, clipped);
    disposeTree([value, grads, clipped, norm]);
  }
  return { losses, params };
}

describe("training a small MLP with AdamW", () => {
  const { x, y } = data();
  let dir = "";
  afterAll(async () => {
    disposeTree([x, y]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  let uninterrupted: number[] = [];

  it(`reaches a loss below ${TARGET} in ${STEPS} steps`, () => {
    const opt = makeOptimizer();
    const { losses, params } = train(init(), opt, x, y, 0, STEPS);
    uninterrupted = losses;
    expect(losses[0]).toBeGreaterThan(1);
    expect(losses[STEPS - 1]).toBeLessThan(TARGET);
    disposeTree(params);
    opt.dispose();
  });

  it("resumes from saved parameters and optimizer state with bit-identical losses", async () => {
    dir = await mkdtemp(join(tmpdir(), "autograd-train-"));
    const half = STEPS / 2;
    const first = makeOptimizer();
    const a = train(init(), first, x, y, 0, half);
    await writeSafetensors(join(dir, "params.safetensors"), { ...a.params });
    await saveOptimizerState(first, join(dir, "optimizer.safetensors"));
    disposeTree(a.params);
    first.dispose();

    // A fresh optimizer and parameters read back from disk.
    const second = makeOptimizer();
    await loadOptimizerState(second, join(dir, "optimizer.safetensors"));
    expect(second.stepCount).toBe(half);
    const { tensors } = await readSafetensors(join(dir, "params.safetensors"));
    const b = train(tensors as unknown as Mlp, second, x, y, half, STEPS);
    disposeTree(b.params);
    second.dispose();

    expect([...a.losses, ...b.losses]).toEqual(uninterrupted);
  });
});
