/**
 * The GPU test runner of the bundle that build.mjs writes (dist/gpu-tests/run.js): the CUDA and
 * WebGPU test files, run with only Node, each file in a process of its own as vitest isolates them.
 *
 *   node run.js [--required] [--timeout SECONDS] [--filter REGEX] [--jobs N] [--verbose] [--list] [SUITE...]
 *
 * SUITE is a package (`cuda`, `webgpu`) or one file (`cuda/conformance`); all by default.
 * --required   a GPU backend that cannot start fails the run (LIGHTNING_CUDA_REQUIRED=1 and
 *              LIGHTNING_WEBGPU_REQUIRED=1, as `pnpm test:gpu` sets them)
 * --filter RE  only tests whose full name matches RE
 * --jobs N     run up to N files at once (default 1), each file's output printed whole when it
 *              ends: the tests' float64 oracles run on the host, so on a machine with many cores
 *              several files can share one GPU
 * --verbose    also list the skipped tests
 *
 * It prints every result and then "N passed, N failed, N skipped", and exits with 1 when a test
 * failed or when no test ran at all (a bundle that dropped its tests must not pass).
 */
import { type ChildProcess, fork } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { SUITES } from "gpu-tests:suites";
import { type CaseResult, runCollected } from "./vitest.js";

const USAGE = "usage: node run.js [--required] [--timeout SECONDS] [--filter REGEX] [--jobs N] [--verbose] [--list] [cuda|webgpu|FILE...]";

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    required: { type: "boolean", default: false },
    timeout: { type: "string", default: "300" },
    filter: { type: "string" },
    jobs: { type: "string", default: "1" },
    list: { type: "boolean", default: false },
    verbose: { type: "boolean", short: "v", default: false },
    child: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});

type Message = { kind: "result"; result: CaseResult } | { kind: "collected"; count: number };

/** In a child process: import one test file, run what it declared, report each result. */
async function child(id: string): Promise<void> {
  const send = (m: Message) => process.send!(m);
  const pattern = flags.filter ? new RegExp(flags.filter) : null;
  let count = 0;
  try {
    await SUITES[id]();
  } catch (err) {
    // A file that throws while it is imported (e.g. a required backend that cannot start).
    const result = { name: `${id} (import)`, ok: false, skipped: false, ms: 0, error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
    print(result);
    send({ kind: "result", result });
    count++;
  }
  await runCollected({
    filter: (name) => !pattern || pattern.test(name),
    timeout: Number(flags.timeout) * 1000,
    onResult: (result) => {
      count++;
      print(result);
      send({ kind: "result", result });
    },
  });
  // Exit once the last message is out: a GPU runtime may hold the event loop open.
  process.send!({ kind: "collected", count } satisfies Message, () => process.exit(0));
}

function print(r: CaseResult): void {
  if (r.skipped) {
    if (flags.verbose) console.log(`  ↓ ${r.name} (skipped)`);
    return;
  }
  if (r.ok) console.log(`  ✓ ${r.name} (${r.ms.toFixed(0)} ms)`);
  else console.log(`  ✗ ${r.name}\n${(r.error ?? "").replace(/^/gm, "      ")}`);
}

interface FileRun {
  results: CaseResult[];
  collected: number | null;
  exit: string | null;
  /** The file's output, where it was kept to be printed whole (`--jobs` above 1). */
  output: string | null;
}

function runFile(id: string, env: NodeJS.ProcessEnv, keepOutput: boolean): Promise<FileRun> {
  return new Promise((resolve) => {
    const results: CaseResult[] = [];
    let collected: number | null = null;
    const chunks: Buffer[] = [];
    const args = ["--child", id, "--timeout", flags.timeout, ...(flags.filter ? ["--filter", flags.filter] : []), ...(flags.verbose ? ["--verbose"] : [])];
    const proc: ChildProcess = fork(process.argv[1], args, { env, stdio: keepOutput ? ["ignore", "pipe", "pipe", "ipc"] : "inherit" });
    proc.stdout?.on("data", (b: Buffer) => chunks.push(b));
    proc.stderr?.on("data", (b: Buffer) => chunks.push(b));
    proc.on("message", (m: Message) => {
      if (m.kind === "result") results.push(m.result);
      else collected = m.count;
    });
    proc.on("close", (code, signal) => {
      const exit = collected === null ? `the test process ended (${signal ?? `exit code ${code}`}) before it finished` : null;
      resolve({ results, collected, exit, output: keepOutput ? Buffer.concat(chunks).toString() : null });
    });
  });
}

async function main(): Promise<number> {
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  const ids = Object.keys(SUITES);
  if (flags.list) {
    for (const id of ids) console.log(id);
    return 0;
  }
  const wanted = positionals.length ? ids.filter((id) => positionals.some((p) => id === p || id.startsWith(`${p}/`))) : ids;
  const unknown = positionals.filter((p) => !ids.some((id) => id === p || id.startsWith(`${p}/`)));
  if (unknown.length) {
    console.error(`unknown suite ${unknown.join(", ")}; there are: ${ids.join(", ")}\n${USAGE}`);
    return 2;
  }

  const here = dirname(process.argv[1]);
  const env = { ...process.env };
  if (flags.required) env.LIGHTNING_CUDA_REQUIRED = env.LIGHTNING_WEBGPU_REQUIRED = "1";
  // The CUDA addon travels beside run.js; LIGHTNING_CUDA_ADDON chooses another.
  const addon = join(here, "lightning_cuda.node");
  if (!env.LIGHTNING_CUDA_ADDON && existsSync(addon)) env.LIGHTNING_CUDA_ADDON = addon;
  console.log(`[gpu-tests] Node ${process.version}; CUDA addon: ${env.LIGHTNING_CUDA_ADDON ?? "none in this folder"}; suites: ${wanted.join(", ")}${flags.required ? " (GPU backends required)" : ""}`);

  const jobs = Number(flags.jobs);
  if (!Number.isInteger(jobs) || jobs < 1) {
    console.error(`--jobs: expected a positive integer, got '${flags.jobs}'\n${USAGE}`);
    return 2;
  }
  const totals = { passed: 0, failed: 0, skipped: 0 };
  const failures: string[] = [];
  const report = (id: string, { results, collected, exit, output }: FileRun) => {
    if (jobs > 1) console.log(`\n── ${id}`);
    if (output) process.stdout.write(output);
    const count = (f: (r: CaseResult) => boolean) => results.filter(f).length;
    const file = { passed: count((r) => r.ok && !r.skipped), failed: count((r) => !r.ok), skipped: count((r) => r.skipped) };
    if (exit) {
      file.failed++;
      failures.push(`${id}: ${exit}`);
      console.log(`  ✗ ${exit}`);
    } else if (collected === 0 && !flags.filter) {
      file.failed++;
      failures.push(`${id}: the file declared no test`);
      console.log("  ✗ the file declared no test (was an import dropped from the bundle?)");
    }
    for (const r of results) if (!r.ok) failures.push(`${id}: ${r.name}`);
    console.log(`  ${file.passed} passed, ${file.failed} failed, ${file.skipped} skipped`);
    totals.passed += file.passed;
    totals.failed += file.failed;
    totals.skipped += file.skipped;
  };
  // Files are started in order, `jobs` at a time; each is reported when it ends.
  const queue = [...wanted];
  const worker = async () => {
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
      if (jobs === 1) console.log(`\n── ${id}`);
      report(id, await runFile(id, env, jobs > 1));
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, wanted.length) }, worker));

  console.log(`\n[gpu-tests] ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped (${wanted.length} files)`);
  for (const f of failures) console.log(`  failed: ${f}`);
  if (totals.failed > 0) return 1;
  if (totals.passed === 0) {
    console.log("[gpu-tests] no test ran: every GPU backend was skipped (see the reasons above)");
    return 1;
  }
  return 0;
}

if (flags.child) await child(flags.child);
else process.exitCode = await main();
