/**
 * `pnpm train --gpus N`: the launcher. It starts one process per local GPU (the same Node and the same
 * entry script with the same arguments), each a rank of the group with the torchrun environment —
 * RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT — and the rest of the
 * environment unchanged. A process started with RANK set is a rank and does not launch again, so
 * torchrun-like tools (or a user) can start the ranks themselves.
 *
 * It then watches them. The first rank that exits non-zero or is killed brings the group down: the
 * others get SIGTERM, then SIGKILL after a grace period, and the launcher exits non-zero naming that
 * rank and its exit code or signal. SIGINT, SIGTERM and SIGHUP sent to the launcher reach every rank.
 * Rank 0 writes to the launcher's terminal directly (its progress bar needs one); every other rank's
 * output comes through the launcher with its rank in front of each line.
 *
 * @example
 * const spec = launchSpec({ gpus: 2 });
 * const { code } = await launch({ spec: { ...spec, masterPort: await freePort(spec.masterAddr) }, command: process.execPath, args: [script, "--backend", "cuda"] });
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { constants } from "node:os";

export interface LaunchSpec {
  /** Processes (GPUs) on this host. */
  gpus: number;
  /** Hosts taking part; each runs a launcher with the same `gpus`. */
  nnodes: number;
  /** This host's place among them, 0 … nnodes − 1; node 0 runs rank 0 and the store. */
  nodeRank: number;
  masterAddr: string;
  /** null: a free port, when every rank is on this host. */
  masterPort: number | null;
}

/** The port a group spread over hosts meets on unless told (torchrun's). */
export const DEFAULT_MASTER_PORT = 29500;

export class LaunchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LaunchError";
  }
}

/** The launcher's flags, checked; a bad one is an error naming the flag, what it expected and what came. */
export function launchSpec(flags: { gpus?: number; nnodes?: number; nodeRank?: number; masterAddr?: string; masterPort?: number }): LaunchSpec {
  const positive = (flag: string, v: number | undefined, fallback: number) => {
    if (v === undefined) return fallback;
    if (!Number.isInteger(v) || v < 1) throw new LaunchError(`${flag} expected a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const gpus = positive("--gpus", flags.gpus, 1);
  const nnodes = positive("--nnodes", flags.nnodes, 1);
  const nodeRank = flags.nodeRank ?? 0;
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new LaunchError(`--node-rank expected an integer in [0, ${nnodes - 1}] (--nnodes ${nnodes}), got ${JSON.stringify(flags.nodeRank)}`);
  const port = flags.masterPort;
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) throw new LaunchError(`--master-port expected a TCP port in [1, 65535], got ${JSON.stringify(port)}`);
  if (nnodes > 1 && flags.masterAddr === undefined) throw new LaunchError(`--master-addr is needed with --nnodes ${nnodes}: the address of node 0, where rank 0 serves the rendezvous store`);
  if (flags.masterAddr !== undefined && flags.masterAddr.trim() === "") throw new LaunchError(`--master-addr expected a host name or IP address, got ""`);
  return { gpus, nnodes, nodeRank, masterAddr: flags.masterAddr ?? "127.0.0.1", masterPort: port ?? (nnodes > 1 ? DEFAULT_MASTER_PORT : null) };
}

/** Whether this spec needs more than this one process. */
export const isGroup = (spec: LaunchSpec): boolean => spec.gpus * spec.nnodes > 1;

/** The torchrun variables of each local rank, in local-rank order. */
export function rankEnvironments(spec: LaunchSpec & { masterPort: number }): Record<string, string>[] {
  const world = spec.gpus * spec.nnodes;
  return Array.from({ length: spec.gpus }, (_, local) => ({
    RANK: String(spec.nodeRank * spec.gpus + local),
    WORLD_SIZE: String(world),
    LOCAL_RANK: String(local),
    LOCAL_WORLD_SIZE: String(spec.gpus),
    GROUP_RANK: String(spec.nodeRank),
    MASTER_ADDR: spec.masterAddr,
    MASTER_PORT: String(spec.masterPort),
    // Tells a rank that a launcher watches it, so it leaves when the launcher is gone.
    LIGHTNING_LAUNCHER_PID: String(process.pid),
  }));
}

/** A TCP port that is free on `host` now (the kernel's pick). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface LaunchOptions {
  spec: LaunchSpec & { masterPort: number };
  /** What every rank runs: `command args…` (the trainer: process.execPath with its own script and arguments). */
  command: string;
  args: readonly string[];
  /** The environment the ranks' own variables are added to (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Between SIGTERM and SIGKILL when the group is brought down (default 10 s). */
  graceMs?: number;
  /** The launcher's own lines and the other ranks' output (default: this process's stderr). */
  write?: (text: string) => void;
  /** Forward SIGINT, SIGTERM and SIGHUP of this process to the ranks (default true). */
  forwardSignals?: boolean;
}

export interface LaunchResult {
  /** What the launcher should exit with: 0 when every rank did, 1 when one failed, 128 + n after signal n. */
  code: number;
  /** The first rank that failed, in words; null when none did. */
  failure: string | null;
}

const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** How a process ended, in words: "exited with code 3", "was killed by SIGKILL". */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

/** Starts the ranks of this host and resolves when all of them have ended. */
export function launch(options: LaunchOptions): Promise<LaunchResult> {
  const { spec } = options;
  const write = options.write ?? ((text: string) => void process.stderr.write(text));
  const graceMs = options.graceMs ?? 10_000;
  const envs = rankEnvironments(spec);
  const world = spec.gpus * spec.nnodes;
  const children: { rank: number; child: ChildProcess; exited: boolean; closed: Promise<void> }[] = [];

  let failure: string | null = null;
  /** The failure is a rank's own exit code; a rank found killed by a signal later is the likelier cause. */
  let failureIsExitCode = false;
  let signalled: NodeJS.Signals | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  /** The launcher has sent SIGKILL to the ranks still running after the grace period. */
  let killedByLauncher = false;

  const alive = () => children.filter((c) => !c.exited);
  const signalAll = (signal: NodeJS.Signals) => {
    for (const c of alive()) c.child.kill(signal);
  };
  /** SIGTERM to every rank still running, SIGKILL to those still running after the grace period. */
  const bringDown = () => {
    signalAll("SIGTERM");
    killTimer ??= setTimeout(() => {
      const left = alive();
      if (left.length > 0) write(`train: rank${left.length > 1 ? "s" : ""} ${left.map((c) => c.rank).join(", ")} still running ${graceMs / 1000} s after SIGTERM; sending SIGKILL\n`);
      killedByLauncher = true;
      signalAll("SIGKILL");
    }, graceMs);
  };

  const onSignal = (signal: NodeJS.Signals) => {
    signalled = signal;
    write(`\ntrain: ${signal} received; passing it to every rank\n`);
    // Ctrl-C is forwarded as it is (the first one lets the ranks save a checkpoint together); other signals end the group.
    if (signal === "SIGINT") signalAll("SIGINT");
    else bringDown();
  };
  const forward = options.forwardSignals !== false;
  if (forward) for (const s of FORWARDED) process.on(s, onSignal);

  return new Promise((resolve) => {
    let ended = 0;
    const done = async () => {
      if (killTimer) clearTimeout(killTimer);
      if (forward) for (const s of FORWARDED) process.off(s, onSignal);
      // Let the last lines of every rank's output through before the launcher reports.
      await Promise.race([Promise.all(children.map((c) => c.closed)), new Promise((r) => setTimeout(r, 2000))]);
      if (failure) {
        write(`train: the group failed: ${failure}\n`);
        resolve({ code: 1, failure });
      } else if (signalled) resolve({ code: 128 + constants.signals[signalled], failure: null });
      else resolve({ code: 0, failure: null });
    };

    const first = Number(envs[0].RANK);
    write(`train: starting ranks ${first}–${first + spec.gpus - 1} of ${world} on this host (rendezvous at ${spec.masterAddr}:${spec.masterPort})\n`);
    for (const env of envs) {
      const rank = Number(env.RANK);
      const local = Number(env.LOCAL_RANK);
      // Each rank in its own process group, so that a Ctrl-C at the terminal reaches it once, through the launcher.
      const child = spawn(options.command, options.args, {
        env: { ...(options.env ?? process.env), ...env },
        stdio: local === 0 ? ["ignore", "inherit", "inherit", "ipc"] : ["ignore", "pipe", "pipe", "ipc"],
        detached: true,
      });
      const entry = { rank, child, exited: false, closed: new Promise<void>((r) => child.once("close", () => r())) };
      children.push(entry);
      if (local !== 0) {
        prefixLines(child.stdout!, `[rank ${rank}] `, write);
        prefixLines(child.stderr!, `[rank ${rank}] `, write);
      }
      child.on("error", (err) => {
        failure ??= `rank ${rank} could not be started: ${err.message}`;
      });
      child.once("exit", (code, signal) => {
        entry.exited = true;
        const failed = code !== 0;
        if (failed && failure === null && signalled === null) {
          failure = `rank ${rank} (pid ${child.pid}) ${describeExit(code, signal)}`;
          failureIsExitCode = signal === null;
          write(`train: ${failure}; stopping the other ranks\n`);
          bringDown();
        } else if (failureIsExitCode && signal !== null && signal !== "SIGTERM" && signalled === null && !killedByLauncher) {
          // A rank killed from outside makes its peers fail too, and one of them may exit first
          // (its collective saw the dead peer before this exit reached us): name the killed one.
          failure = `rank ${rank} (pid ${child.pid}) ${describeExit(code, signal)}`;
          failureIsExitCode = false;
        }
        if (++ended === envs.length) void done();
      });
    }
    write(`train: pids ${children.map((c) => `rank ${c.rank} ${c.child.pid}`).join(", ")}\n`);
  });
}

/** Copies `stream` to `write` line by line, each line starting with `prefix`. */
function prefixLines(stream: NodeJS.ReadableStream, prefix: string, write: (text: string) => void): void {
  let partial = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    const lines = (partial + chunk).split("\n");
    partial = lines.pop()!;
    // A progress bar redraws with \r; only the last state of a line is worth a prefixed copy.
    for (const line of lines) write(`${prefix}${line.slice(line.lastIndexOf("\r") + 1)}\n`);
  });
  stream.on("end", () => {
    if (partial) write(`${prefix}${partial}\n`);
  });
}
