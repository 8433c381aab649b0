/**
 * The trainer on a small model and a 60 KB slice of the corpus: exact resume, checkpoints that
 * `tnl generate` reads, and clear errors that leave earlier checkpoints intact.
 */
import { existsSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { ConfigError, resolveConfig, type TrainConfig } from "../src/config.js";
import { formatDuration, type LogRecord, progressHeldout, type Summary } from "../src/report.js";
import { train } from "../src/train.js";
import { corpus, quiet as quietIn, small as smallOn, tempRoot } from "./helpers.js";

const root = tempRoot("trainer-test");
const dataFile = join(root, "corpus.txt");
writeFileSync(dataFile, corpus);
const cacheDir = join(root, "cache");

const small = (outDir: string, extra: Partial<TrainConfig> = {}): TrainConfig => smallOn(dataFile, outDir, extra);
const quiet = quietIn(cacheDir);

describe("trainer", () => {
  it("resumes an interrupted run to the same loss at every later step, bit for bit", async () => {
    const whole = await train({ ...quiet, config: small(join(root, "whole")) });
    const first = await train({ ...quiet, config: small(join(root, "split")), stopAfterStep: 3 });
    expect(first.stopped).toBe(true);
    expect(first.losses.map((l) => l.step)).toEqual([1, 2, 3]);
    const rest = await train({ ...quiet, config: small(join(root, "ignored")), resume: join(root, "split") });
    expect(rest.losses.map((l) => l.step)).toEqual([4, 5, 6, 7, 8]);
    expect([...first.losses, ...rest.losses]).toEqual(whole.losses);
    // The run learned something: the last losses are below the first.
    expect(whole.losses[7].loss).toBeLessThan(whole.losses[0].loss);
    expect(rest.summary!.heldout_loss).toBe(whole.summary!.heldout_loss);
  });

  it("writes the summary, chart and a model that `tnl generate` reproduces for the same seed", () => {
    const out = join(root, "whole");
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as Summary;
    for (const key of ["heldout_bits_per_byte", "unigram_bits_per_byte", "heldout_loss", "tokens_per_second", "train_seconds", "steps", "parameters", "backend"]) {
      expect(summary).toHaveProperty(key);
    }
    expect(summary.steps).toBe(8);
    expect(summary.unigram_bits_per_byte).toBeGreaterThan(3);
    expect(readFileSync(join(out, "loss.svg"), "utf8")).toMatch(/^<svg/);
    expect(readFileSync(join(out, "loss.png")).subarray(1, 4).toString()).toBe("PNG");
    const log = readFileSync(join(out, "log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as LogRecord);
    expect(log.filter((r) => r.kind === "train")).toHaveLength(8);

    // The `tnl` command as `pnpm tnl generate` runs it (turbo builds packages/tnl before these tests).
    const cli = join(import.meta.dirname, "..", "..", "..", "packages", "tnl", "dist", "cli.js");
    expect(existsSync(cli), `${cli} is missing: build packages/tnl first`).toBe(true);
    const config = small(out);
    const printed = execFileSync(process.execPath, [cli, "generate", "--model", join(out, "model"), "--tokenizer", join(out, "model", "tokenizer.json"),
      "--prompt", config.samplePrompt, "--max-tokens", String(config.sampleTokens), "--temperature", String(config.sampleTemperature),
      "--top-p", String(config.sampleTopP), "--seed", String(config.seed)], { encoding: "utf8" });
    // It prints the prompt, then the continuation: the sample's full text.
    expect(printed.replace(/\n$/, "")).toBe(summary.samples[0]);
  });

  it("rejects bad configs with the key, what was expected and what came", () => {
    expect(() => resolveConfig({ overrides: { stepz: 3 } })).toThrow(/command line: unknown key "stepz"/);
    // Command-line values are named by the flag the user typed, defaults as defaults.
    expect(() => resolveConfig({ overrides: { batchSize: -2 } })).toThrow(/--batch-size expected a positive integer, got -2/);
    expect(() => resolveConfig({ overrides: { backend: "tpu" } })).toThrow(/--backend expected one of "cpu", "cuda", "webgpu", got "tpu"/);
    expect(() => resolveConfig({ overrides: { "model.numHeads": 3 } })).toThrow(/--heads 3 must divide --d-model \(default 128\)/);
    expect(() => resolveConfig({ overrides: { steps: 5 } })).toThrow(/^config: --warmup \(default 20\) must be below --steps 5$/);
    expect(resolveConfig({ overrides: { steps: 5, warmupSteps: 2 } }).steps).toBe(5);
    const toml = join(root, "bad.toml");
    writeFileSync(toml, "steps = 10\n[model]\ndModel = 'wide'\n");
    expect(() => resolveConfig({ file: toml })).toThrow(/bad.toml: "model.dModel" expected a positive integer, got "wide"/);
    writeFileSync(toml, "steps = = 10\n");
    expect(() => resolveConfig({ file: toml })).toThrow(/bad.toml: not valid TOML/);
    writeFileSync(toml, "steps = 10\nwarmupSteps = 10\n");
    expect(() => resolveConfig({ file: toml })).toThrow(/"warmupSteps" \(10, from .*bad.toml\) must be below "steps" \(10, from .*bad.toml\)/);
    const good = join(root, "good.toml");
    writeFileSync(good, "steps = 40\nlr = 0.001\n[model]\nnumLayers = 3\n");
    const c = resolveConfig({ file: good, overrides: { steps: 50 } });
    expect([c.steps, c.lr, c.model.numLayers]).toEqual([50, 0.001, 3]);
    expect(() => resolveConfig({ file: join(root, "missing.json") })).toThrow(ConfigError);
  });

  it("formats the time left without a 60th second or minute", () => {
    expect([0, 9.4, 59.4, 59.6, 60, 65, 299.4, 299.6, 3599.4, 3599.6, 3600, 7199, 7230].map(formatDuration)).toEqual(
      ["0s", "9s", "59s", "1m00s", "1m00s", "1m05s", "4m59s", "5m00s", "59m59s", "1h00m", "1h00m", "2h00m", "2h01m"],
    );
    // cli-progress passes "NULL" or "INF" before it can estimate.
    expect([Number("NULL"), Infinity, -1].map(formatDuration)).toEqual(["?", "?", "?"]);
  });

  it("labels the held-out figure of the progress line as a subset", () => {
    expect(progressHeldout({ loss: 1.5, bitsPerByte: 2.25, tokens: 4064 })).toBe("1.500 (2.25 bits/byte, subset of 4,064 tokens)");
  });

  it("reports a missing data path and an unwritable output directory", async () => {
    await expect(train({ ...quiet, config: { ...small(join(root, "x")), data: [join(root, "nope.txt")] } })).rejects.toThrow(/data: .*nope\.txt does not exist/);
    const file = join(root, "a-file");
    writeFileSync(file, "");
    await expect(train({ ...quiet, config: small(join(file, "out")) })).rejects.toThrow(/outDir: cannot write to .*a-file\/out/);
  });

  it("refuses a corrupt checkpoint with a clear error and leaves the earlier one intact", async () => {
    const out = join(root, "corrupt");
    await train({ ...quiet, config: small(out, { checkpointInterval: 2 }), stopAfterStep: 4 });
    const latest = (JSON.parse(readFileSync(join(out, "checkpoints", "latest.json"), "utf8")) as { dir: string }).dir;
    expect(latest).toBe("step-000004");
    const weights = join(out, "checkpoints", latest, "model", "model.safetensors");
    truncateSync(weights, 100);
    await expect(train({ ...quiet, config: small(out), resume: out })).rejects.toThrow(/resume: checkpoint .*step-000004 cannot be loaded: .*model\.safetensors/);
    // The previous checkpoint is untouched and resumable.
    const previous = join(out, "checkpoints", "step-000002");
    expect(existsSync(join(previous, "trainer.json"))).toBe(true);
    const resumed = await train({ ...quiet, config: small(out), resume: previous, stopAfterStep: 3 });
    expect(resumed.losses.map((l) => l.step)).toEqual([3]);
    writeFileSync(join(out, "checkpoints", "latest.json"), "{not json");
    await expect(train({ ...quiet, config: small(out), resume: out })).rejects.toThrow(/latest\.json is corrupt/);
  });
});
