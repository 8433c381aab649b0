/**
 * The server under test (apps/server/dist/main.js) in its own process on 127.0.0.1, and what the
 * suite reads about it: /health, its CPU time (Linux /proc), the device's name and, on CUDA, the GPU
 * memory nvidia-smi sees it use.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  /** The dtype the server says it runs in (its start-up line). */
  dtype: string;
}

export interface StartOptions {
  /** The server's entry point (default: apps/server/dist/main.js). */
  main?: string;
  model: string;
  backend: string;
  dtype?: string;
  maxBatch: number;
  /** More server options, passed as they are (e.g. ["--decode-prefill", "0"]). */
  extraArgs?: string[];
  /** Progress lines; the server's stderr after start-up goes here too. */
  log: (line: string) => void;
}

/** Starts the server on a free loopback port; resolves once it listens. */
export function startServer(root: string, o: StartOptions): Promise<ServerProcess> {
  const main = o.main ?? join(root, "apps/server/dist/main.js");
  if (!existsSync(main)) throw new Error(o.main ? `--server-main: no file at ${main}` : `${main} is missing: run \`pnpm build\` first`);
  const args = [main, "--model", o.model, "--backend", o.backend, ...(o.dtype ? ["--dtype", o.dtype] : [])];
  args.push("--host", "127.0.0.1", "--port", "0", "--max-batch", String(o.maxBatch), "--max-queue", "4096", "--max-prompt-tokens", "1048576", ...(o.extraArgs ?? []));
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  return new Promise((ok, fail) => {
    let err = "";
    let started = false;
    child.stderr.on("data", (d: Buffer) => {
      if (started) {
        for (const line of d.toString().split("\n")) if (line.trim()) o.log(`server: ${line}`);
        return;
      }
      err += d.toString();
      const m = /on (http:\/\/127\.0\.0\.1:\d+) \(backend \S+, (\w+)/.exec(err);
      if (m) {
        started = true;
        ok({ url: m[1], child, dtype: m[2] });
      }
    });
    child.on("exit", (code, signal) => {
      if (!started) fail(new Error(`the server exited (${code ?? signal}) before listening: ${err.slice(-4000)}`));
    });
  });
}

/** Stops the server (SIGTERM: it drains) and waits for it to exit. */
export function stopServer(s: ServerProcess): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return Promise.resolve();
  return new Promise((ok) => {
    s.child.once("exit", () => ok());
    s.child.kill("SIGTERM");
  });
}

export interface Health {
  status: string;
  backend: string;
  queued: number;
  active: number;
  rss_bytes: number;
  state_bytes: { per_sequence: number; active: number; prefix_cache: number; handles: number };
  /** The backend's allocator (Backend.memory()); absent from servers that do not report it. */
  backend_memory?: { liveBytes: number; liveBuffers: number; pooledBytes: number; peakBytes: number };
  /** The device's name, where the server reports it. */
  device?: string;
}

export async function health(url: string): Promise<Health> {
  const res = await fetch(`${url}/health`);
  if (!res.ok) throw new Error(`GET /health: HTTP ${res.status}`);
  return (await res.json()) as Health;
}

/** Waits until the server has no running or queued sequence; false if it still has after `timeoutMs`. */
export async function waitIdle(url: string, timeoutMs: number): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const h = await health(url);
    if (h.active === 0 && h.queued === 0) return true;
    if (performance.now() > end) return false;
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

let clockTicks: number | undefined;

/** CPU seconds (user + system) of process `pid` so far, from /proc; null where there is no /proc. */
export function processCpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    clockTicks ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return null;
  }
}

function nvidiaSmi(args: string[]): string | null {
  try {
    return execFileSync("nvidia-smi", args, { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return null;
  }
}

/** GPU memory in bytes that nvidia-smi sees process `pid` use; null without nvidia-smi or where it cannot see the pid (containers). */
export function gpuProcessBytes(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  const out = nvidiaSmi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]);
  const line = out?.split("\n").find((l) => l.split(",")[0].trim() === String(pid));
  return line ? Number(line.split(",")[1]) * 2 ** 20 : null;
}

/** The device's name: the server's /health where it says, else the CPU's model or the GPU's name (nvidia-smi). */
export function deviceName(backend: string, h: Health): string {
  if (h.device) return h.device;
  if (backend === "cuda") {
    const names = nvidiaSmi(["--query-gpu=name", "--format=csv,noheader"])?.trim().split("\n");
    if (names?.length) return names[0].trim();
    return "CUDA GPU (name unknown: no device in /health, no nvidia-smi)";
  }
  const cpu = `${cpus()[0]?.model.trim() ?? "CPU"}, ${cpus().length} cores`;
  return backend === "cpu" ? cpu : `${backend} on a machine with ${cpu}`;
}
