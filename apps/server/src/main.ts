/**
 * `pnpm serve [--model DIR] [--tokenizer FILE] [--backend cpu|webgpu|cuda] [--dtype bf16|f16|f32] [--host H] [--port P]`:
 * loads a TNL checkpoint and its tokenizer and serves them (see server.ts for the routes).
 * Loopback only unless --host says otherwise. SIGTERM or SIGINT: running requests finish, new ones
 * get 503, then the process exits. Run as a package script (`pnpm serve`), the server also drains
 * when pnpm goes away: pnpm passes a signal to the shell it started the script in and exits, and
 * that shell does not pass it on, so without this `kill $!` would orphan the server.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BACKEND_NAMES, type BackendName, createBackend } from "@lightning-ts/backends";
import { setBackend } from "@lightning-ts/tensor";
import { DTYPE_HELP, loadCheckpoint, type ModelDType, resolveDType } from "@lightning-ts/tnl";
import { loadTokenizerFile } from "@lightning-ts/tokenizer";
import { Command, InvalidArgumentError, Option } from "commander";
import { loadChatFormat } from "./chat.js";
import { buildServer } from "./server.js";

const int = (name: string, min = 0) => (v: string) => {
  const x = Number(v);
  if (!Number.isInteger(x) || x < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return x;
};

const multipleOf64 = (name: string) => (v: string) => {
  const x = int(name, 64)(v);
  if (x % 64 !== 0) throw new InvalidArgumentError(`${name} must be a multiple of 64 (the prefix cache's block), got ${x}`);
  return x;
};

/** Starts the backend and makes it the default; returns the dtype to run in on it (checked against it). */
async function start(name: string, dtype: string | undefined): Promise<ModelDType> {
  const backend = await createBackend(name);
  const resolved = resolveDType(backend, dtype);
  setBackend(backend);
  return resolved;
}

/** The parent pid and command name of process `pid`, from /proc (Linux); undefined elsewhere or once it is gone. */
function procInfo(pid: number): { ppid: number; comm: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const close = stat.lastIndexOf(")");
    return { comm: stat.slice(stat.indexOf("(") + 1, close), ppid: Number(stat.slice(close + 2).split(" ")[1]) };
  } catch {
    return undefined;
  }
}

/**
 * Calls `onGone` once the package manager that started this process has exited. Its child is
 * often a shell (`sh -c "node …"`) that outlives it (dash defers a SIGINT until its child
 * exits), so when the parent is a shell the watch is on the shell's parent. Only for package
 * scripts: a server started by a shell script that exits on purpose (`node main.js &`) keeps running.
 */
function watchPackageManager(onGone: () => void): void {
  const parent = process.ppid;
  const info = procInfo(parent);
  const watched = info && /^(sh|dash|bash|zsh|ash|busybox)$/.test(info.comm) ? { pid: info.ppid, parent } : undefined;
  const timer = setInterval(() => {
    const gone = process.ppid !== parent || (watched !== undefined && procInfo(watched.parent)?.ppid !== watched.pid);
    if (!gone) return;
    clearInterval(timer);
    onGone();
  }, 200);
  timer.unref();
}

/** The parsed options (commander types them loosely). */
interface ServeOptions {
  model: string;
  tokenizer?: string;
  backend: BackendName;
  dtype?: string;
  host: string;
  port: number;
  name?: string;
  maxBatch: number;
  maxQueue: number;
  maxTokens: number;
  maxPromptTokens: number;
  prefillChunk: number;
  bodyLimit: number;
  timeout: number;
  prefixCacheMib: number;
  handleStoreMib: number;
  decodePrefill?: number;
  decodePrefillRows?: number;
  decodePrefillBatch?: number;
  log?: boolean;
  apiKey?: string;
  cors?: string;
  web?: string;
}

const program = new Command("serve")
  .description("OpenAI-compatible server for a TransNormerLLM checkpoint, with a playground at /")
  .option("--model <dir>", "Hugging Face TNL directory (config.json + safetensors)", "runs/default/model")
  .option("--tokenizer <file>", "tokenizer file (default: <model>/tokenizer.json)")
  .addOption(new Option("--backend <name>", "compute backend").choices(BACKEND_NAMES).default("cpu"))
  .option("--dtype <dtype>", `weights and compute in ${DTYPE_HELP}`)
  .option("--host <host>", "address to listen on (loopback by default)", "127.0.0.1")
  .option("--port <port>", "port (0: any free port)", int("--port"), 8000)
  .option("--name <id>", "model id shown to clients (default: the model directory's name)")
  .option("--max-batch <n>", "sequences decoded together", int("--max-batch", 1), 32)
  .option("--max-queue <n>", "waiting requests before 429", int("--max-queue", 0), 256)
  .option("--max-tokens <n>", "largest max_tokens a request may ask for", int("--max-tokens", 1), 4096)
  .option("--max-prompt-tokens <n>", "largest prompt in tokens", int("--max-prompt-tokens", 1), 65536)
  .option("--prefill-chunk <n>", "prompt tokens per prefill call, a multiple of 64 (requests wait this long for each other)", multipleOf64("--prefill-chunk"), 128)
  .option("--decode-prefill <n>", "prompts up to n tokens are read by the decode steps instead of a prefill call (default: 32 on cuda, 0 elsewhere)", int("--decode-prefill"))
  .option("--decode-prefill-rows <n>", "prompt tokens a decode step reads beyond one per row, all rows together (default: 16 on cuda, 0 elsewhere)", int("--decode-prefill-rows"))
  .option("--decode-prefill-batch <n>", "most sequences decoding for which a step still reads extra prompt rows (default 64)", int("--decode-prefill-batch"))
  .option("--body-limit <bytes>", "largest request body (larger: 413)", int("--body-limit", 1), 1 << 20)
  .option("--timeout <ms>", "per-request time limit", int("--timeout", 1), 120_000)
  .option("--prefix-cache-mib <n>", "prefix-state cache size (0: off)", int("--prefix-cache-mib"), 256)
  .option("--handle-store-mib <n>", "memory for states behind handles", int("--handle-store-mib"), 256)
  .option("--log", "log every request")
  .option("--web <dir>", "the browser page to serve under /web/ (default: apps/web/dist when it is built; 'none': off)")
  .addOption(new Option("--api-key <key>", "require 'Authorization: Bearer <key>' on the API routes (401 otherwise)").env("LIGHTNING_API_KEY"))
  .option("--cors [origin]", "answer cross-origin requests from this origin (no value: any origin)")
  .action(async (o: ServeOptions) => {
    const modelDir = resolve(o.model);
    if (!existsSync(join(modelDir, "config.json"))) {
      program.error(
        o.model === "runs/default/model"
          ? `serve: no model at ${o.model}: run \`pnpm train\` first (it writes runs/default/model), or pass --model DIR`
          : `serve: no model at ${o.model}: expected a directory with config.json and model.safetensors`,
      );
    }
    const tokenizerPath = resolve(o.tokenizer ?? join(modelDir, "tokenizer.json"));
    if (!existsSync(tokenizerPath)) program.error(`serve: no tokenizer at ${tokenizerPath}: pass --tokenizer FILE`);
    const dtype = await start(o.backend, o.dtype).catch((err: unknown) => program.error(`serve: ${(err as Error).message}`));
    const [model, tokenizer] = await Promise.all([loadCheckpoint(modelDir, { dtype }), loadTokenizerFile(tokenizerPath)]);
    if (tokenizer.vocabSize > model.config.vocabSize) {
      program.error(`serve: the tokenizer has ${tokenizer.vocabSize} tokens but the model only ${model.config.vocabSize}: they do not belong together`);
    }
    const server = buildServer({
      model,
      tokenizer,
      chat: loadChatFormat(tokenizerPath, modelDir),
      modelName: o.name ?? basename(modelDir),
      backendName: o.backend,
      engine: { maxBatch: o.maxBatch, maxQueue: o.maxQueue, prefillChunk: o.prefillChunk, prefixCacheBytes: o.prefixCacheMib * 2 ** 20, decodePrefill: o.decodePrefill, decodePrefillRows: o.decodePrefillRows, decodePrefillBatch: o.decodePrefillBatch },
      limits: { maxTokens: o.maxTokens, maxPromptTokens: o.maxPromptTokens },
      bodyLimit: o.bodyLimit,
      requestTimeoutMs: o.timeout,
      handleStoreBytes: o.handleStoreMib * 2 ** 20,
      logger: Boolean(o.log),
      apiKey: o.apiKey,
      cors: (o.cors as string | boolean | undefined) === true ? "*" : o.cors,
      webDir: webDirFor(o.web),
    });
    const address = await server.app.listen({ host: o.host, port: o.port });
    console.error(`serving ${modelDir} on ${address} (backend ${o.backend}, ${dtype}, pid ${process.pid}); playground at ${address}/${webDirFor(o.web) ? `, browser page at ${address}/web/` : ""}`);
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      console.error(`${signal}: finishing running requests, refusing new ones`);
      server.shutdown().then(() => process.exit(0), (err) => {
        console.error(err);
        process.exit(1);
      });
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    if (process.env.npm_lifecycle_event) watchPackageManager(() => stop("the package script was stopped"));
  });

/** The page to serve: --web DIR, or apps/web's build beside this app in the repository when there is one. */
function webDirFor(option: string | undefined): string | undefined {
  if (option === "none") return undefined;
  if (option !== undefined) {
    const dir = resolve(option);
    if (!existsSync(join(dir, "index.html"))) program.error(`serve: --web ${option}: no index.html in ${dir}`);
    return dir;
  }
  const built = fileURLToPath(new URL("../../web/dist/", import.meta.url));
  return existsSync(join(built, "index.html")) ? built : undefined;
}

await program.parseAsync();
