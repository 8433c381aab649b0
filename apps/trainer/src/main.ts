#!/usr/bin/env node
/**
 * `pnpm train [options]`: train a TNL from scratch. With no options it runs the default
 * configuration: Moby-Dick, a 2,048-token BPE tokenizer, a 4-layer TNL, about five minutes on two
 * cores, and writes everything to runs/default/.
 *
 * `pnpm train prepare --input FILES… --out DIR (--tokenizer FILE | --train-tokenizer N)` tokenises a
 * corpus into token shards once; `pnpm train --data DIR` then trains on them.
 *
 * `pnpm train --gpus N …` starts N ranks of this same script (launch.ts) and watches them; a process
 * started with RANK in its environment is one of those ranks (group.ts).
 */
import { Command, InvalidArgumentError } from "commander";
import { findCheckpoint, readTrainerState } from "./checkpoint.js";
import { CLI_FLAGS, ConfigError, resolveConfig } from "./config.js";
import { DataError } from "./data.js";
import { dryRun, groupBackendProblem } from "./distributed.js";
import { GroupError, joinGroup, rankEnv, type RankEnv, rankLabel } from "./group.js";
import { freePort, isGroup, launch, LaunchError, launchSpec } from "./launch.js";
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

/** Set when this process is a rank of a group. */
let rank: RankEnv | null = null;

/**
 * Expected failures carry a complete message; LIGHTNING_DEBUG=1 adds the stack for anything else.
 * A rank names itself, unless the launcher already puts its rank before every line it prints.
 */
function report(command: string, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${command}: ${rankLabel(rank)}${message}\n`);
  const expected = err instanceof ConfigError || err instanceof DataError || err instanceof LaunchError || err instanceof GroupError;
  if (process.env.LIGHTNING_DEBUG && err instanceof Error && !expected) process.stderr.write(`${err.stack}\n`);
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
  .option("--gpus <n>", "train on n GPUs of this host, one process each (data parallel; with --sequence-parallel, sequence parallel too)", int)
  .option("--sequence-parallel <n>", "split every sequence over n ranks (the ranks of the group are data parallel × sequence parallel)", int)
  .option("--nnodes <n>", "hosts taking part, each running `pnpm train --gpus N` with the same flags (default 1)", int)
  .option("--node-rank <i>", "this host's index among the --nnodes hosts, 0 for the one that runs rank 0 (default 0)", int)
  .option("--master-addr <host>", "the address of node 0, where rank 0 serves the rendezvous store (default 127.0.0.1; needed with --nnodes)")
  .option("--master-port <port>", "the store's TCP port (default: a free port on one host, 29500 across hosts)", int)
  .option("--rendezvous-timeout <seconds>", "how long a rank waits to reach the store, and for the other ranks at a barrier (default 300)", num)
  .option("--dry-run", "start the group (rendezvous, and the collective on cuda), meet at --steps barriers and stop, without training: checks that every rank reaches the others")
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
    rank = rankEnv(process.env);
    const spec = launchSpec(opts);
    const config = resolveConfig({ file: opts.config as string | undefined, overrides });
    const dry = opts.dryRun === true;
    if (rank === null && isGroup(spec)) {
      // Refused here once rather than by every rank (a resumed run's backend is its checkpoint's).
      const backend = opts.resume ? readTrainerState(findCheckpoint(opts.resume as string)).config.backend : config.backend;
      const problem = dry ? null : groupBackendProblem(backend);
      if (problem) throw new LaunchError(`--gpus ${spec.gpus}${spec.nnodes > 1 ? ` --nnodes ${spec.nnodes}` : ""}: ${problem}`);
      // This process is the launcher: the ranks are this script again, with the same arguments.
      const masterPort = spec.masterPort ?? (await freePort(spec.masterAddr));
      const args = [...process.execArgv, process.argv[1], ...process.argv.slice(2)];
      const { code } = await launch({ spec: { ...spec, masterPort }, command: process.execPath, args });
      process.exitCode = code;
      return;
    }
    if (rank === null && !isGroup(spec) && opts.sequenceParallel !== undefined && opts.sequenceParallel !== 1) {
      throw new LaunchError(`--sequence-parallel ${opts.sequenceParallel as number} splits sequences over the ranks of a group; give --gpus N as well`);
    }
    if (rank === null && !isGroup(spec) && config.zero === 1) {
      throw new LaunchError("--zero 1 shards the optimizer state over the ranks of a group; give --gpus N with N > 1 as well");
    }
    if (rank !== null && spec.gpus !== rank.localWorldSize && opts.gpus !== undefined) {
      throw new LaunchError(`--gpus ${spec.gpus} disagrees with LOCAL_WORLD_SIZE=${rank.localWorldSize} of this rank's environment`);
    }
    const group = rank === null ? null : await joinGroup(rank, opts.rendezvousTimeout === undefined ? {} : { timeoutMs: (opts.rendezvousTimeout as number) * 1000 });
    if (dry) {
      if (group === null) throw new LaunchError("--dry-run checks a group: give it with --gpus N (or start the ranks with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set)");
      await dryRun(group, config.backend, config.steps);
      return;
    }
    const controller = new AbortController();
    let interrupts = 0;
    process.on("SIGINT", () => {
      // The first Ctrl-C finishes the step and saves a checkpoint; a second one quits at once.
      if (++interrupts > 1) process.exit(130);
      // The launcher passes Ctrl-C to every rank; rank 0 says so for the group.
      if (rank === null || rank.rank === 0) process.stderr.write("\nCtrl-C: finishing this step and saving a checkpoint (press again to quit at once)\n");
      controller.abort();
    });
    const resumeOverrides: Record<string, unknown> = {};
    if (overrides.steps !== undefined) resumeOverrides.steps = overrides.steps;
    if (overrides.timeLimitSeconds !== undefined) resumeOverrides.timeLimitSeconds = overrides.timeLimitSeconds;
    // How the optimizer state is laid out over the ranks is the resumed run's choice, like --gpus.
    if (overrides.zero !== undefined) resumeOverrides.zero = overrides.zero;
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
      ...(group ? { group: { group, sequenceParallel: (opts.sequenceParallel as number | undefined) ?? 1 } } : {}),
    });
    // Interrupted: no summary. A rank other than 0 finishing normally has none either.
    process.exitCode = result.stopped && result.summary === null ? 130 : 0;
  } catch (err) {
    report("train", err);
    // A failing rank may hold the store, sockets and device handles that would keep it alive; its peers are waiting for it to go.
    if (rank !== null) process.exit(1);
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
