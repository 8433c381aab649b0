/**
 * The trainer as real processes, for the tests of the launcher and of groups: main.ts bundled once
 * for Node (inside the app's node_modules, so that it finds the app's dependencies), started with
 * arguments and environment, its output collected, and every process a test started killed after.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildSync } from "esbuild";
import { expect } from "vitest";

const app = join(dirname(fileURLToPath(import.meta.url)), "..");
const entry = join(app, "node_modules", ".test-bundle", "main.mjs");

export function bundleMain(): void {
  buildSync({ entryPoints: [join(app, "src", "main.ts")], bundle: true, platform: "node", format: "esm", packages: "external", outfile: entry, logLevel: "warning" });
}

export interface Run {
  child: ChildProcess;
  /** Everything written to stderr (and stdout) so far. */
  output: () => string;
  /** Exit code or signal, and seconds from start. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; seconds: number }>;
}

export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Every process a test started (launchers and ranks). */
const started = new Set<number>();

export function killStarted(): void {
  for (const pid of started) if (isAlive(pid)) process.kill(pid, "SIGKILL");
}

/** `pnpm train` with `args` (after --warmup 0), in `cwd`, with `env` added to this process's. */
export function start(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Run {
  const t0 = performance.now();
  const child = spawn(process.execPath, [entry, "--warmup", "0", ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], cwd });
  started.add(child.pid!);
  let text = "";
  child.stdout.on("data", (d: Buffer) => (text += d.toString()));
  child.stderr.on("data", (d: Buffer) => (text += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; seconds: number }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal, seconds: (performance.now() - t0) / 1000 })),
  );
  return { child, output: () => text, exit };
}

export async function until(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The pids the launcher printed, by rank. */
export async function pids(run: Run, ranks: number): Promise<number[]> {
  await until("the launcher's pid line", () => /train: pids .*\n/.test(run.output()));
  const line = /train: pids (.*)\n/.exec(run.output())![1];
  const found = [...line.matchAll(/rank (\d+) (\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
  expect(found.map(([r]) => r)).toEqual(Array.from({ length: ranks }, (_, i) => i));
  for (const [, pid] of found) started.add(pid);
  return found.map(([, pid]) => pid);
}

/** Waits for rank 0's word, in a dry run, that every rank has joined. */
export const joined = (run: Run, world: number): Promise<void> => until(`${world} ranks to join`, () => run.output().includes(`dry run: ${world} ranks joined the group`));
