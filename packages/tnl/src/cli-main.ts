/**
 * The `tnl` command, as a function so tests can run it in-process:
 *
 *   tnl info --model DIR [--json]
 *   tnl logits --model DIR --ids ids.json --out logits.bin [--dtype bf16]
 *   tnl generate --model DIR --prompt-ids '[[1, 2, 3]]' [--max-tokens 32] [--temperature 0.8 --top-p 0.95 --seed 1]
 *   tnl generate --model DIR --prompt "Once upon a time" --tokenizer tokenizer.json [--no-echo] [--dtype bf16]
 *   tnl convert IN OUT            PyTorch .bin (a directory, a file or a shard index) → safetensors
 *   tnl presets [--json]          the published shapes: parameters, bf16 memory, state per sequence
 *
 * --model takes a directory with config.json and safetensors or PyTorch .bin weights (single or
 * sharded), or one weight file in it. Unknown config.json keys are warnings on stderr.
 *
 * --dtype loads the weights in that dtype and computes in it (bf16 weights stored as BF16 are taken
 * bit for bit; f32 ones are rounded once); the default depends on the backend and the checkpoint
 * (load-dtype.ts: bf16 on cuda for bf16/f16 checkpoints, f16 on webgpu with shader-f16, else f32).
 *
 * With --prompt, generate prints the prompt and then its continuation, as a text-generation
 * pipeline returns the full text; --no-echo prints the continuation alone.
 */
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { endianness } from "node:os";
import { getBackend, SafetensorsError } from "@lightning-ts/tensor";
import { loadTokenizerFile, TokenizerError } from "@lightning-ts/tokenizer";
import { Command, CommanderError, InvalidArgumentError } from "commander";
import { inspectCheckpoint, loadCheckpoint, TnlCheckpointError } from "./checkpoint.js";
import { headDim, parameterCount, stateBytesPerSequence, TnlConfigError, type TnlConfig } from "./config.js";
import { convertCheckpoint } from "./convert.js";
import { publishedModels } from "./published.js";
import { TorchFileError } from "./torch/zip.js";
import { generate, type GenerateOptions } from "./generate.js";
import { TnlInputError } from "./errors.js";
import { forward } from "./model.js";
import { disposeParams } from "./params.js";
import { defaultLoadDType, LOAD_DTYPE_HELP } from "./load-dtype.js";
import { resolveDType } from "./precision.js";

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const processIO: CliIO = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

/** Errors we report as one line; anything else is a bug and keeps its stack. */
const EXPECTED = [TnlConfigError, TnlCheckpointError, TnlInputError, SafetensorsError, TorchFileError, TokenizerError, InvalidArgumentError];

/** Config warnings go to stderr, one line each. */
const warnTo = (io: CliIO) => ({ warn: (message: string) => io.stderr(`tnl: warning: ${message}\n`) });

function number(name: string, check: (x: number) => boolean, what: string) {
  return (value: string): number => {
    const x = Number(value);
    if (value.trim() === "" || !check(x)) throw new InvalidArgumentError(`${name} must be ${what}, got ${JSON.stringify(value)}`);
    return x;
  };
}
const nonNegInt = (name: string) => number(name, (x) => Number.isInteger(x) && x >= 0, "a non-negative integer");
const posInt = (name: string) => number(name, (x) => Number.isInteger(x) && x > 0, "a positive integer");
const nonNeg = (name: string) => number(name, (x) => x >= 0 && Number.isFinite(x), "a non-negative number");
const finite = (name: string) => number(name, Number.isFinite, "a number");
const idList = (value: string): number[] => value.split(",").filter((s) => s.trim() !== "").map(nonNegInt("--stop-ids entry"));

/** Token ids from JSON text: an array of equal-length rows (a flat array is one row). */
function parseIds(text: string, source: string): number[][] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TnlInputError(`${source}: not valid JSON (${(err as Error).message})`);
  }
  const rows = Array.isArray(json) && json.length > 0 && !Array.isArray(json[0]) ? [json] : json;
  if (!Array.isArray(rows) || rows.length === 0 || !rows.every((r) => Array.isArray(r) && r.every((x) => Number.isInteger(x)))) {
    throw new TnlInputError(`${source}: expected a JSON array of arrays of integer token ids`);
  }
  return rows as number[][];
}

async function readIds(pathOrJson: string, flag: string): Promise<number[][]> {
  if (pathOrJson.trim().startsWith("[")) return parseIds(pathOrJson, flag);
  if (!existsSync(pathOrJson)) throw new TnlInputError(`${flag}: file ${pathOrJson} does not exist`);
  return parseIds(await readFile(pathOrJson, "utf8"), pathOrJson);
}

function describe(c: TnlConfig): string {
  const lrpe = c.lrpe.flatMap((on, l) => (on ? [l] : []));
  const scale = c.noScaleEmbedding ? 1 : Math.sqrt(c.dModel);
  return (
    `vocab ${c.vocabSize}, d_model ${c.dModel}, ${c.numLayers} layers, ${c.numHeads} heads (head dim ${headDim(c)}), ` +
    `hidden ${c.hiddenDim}, glu ${c.gluDim}, act ${c.activation}, LRPE layers [${lrpe.join(", ")}], ` +
    `embed scale ${Number(scale.toFixed(4))}, lm_head ${c.tieWordEmbeddings ? "tied" : "untied"}`
  );
}

const fmtBytes = (n: number) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(2)} MiB` : `${(n / 2 ** 10).toFixed(1)} KiB`);

async function info(opts: { model: string; json?: boolean }, io: CliIO): Promise<void> {
  const { config, files, bytes, dtypes } = await inspectCheckpoint(opts.model, warnTo(io));
  const params = parameterCount(config);
  const summary = {
    model: opts.model,
    config: describe(config),
    parameters: params,
    files,
    fileBytes: bytes,
    storedDtypes: dtypes,
    /** What logits and generate load the weights in on this backend without --dtype. */
    loadDtype: defaultLoadDType(getBackend(), dtypes),
    memoryBytes: { f32: params * 4, bf16: params * 2 },
    stateBytesPerSequence: stateBytesPerSequence(config),
  };
  if (opts.json) {
    io.stdout(JSON.stringify(summary) + "\n");
    return;
  }
  io.stdout(
    [
      `model       ${opts.model}`,
      `config      ${summary.config}`,
      `parameters  ${params.toLocaleString("en-US")} (${params >= 1e9 ? `${(params / 1e9).toFixed(2)}B` : `${(params / 1e6).toFixed(2)}M`})`,
      `weights     ${files.length} file(s), ${fmtBytes(bytes)} on disk, stored as ${dtypes.join("/")}; loaded as ${summary.loadDtype} on ${getBackend().name} unless --dtype says otherwise`,
      `memory      ${fmtBytes(params * 4)} in f32, ${fmtBytes(params * 2)} in bf16; recurrent state ${fmtBytes(summary.stateBytesPerSequence)} per sequence, any length`,
    ].join("\n") + "\n",
  );
}

async function logits(opts: { model: string; ids: string; out: string; blockSize?: number; dtype?: string }, io: CliIO): Promise<void> {
  const dtype = opts.dtype === undefined ? undefined : resolveDType(getBackend(), opts.dtype);
  if (!existsSync(opts.ids)) throw new TnlInputError(`--ids: file ${opts.ids} does not exist`);
  const ids = parseIds(await readFile(opts.ids, "utf8"), opts.ids);
  const model = await loadCheckpoint(opts.model, { dtype, ...warnTo(io) });
  try {
    const out = forward(model.params, model.config, ids, { blockSize: opts.blockSize });
    const data = (await out.data()) as Float32Array;
    const shape = [...out.shape];
    out.dispose();
    if (endianness() !== "LE") throw new Error("tnl logits writes little-endian float32 and needs a little-endian host");
    await writeFile(opts.out, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    io.stdout(JSON.stringify({ shape, dtype: "float32", out: opts.out }) + "\n");
  } finally {
    disposeParams(model.params);
  }
}

interface GenerateFlags {
  model: string;
  promptIds?: string;
  prompt?: string;
  tokenizer?: string;
  maxTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  seed: number;
  stopIds?: number[];
  json?: boolean;
  /** Print the prompt text before the continuation (default; --no-echo turns it off). */
  echo: boolean;
  dtype?: string;
}

async function runGenerate(opts: GenerateFlags, io: CliIO): Promise<void> {
  const dtype = opts.dtype === undefined ? undefined : resolveDType(getBackend(), opts.dtype);
  if ((opts.promptIds === undefined) === (opts.prompt === undefined)) throw new TnlInputError("give exactly one of --prompt-ids and --prompt");
  if (opts.prompt !== undefined && opts.tokenizer === undefined) throw new TnlInputError("--prompt needs --tokenizer FILE (a tokenizer.json)");
  if (opts.tokenizer !== undefined && !existsSync(opts.tokenizer)) throw new TnlInputError(`--tokenizer: file ${opts.tokenizer} does not exist`);
  const tokenizer = opts.tokenizer ? await loadTokenizerFile(opts.tokenizer) : undefined;
  const model = await loadCheckpoint(opts.model, { dtype, ...warnTo(io) });
  try {
    let prompt: number[][];
    if (opts.prompt !== undefined) {
      const ids = tokenizer!.encode(opts.prompt);
      prompt = [model.config.addBosToken ? [model.config.bosTokenId, ...ids] : ids];
      if (prompt[0].length === 0) throw new TnlInputError("--prompt encodes to no tokens");
    } else {
      prompt = await readIds(opts.promptIds!, "--prompt-ids");
    }
    const options: GenerateOptions = {
      maxTokens: opts.maxTokens,
      seed: opts.seed,
      temperature: opts.temperature,
      topK: opts.topK,
      topP: opts.topP,
      minP: opts.minP,
      repetitionPenalty: opts.repetitionPenalty,
      frequencyPenalty: opts.frequencyPenalty,
      presencePenalty: opts.presencePenalty,
      stopIds: opts.stopIds,
    };
    const ids = prompt.map(() => [] as number[]);
    const finish = prompt.map(() => "length");
    const decoder = tokenizer && !opts.json ? tokenizer.decoder() : undefined;
    if (decoder && opts.echo && opts.prompt !== undefined) io.stdout(opts.prompt);
    for await (const ev of generate(model, prompt, options)) {
      ids[ev.row].push(ev.token);
      if (ev.finishReason) finish[ev.row] = ev.finishReason;
      if (opts.json) io.stdout(JSON.stringify(ev) + "\n");
      else if (decoder && !(ev.finishReason === "stop")) io.stdout(decoder.push(ev.token));
    }
    if (decoder) io.stdout(decoder.end() + "\n");
    else if (!opts.json) io.stdout(JSON.stringify({ ids, finish }) + "\n");
  } finally {
    disposeParams(model.params);
  }
}

async function convert(input: string, out: string, io: CliIO): Promise<void> {
  const r = await convertCheckpoint(input, out, warnTo(io));
  io.stdout(
    `wrote ${r.files.join(", ")} to ${out}: ${r.tensors} tensors, ${fmtBytes(r.bytes)} of ${r.dtypes.join("/")}` +
      `${r.copied.length > 0 ? `; copied ${r.copied.join(", ")}` : ""}\n`,
  );
}

function presets(opts: { json?: boolean }, io: CliIO): void {
  const models = publishedModels();
  if (opts.json) {
    io.stdout(JSON.stringify(models) + "\n");
    return;
  }
  const rows = models.map((m) => [
    m.name,
    `${m.dModel}×${m.numLayers}L×${m.numHeads}H, glu ${m.gluDim}, vocab ${m.vocabSize}`,
    m.parameters >= 1e9 ? `${(m.parameters / 1e9).toFixed(2)}B` : `${(m.parameters / 1e6).toFixed(0)}M`,
    fmtBytes(m.bf16Bytes),
    fmtBytes(m.stateBytesPerSequence),
    [m.title, m.files, m.note].filter(Boolean).join("; "),
  ]);
  const head = ["preset", "shape", "params", "bf16", "state/seq", "published as"];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((x, i) => (i === r.length - 1 ? x : x.padEnd(width[i]))).join("  ");
  io.stdout([line(head), ...rows.map(line)].join("\n") + "\n");
}

function program(io: CliIO): Command {
  const cmd = new Command("tnl")
    .description("TransNormerLLM on lightning-ts: inspect checkpoints, compute logits, generate text")
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
  const withModel = (c: Command) => c.requiredOption("--model <dir>", "Hugging Face TNL directory (config.json + safetensors or pytorch_model*.bin), or a weight file in it");
  const withDType = (c: Command) => c.option("--dtype <dtype>", `weights and compute in ${LOAD_DTYPE_HELP}`);

  withModel(cmd.command("info").description("config summary, parameter count and memory"))
    .option("--json", "print JSON")
    .action((opts: Parameters<typeof info>[0]) => info(opts, io));

  withDType(withModel(cmd.command("logits").description("write float32 little-endian logits [B, T, V] for token ids")))
    .requiredOption("--ids <file>", "JSON array of equal-length arrays of token ids")
    .requiredOption("--out <file>", "output .bin file")
    .option("--block-size <n>", "Lightning Attention block size", posInt("--block-size"))
    .action((opts: Parameters<typeof logits>[0]) => logits(opts, io));

  withDType(withModel(cmd.command("generate").description("generate tokens (ids as JSON, or text with --tokenizer)")))
    .option("--prompt-ids <json|file>", "prompt ids: JSON array of equal-length arrays, or a file holding one")
    .option("--prompt <text>", "prompt text (needs --tokenizer)")
    .option("--tokenizer <file>", "tokenizer file (tokenizer.json, .model or .tiktoken)")
    .option("--max-tokens <n>", "new tokens per row", nonNegInt("--max-tokens"), 64)
    .option("--temperature <t>", "0 = greedy (default)", nonNeg("--temperature"))
    .option("--top-k <k>", "keep the k most likely tokens", posInt("--top-k"))
    .option("--top-p <p>", "nucleus sampling", number("--top-p", (x) => x > 0 && x <= 1, "in (0, 1]"))
    .option("--min-p <p>", "drop tokens below p × the top probability", number("--min-p", (x) => x >= 0 && x <= 1, "in [0, 1]"))
    .option("--repetition-penalty <r>", "HF repetition penalty (1 = off)", number("--repetition-penalty", (x) => x > 0 && Number.isFinite(x), "a positive number"))
    .option("--frequency-penalty <f>", "subtract f × count of each generated token", finite("--frequency-penalty"))
    .option("--presence-penalty <p>", "subtract p from each token generated before", finite("--presence-penalty"))
    .option("--seed <n>", "random seed", nonNegInt("--seed"), 0)
    .option("--stop-ids <ids>", "comma-separated stop ids (default: the config's eos; '' for none)", idList)
    .option("--json", "print one JSON line per token event")
    .option("--no-echo", "with --prompt: print only the continuation, not the prompt before it")
    .action((opts: GenerateFlags) => runGenerate(opts, io));

  cmd
    .command("convert")
    .description("PyTorch .bin checkpoint (single or sharded) to safetensors, dtypes kept; config.json and tokenizer files copied")
    .argument("<in>", "directory with config.json and pytorch_model.bin (or pytorch_model.bin.index.json + shards), or one of those files")
    .argument("<out>", "output directory")
    .action((input: string, out: string) => convert(input, out, io));

  cmd
    .command("presets")
    .description("the published TNL shapes: parameters, bf16 memory, recurrent state per sequence")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) => presets(opts, io));
  return cmd;
}

/**
 * Runs the command line `argv` (without `node` and the script) and returns the exit code.
 *
 * @example
 * const code = await main(["info", "--model", "TransNormerLLM-1B"]);
 */
export async function main(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  try {
    await program(io).parseAsync([...argv], { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode; // commander already printed the message (or help)
    if (EXPECTED.some((E) => err instanceof E) || (err as NodeJS.ErrnoException).code === "ENOENT") {
      io.stderr(`tnl: ${(err as Error).message}\n`);
      return 1;
    }
    io.stderr(`tnl: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return 2;
  }
}
