#!/usr/bin/env node
/**
 * `pnpm train [options]`: train a TNL from scratch. With no options it runs the default
 * configuration: Moby-Dick, a 2,048-token BPE tokenizer, a 4-layer TNL, about five minutes on two
 * cores, and writes everything to runs/default/.
 *
 * `pnpm train prepare --input FILES… --out DIR (--tokenizer FILE | --train-tokenizer N)` tokenises a
 * corpus into token shards once; `pnpm train --data DIR` then trains on them.
 */
import { Command, InvalidArgumentError } from "commander";
import { CLI_FLAGS, ConfigError, resolveConfig } from "./config.js";
import { DataError } from "./data.js";
import { PREPARE_DEFAULTS, prepare } from "./prepare.js";
import { train } from "./train.js";

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`expected an integer, got "${v}"`);
  return n;
};
const num = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`expected a number, got "${v}"`);
  return n;
};
const PARSE = { int, number: num, string: undefined, strings: undefined, flag: undefined };

/** Expected failures carry a complete message; LIGHTNING_DEBUG=1 adds the stack for anything else. */
function report(command: string, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${command}: ${message}\n`);
  if (process.env.LIGHTNING_DEBUG && err instanceof Error && !(err instanceof ConfigError) && !(err instanceof DataError)) process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
}

const program = new Command("train")
  .description("Train a TransNormerLLM from scratch: tokenizer, model, held-out evaluation, checkpoints, loss chart, samples.")
  .option("--config <file>", "a JSON or TOML file of settings (flags win over it)")
  .option("--resume <dir>", "continue the run in <dir> (or that checkpoint) exactly where it stopped")
  .option("--no-progress", "no progress bar")
  .option("--init-from <dir>", "start from the weights of this model directory (Hugging Face layout, e.g. another run's init/ or model/) instead of a fresh initialisation; the model settings must match its config.json")
  .option("--save-init", "write the initial weights, before step 1, to <out>/init/ (config.json, model.safetensors, tokenizer.json, trainer-config.json): a model the official PyTorch TNL code loads")
  .option("--dump-batches <file>", "write the token ids of every step's batch to <file> (little-endian uint32, rows × (seq-len + 1) per step; <file>.json describes it)")
  .option("--profile <file>", "profile the second step of this run op by op: the table on stderr, the JSON to <file>")
  // Options after "prepare" are prepare's own (both commands have --out and --tokenizer).
  .enablePositionalOptions()
  .showHelpAfterError();
for (const { flag, help, type } of CLI_FLAGS) {
  const parse = PARSE[type];
  if (parse) program.option(flag, help, parse);
  else program.option(flag, help);
}

program.action(async (opts: Record<string, unknown>) => {
  const overrides: Record<string, unknown> = {};
  for (const { flag, key, type, value } of CLI_FLAGS) {
    const name = flag.split(" ")[0].slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (opts[name] !== undefined) overrides[key] = type === "flag" ? value : opts[name];
  }
  try {
    const config = resolveConfig({ file: opts.config as string | undefined, overrides });
    const controller = new AbortController();
    let interrupts = 0;
    process.on("SIGINT", () => {
      // The first Ctrl-C finishes the step and saves a checkpoint; a second one quits at once.
      if (++interrupts > 1) process.exit(130);
      process.stderr.write("\nCtrl-C: finishing this step and saving a checkpoint (press again to quit at once)\n");
      controller.abort();
    });
    const resumeOverrides: Record<string, unknown> = {};
    if (overrides.steps !== undefined) resumeOverrides.steps = overrides.steps;
    if (overrides.timeLimitSeconds !== undefined) resumeOverrides.timeLimitSeconds = overrides.timeLimitSeconds;
    const result = await train({
      config,
      resume: opts.resume as string | undefined,
      resumeOverrides,
      signal: controller.signal,
      progress: opts.progress !== false,
      initFrom: opts.initFrom as string | undefined,
      saveInit: opts.saveInit === true,
      dumpBatches: opts.dumpBatches as string | undefined,
      profile: opts.profile as string | undefined,
    });
    process.exitCode = result.summary === null ? 130 : 0;
  } catch (err) {
    report("train", err);
  }
  // Worker threads of the CPU matmul are unref'd; nothing else keeps the process alive.
});

program
  .command("prepare")
  .description("Tokenise a corpus once into token shards (uint16 or uint32) and an index.json; train on them with --data DIR.")
  .requiredOption("--input <paths...>", "text files, JSONL files (.jsonl) or directories of .txt, .md and .jsonl files")
  .requiredOption("--out <dir>", "directory to write the shards, index.json and the tokenizer to")
  .option("--tokenizer <file>", "the tokenizer to use (tokenizer.json, .model or .tiktoken)")
  .option("--train-tokenizer <vocab-size>", "train a byte-level BPE tokenizer of this size on the training split instead", int)
  .option("--jsonl-field <name>", "the field of a JSONL record that holds its text", PREPARE_DEFAULTS.jsonlField)
  .option("--heldout-fraction <x>", "fraction of the input bytes, at the end, held out for evaluation", num, PREPARE_DEFAULTS.heldoutFraction)
  .option("--shard-tokens <n>", "tokens per shard file", int, PREPARE_DEFAULTS.shardTokens)
  .option("--tokenizer-sample-mb <n>", "MiB of the training split a tokenizer is trained on, at most", num, PREPARE_DEFAULTS.tokenizerSampleBytes / 2 ** 20)
  .action(async (opts: { input: string[]; out: string; tokenizer?: string; trainTokenizer?: number; jsonlField: string; heldoutFraction: number; shardTokens: number; tokenizerSampleMb: number }) => {
    try {
      await prepare({ ...opts, inputs: opts.input, tokenizerSampleBytes: opts.tokenizerSampleMb * 2 ** 20 });
    } catch (err) {
      report("train prepare", err);
    }
  });

await program.parseAsync(process.argv);
