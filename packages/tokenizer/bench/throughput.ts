/**
 * Encoding throughput on the Moby-Dick corpus (1.2 MB): ours against established implementations of
 * the same vocabulary. Exported for `apps/bench`; every encoder is checked to give the same ids
 * before it is timed, so a fast wrong answer cannot pass as a result.
 */
import { encode as gptTokenizerCl100k } from "gpt-tokenizer/encoding/cl100k_base";
import { Tiktoken } from "js-tiktoken/lite";
import cl100kRanks from "js-tiktoken/ranks/cl100k_base";
import llama from "llama-tokenizer-js";
import { loadTiktoken, loadTokenizerJson } from "../src/index.js";
import { corpus, llamaTokenizerJson, tiktokenFile } from "../test/helpers.js";

export interface ThroughputRow {
  vocabulary: string;
  implementation: string;
  /** Megabytes (10^6 bytes) of UTF-8 input encoded per second, best of the timed runs. */
  mbPerSecond: number;
  tokens: number;
}

export interface ThroughputOptions {
  /** Timed runs per encoder after one untimed warm-up run (which also fills word caches). Default 3. */
  runs?: number;
  /** Text to encode; default the whole corpus. */
  text?: string;
}

function time(encode: (text: string) => number[], text: string, runs: number): { mbPerSecond: number; ids: number[] } {
  const bytes = new TextEncoder().encode(text).length;
  let ids = encode(text);
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    ids = encode(text);
    best = Math.min(best, performance.now() - start);
  }
  return { mbPerSecond: bytes / 1e6 / (best / 1000), ids };
}

/**
 * Measures MB/s of encoding for cl100k_base (ours vs gpt-tokenizer and js-tiktoken) and LLaMA's
 * SentencePiece vocabulary (ours vs llama-tokenizer-js).
 *
 * @example
 * for (const row of measureThroughput()) console.log(row.vocabulary, row.implementation, row.mbPerSecond.toFixed(2));
 */
export function measureThroughput(options: ThroughputOptions = {}): ThroughputRow[] {
  const runs = options.runs ?? 3;
  const text = options.text ?? corpus();
  const groups: [string, [string, (t: string) => number[]][]][] = [];

  const cl100k = loadTiktoken(tiktokenFile("cl100k_base"), { pattern: "cl100k_base" });
  const jsTiktoken = new Tiktoken(cl100kRanks);
  groups.push([
    "cl100k_base",
    [
      ["@lightning-ts/tokenizer", (t) => cl100k.encode(t)],
      ["gpt-tokenizer", (t) => gptTokenizerCl100k(t)],
      ["js-tiktoken", (t) => jsTiktoken.encode(t)],
    ],
  ]);

  const llamaOurs = loadTokenizerJson(llamaTokenizerJson());
  groups.push([
    "llama (SentencePiece BPE, 32k)",
    [
      ["@lightning-ts/tokenizer", (t) => llamaOurs.encode(t)],
      ["llama-tokenizer-js", (t) => llama.encode(t, false, true)],
    ],
  ]);

  const rows: ThroughputRow[] = [];
  for (const [vocabulary, encoders] of groups) {
    let reference: number[] | undefined;
    for (const [implementation, encode] of encoders) {
      const { mbPerSecond, ids } = time(encode, text, runs);
      reference ??= ids;
      if (ids.length !== reference.length || ids.some((id, i) => id !== reference![i])) {
        throw new Error(`${implementation} disagrees with @lightning-ts/tokenizer on ${vocabulary}; not timing a different answer`);
      }
      rows.push({ vocabulary, implementation, mbPerSecond, tokens: ids.length });
    }
  }
  return rows;
}
