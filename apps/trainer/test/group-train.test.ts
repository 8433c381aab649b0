/**
 * Training as a group of ranks on the CPU (worker threads with the CPU collective, the real
 * rendezvous store): the losses are those of one process over the same global batches, in data
 * and in sequence parallel; a checkpoint written by a group resumes in one process and the other
 * way round, continuing as the uninterrupted run does.
 */
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCpuGroup } from "@lightning-ts/tensor/node";
import { beforeAll, describe, expect, it } from "vitest";
import type { TrainConfig } from "../src/config.js";
import { freePort } from "../src/launch.js";
import { train } from "../src/train.js";
import { corpus, quiet, small, tempRoot } from "./helpers.js";
import type { TrainRankArgs } from "./workers/train-rank.js";

// The TypeScript loader the parallel package's rank tests use: workspace sources, compiled on the fly.
const hooks = new URL("../../../packages/parallel/test/ts-hooks.mjs", import.meta.url);

type RankResult = { losses: { step: number; loss: number }[]; stopped: boolean; summary: boolean };

async function group(worldSize: number, args: Omit<TrainRankArgs, "port">): Promise<RankResult[]> {
  const port = await freePort();
  return runCpuGroup<RankResult, TrainRankArgs>(new URL("./workers/train-rank.ts", import.meta.url), { worldSize, args: { ...args, port }, preload: [hooks], timeoutMs: 60_000 });
}

const root = tempRoot("group-train");
const data = join(root, "corpus.txt");
const cache = join(root, "cache");
beforeAll(() => writeFileSync(data, corpus));

function setup(name: string, extra: Record<string, unknown> = {}): TrainConfig {
  return small(data, join(root, name), { batchSize: 3, seqLen: 22, steps: 6, checkpointInterval: 3, evalInterval: 3, ...extra });
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

function expectSameLosses(got: { step: number; loss: number }[], want: { step: number; loss: number }[], tolerance: number, label: string): void {
  expect(got.map((l) => l.step), label).toEqual(want.map((l) => l.step));
  got.forEach((l, i) => expect(rel(l.loss, want[i].loss), `${label}: step ${l.step} loss ${l.loss} vs ${want[i].loss}`).toBeLessThanOrEqual(tolerance));
}

describe("group training on the CPU", () => {
  it("2 data-parallel ranks (3 rows: 2 + 1, micro-batches of 1) give the losses of one process, and rank 0 reports for the group", async () => {
    const one = await train({ config: setup("one-dp", { microBatch: 1 }), ...quiet(cache) });
    const config = setup("dp2", { microBatch: 1 });
    const ranks = await group(2, { config, sequenceParallel: 1, cacheDir: cache });
    for (const [r, result] of ranks.entries()) expectSameLosses(result.losses, one.losses, 1e-5, `rank ${r}`);
    expect(ranks.map((r) => r.summary)).toEqual([true, false]);
    const summary = JSON.parse(readFileSync(join(config.outDir, "summary.json"), "utf8")) as Record<string, unknown>;
    expect(summary).toMatchObject({ gpus: 2, mode: "dp", T: 22, steps: 6 });
    const trained = readFileSync(join(config.outDir, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { kind: string; gpus?: number; mode?: string; T?: number });
    expect(trained.filter((r) => r.kind === "train").every((r) => r.gpus === 2 && r.mode === "dp" && r.T === 22)).toBe(true);
  });

  it("2 sequence-parallel ranks (11 tokens each) give the losses of one process", async () => {
    const one = await train({ config: setup("one-sp"), ...quiet(cache) });
    const ranks = await group(2, { config: setup("sp2"), sequenceParallel: 2, cacheDir: cache });
    // One process runs T + 1 positions, the group T (the last predicts nothing): the same sums in another order.
    for (const [r, result] of ranks.entries()) expectSameLosses(result.losses, one.losses, 1e-5, `rank ${r}`);
  });

  it("a checkpoint of 2 ranks resumes in one process, and one of one process on 2 ranks, as the uninterrupted run continues", async () => {
    const whole = await train({ config: setup("whole"), ...quiet(cache) });

    const fromGroup = setup("from-group");
    const first = await group(2, { config: fromGroup, sequenceParallel: 1, cacheDir: cache, stopAfterStep: 3 });
    expect(first.map((r) => r.stopped)).toEqual([true, true]);
    const state = JSON.parse(readFileSync(join(fromGroup.outDir, "checkpoints", "step-000003", "trainer.json"), "utf8")) as { step: number; world: unknown; rng: { counter: number } };
    expect(state).toMatchObject({ step: 3, world: { gpus: 2, dp: 2, sp: 1 }, rng: { counter: 9 } });
    const resumedAlone = await train({ config: fromGroup, resume: fromGroup.outDir, ...quiet(cache) });
    expectSameLosses(resumedAlone.losses, whole.losses.slice(3), 1e-5, "2 ranks → 1");

    const fromOne = setup("from-one");
    await train({ config: fromOne, stopAfterStep: 3, ...quiet(cache) });
    const resumedInGroup = await group(2, { config: fromOne, sequenceParallel: 1, cacheDir: cache, resume: fromOne.outDir });
    expectSameLosses(resumedInGroup[0].losses, whole.losses.slice(3), 1e-5, "1 → 2 ranks");
  });

  it("ZeRO-1 on 2 and 3 ranks gives the losses of one process; its checkpoints resume in one process and the other way round", async () => {
    const whole = await train({ config: setup("zero-whole"), ...quiet(cache) });
    for (const n of [2, 3]) {
      const ranks = await group(n, { config: setup(`zero${n}`, { zero: 1 }), sequenceParallel: 1, cacheDir: cache });
      for (const [r, result] of ranks.entries()) expectSameLosses(result.losses, whole.losses, 1e-5, `${n} ZeRO-1 ranks, rank ${r}`);
    }

    // 2 ZeRO-1 ranks → 1 process: rank 0 wrote the whole optimizer state, the file one process writes.
    const fromZero = setup("from-zero", { zero: 1 });
    await group(2, { config: fromZero, sequenceParallel: 1, cacheDir: cache, stopAfterStep: 3 });
    const fromOne = setup("zero-from-one");
    await train({ config: fromOne, stopAfterStep: 3, ...quiet(cache) });
    const stateFile = (c: TrainConfig) => join(c.outDir, "checkpoints", "step-000003", "optimizer.safetensors");
    expect(statSync(stateFile(fromZero)).size).toBe(statSync(stateFile(fromOne)).size);
    const resumedAlone = await train({ config: fromZero, resume: fromZero.outDir, ...quiet(cache) });
    expectSameLosses(resumedAlone.losses, whole.losses.slice(3), 1e-5, "2 ZeRO-1 ranks → 1");

    // 1 process → 3 ZeRO-1 ranks (the flag given on resume, as main.ts passes it).
    const resumedInGroup = await group(3, { config: { ...fromOne, zero: 1 }, sequenceParallel: 1, cacheDir: cache, resume: fromOne.outDir, resumeOverrides: { zero: 1 } });
    for (const [r, result] of resumedInGroup.entries()) expectSameLosses(result.losses, whole.losses.slice(3), 1e-5, `1 → 3 ZeRO-1 ranks, rank ${r}`);
  });

  it("a batch too small for the ranks and a sequence that does not divide are refused by name", async () => {
    await expect(group(3, { config: setup("few-rows", { batchSize: 2 }), sequenceParallel: 1, cacheDir: cache })).rejects.toThrow(/a step's 2 sequences cannot give each of the 3 data-parallel ranks one/);
    await expect(group(3, { config: setup("odd-T", { seqLen: 23 }), sequenceParallel: 3, cacheDir: cache })).rejects.toThrow(/--seq-len 23 must be a multiple of --sequence-parallel 3/);
  });
});
