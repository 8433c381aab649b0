/**
 * The `tokenizer` command: train a byte-level BPE tokenizer, encode a text file to a JSON array of
 * ids, decode such an array back to text.
 *
 *   tokenizer train --data a.txt b.txt --vocab-size 8000 --out tokenizer.json --special "<|endoftext|>"
 *   tokenizer encode --tokenizer tokenizer.json --in text.txt --out ids.json
 *   tokenizer decode --tokenizer tokenizer.json --ids ids.json
 */
import { createReadStream, createWriteStream } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { Command, InvalidArgumentError } from "commander";
import { saveTokenizerJson } from "./hf.js";
import { loadTokenizerFile } from "./load.js";
import { lastSafeCut } from "./tokenizer.js";
import { BpeTrainer } from "./train.js";
import { TokenizerError } from "./errors.js";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

function specialPair(value: string, previous: Record<string, number> = {}): Record<string, number> {
  const at = value.lastIndexOf("=");
  const id = Number(value.slice(at + 1));
  if (at <= 0 || !Number.isInteger(id)) throw new InvalidArgumentError(`expected TOKEN=ID, got ${JSON.stringify(value)}`);
  return { ...previous, [value.slice(0, at)]: id };
}

/**
 * Builds the command; `cli.ts` runs it on process.argv, tests run it on their own arguments. Usage
 * errors throw (a CommanderError carrying the exit code) instead of exiting the process.
 */
export function tokenizerProgram(): Command {
  const program = new Command("tokenizer").description("Train, encode and decode with lightning-ts tokenizers.").exitOverride();

  program
    .command("train")
    .description("train a byte-level BPE tokenizer and write tokenizer.json")
    .requiredOption("--data <files...>", "training text files (UTF-8)")
    .requiredOption("--vocab-size <n>", "vocabulary size, bytes and special tokens included", positiveInt)
    .requiredOption("--out <file>", "where to write tokenizer.json")
    .option("--special <tokens...>", "special tokens (given the first ids)", [])
    .option("--pattern <regex>", "pre-tokenizer split pattern (default GPT-2's)")
    .option("--min-frequency <n>", "least count of a pair to merge", positiveInt, 2)
    .action(async (opts: { data: string[]; vocabSize: number; out: string; special: string[]; pattern?: string; minFrequency: number }) => {
      const trainer = new BpeTrainer({ vocabSize: opts.vocabSize, specialTokens: opts.special, pattern: opts.pattern, minFrequency: opts.minFrequency });
      for (const file of opts.data) {
        // Feed in newline-aligned chunks so a large file never has to sit in memory whole.
        let pending = "";
        for await (const chunk of createReadStream(file, { encoding: "utf8" })) {
          pending += chunk;
          const cut = lastSafeCut(pending);
          if (cut > 0) {
            trainer.feed(pending.slice(0, cut));
            pending = pending.slice(cut);
          }
        }
        trainer.feed(pending);
      }
      const tok = trainer.train();
      await writeFile(opts.out, saveTokenizerJson(tok));
      process.stderr.write(`wrote ${opts.out}: ${tok.vocabSize} tokens, ${tok.model.merges.size} merges\n`);
    });

  const tiktokenOptions = (cmd: Command) =>
    cmd
      .option("--pattern <name-or-regex>", "split pattern for .tiktoken files (default cl100k_base)")
      .option("--special <token=id...>", "special tokens for .tiktoken files", specialPair);

  tiktokenOptions(
    program
      .command("encode")
      .description("encode a text file to a JSON array of ids")
      .requiredOption("--tokenizer <file>", "tokenizer.json, SentencePiece .model or .tiktoken file")
      .requiredOption("--in <file>", "text file to encode")
      .option("--out <file>", "output file (default stdout)")
      .option("--add-special-tokens", "add the model's BOS/EOS template", false),
  ).action(async (opts: { tokenizer: string; in: string; out?: string; addSpecialTokens: boolean; pattern?: string; special?: Record<string, number> }) => {
    const tok = await loadTokenizerFile(opts.tokenizer, { pattern: opts.pattern, specialTokens: opts.special });
    const out = opts.out ? createWriteStream(opts.out) : process.stdout;
    const { prefix, suffix } = tok.model.template;
    let first = true;
    const write = (ids: number[]) => {
      if (ids.length === 0) return;
      out.write((first ? "" : ",") + ids.join(","));
      first = false;
    };
    out.write("[");
    if (opts.addSpecialTokens) write(prefix);
    for await (const ids of tok.encodeStream(createReadStream(opts.in))) write(ids);
    if (opts.addSpecialTokens) write(suffix);
    out.write("]\n");
    if (out !== process.stdout) await new Promise<void>((done, error) => (out as ReturnType<typeof createWriteStream>).end((e?: Error | null) => (e ? error(e) : done())));
  });

  tiktokenOptions(
    program
      .command("decode")
      .description("decode a JSON array of ids to text")
      .requiredOption("--tokenizer <file>", "tokenizer.json, SentencePiece .model or .tiktoken file")
      .requiredOption("--ids <file>", "JSON array of token ids")
      .option("--out <file>", "output file (default stdout)")
      .option("--skip-special-tokens", "leave special tokens out", false),
  ).action(async (opts: { tokenizer: string; ids: string; out?: string; skipSpecialTokens: boolean; pattern?: string; special?: Record<string, number> }) => {
    const tok = await loadTokenizerFile(opts.tokenizer, { pattern: opts.pattern, specialTokens: opts.special });
    let ids: unknown;
    try {
      ids = JSON.parse(await readFile(opts.ids, "utf8"));
    } catch (e) {
      throw new TokenizerError(`--ids: expected a JSON array of ids, got a parse error: ${(e as Error).message}`);
    }
    if (!Array.isArray(ids)) throw new TokenizerError(`--ids: expected a JSON array of ids, got ${typeof ids}`);
    const text = tok.decode(ids as number[], { skipSpecialTokens: opts.skipSpecialTokens });
    if (opts.out) await writeFile(opts.out, text);
    else process.stdout.write(text);
  });

  return program;
}
