#!/usr/bin/env node
/**
 * `pnpm train [options]`: train a TNL from scratch. With no options it runs the default
 * configuration: Moby-Dick, a 2,048-token BPE tokenizer, a 4-layer TNL, about five minutes on two
 * cores, and writes everything to runs/default/.
 */
import { Command, InvalidArgumentError } from "commander";
import { CLI_FLAGS, ConfigError, resolveConfig } from "./config.js";
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
const PARSE = { int, number: num, string: undefined, strings: undefined };

const program = new Command("train")
  .description("Train a TransNormerLLM from scratch: tokenizer, model, held-out evaluation, checkpoints, loss chart, samples.")
  .option("--config <file>", "a JSON or TOML file of settings (flags win over it)")
  .option("--resume <dir>", "continue the run in <dir> (or that checkpoint) exactly where it stopped")
  .option("--no-progress", "no progress bar")
  .showHelpAfterError();
for (const { flag, help, type } of CLI_FLAGS) {
  const parse = PARSE[type];
  if (parse) program.option(flag, help, parse);
  else program.option(flag, help);
}

program.action(async (opts: Record<string, unknown>) => {
  const overrides: Record<string, unknown> = {};
  for (const { flag, key } of CLI_FLAGS) {
    const name = flag.split(" ")[0].slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (opts[name] !== undefined) overrides[key] = opts[name];
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
    const result = await train({ config, resume: opts.resume as string | undefined, resumeOverrides, signal: controller.signal, progress: opts.progress !== false });
    process.exitCode = result.summary === null ? 130 : 0;
  } catch (err) {
    // Expected failures (bad config, missing data, corrupt checkpoint…) carry a complete message;
    // LIGHTNING_DEBUG=1 adds the stack for anything else.
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`train: ${message}\n`);
    if (process.env.LIGHTNING_DEBUG && err instanceof Error && !(err instanceof ConfigError)) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  }
  // Worker threads of the CPU matmul are unref'd; nothing else keeps the process alive.
});

await program.parseAsync(process.argv);
