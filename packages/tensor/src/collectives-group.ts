/**
 * Runs a group of CPU ranks as Node worker threads: `runCpuGroup` starts N workers on one module,
 * and that module hands its rank's work to `cpuRank`, which builds the rank's CPU backend and
 * `CpuCollective` and sends the result (or the error) back. A rank that throws, exits, or never
 * finishes brings the whole group down with an error naming it, within the timeouts: no hang.
 *
 * @example
 * // sum.worker.ts
 * cpuRank(({ collective }) => collective.allReduce(tensor([collective.rank + 1])).dataSync()[0]);
 * // main
 * const results = await runCpuGroup<number>(new URL("./sum.worker.js", import.meta.url), { worldSize: 3 }); // [6, 6, 6]
 */
import { parentPort, Worker, workerData } from "node:worker_threads";
import { createCpuBackend } from "./cpu/backend.js";
import { abortCpuGroup, CollectiveAbortedError, CpuCollective, createCpuGroup, type CpuGroupOptions, type CpuGroupShared } from "./collectives-cpu.js";
import { setBackend } from "./engine.js";
import { argError } from "./errors.js";

export interface RunCpuGroupOptions<A> extends CpuGroupOptions {
  worldSize: number;
  /** Passed to every rank (structured-cloned). */
  args?: A;
  /** Modules each worker imports before the rank's module (e.g. a loader registering hooks). */
  preload?: readonly (string | URL)[];
  /** How long the whole group may run (default 10 minutes). */
  groupTimeoutMs?: number;
}

export interface CpuRankContext<A> {
  rank: number;
  worldSize: number;
  collective: CpuCollective;
  args: A;
}

interface RankData {
  lightningCpuRank: { rank: number; shared: CpuGroupShared; args: unknown };
  preload: string[];
  main: string;
}

type RankMessage = { type: "result"; rank: number; value: unknown } | { type: "error"; rank: number; message: string; aborted: boolean };

export class CpuGroupError extends Error {
  constructor(
    readonly rank: number,
    message: string,
  ) {
    super(message);
    this.name = "CpuGroupError";
  }
}

// Runs as CommonJS in the worker: loads the preloads, then the rank's module (which calls cpuRank).
const BOOTSTRAP = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  for (const p of workerData.preload) await import(p);
  await import(workerData.main);
})().catch((err) => {
  parentPort.postMessage({ type: "error", rank: workerData.lightningCpuRank.rank, message: String((err && err.stack) || err), aborted: false });
});
`;

const href = (u: string | URL) => (u instanceof URL ? u.href : u);

/**
 * Starts `worldSize` workers on `module` and resolves to their results in rank order. Rejects with
 * a `CpuGroupError` naming the first rank that failed (the others are told through the shared
 * abort word and stopped).
 */
export async function runCpuGroup<R, A = undefined>(module: string | URL, options: RunCpuGroupOptions<A>): Promise<R[]> {
  const { worldSize } = options;
  if (!Number.isInteger(worldSize) || worldSize < 1) argError("runCpuGroup", "worldSize", "a positive integer", String(worldSize));
  const shared = createCpuGroup(worldSize, options);
  const results = new Array<unknown>(worldSize);
  const done = new Array<boolean>(worldSize).fill(false);
  const echoed = new Array<boolean>(worldSize).fill(false);
  const workers: Worker[] = [];
  return new Promise<R[]>((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) abortCpuGroup(shared, err instanceof CpuGroupError ? err.rank : 0);
      // Let the others see the abort and report, then stop whatever is left.
      void Promise.all(workers.map((w) => w.terminate())).finally(() => (err ? reject(err) : resolve(results as R[])));
    };
    const fail = (rank: number, message: string) => finish(new CpuGroupError(rank, `rank ${rank} of ${worldSize} failed: ${message}`));
    const timeout = options.groupTimeoutMs ?? 600_000;
    const timer = setTimeout(() => {
      const left = done.flatMap((d, r) => (d ? [] : [r]));
      finish(new CpuGroupError(left[0] ?? 0, `the group did not finish within ${timeout} ms: rank(s) ${left.join(", ")} still running`));
    }, timeout);
    for (let rank = 0; rank < worldSize; rank++) {
      const data: RankData = {
        lightningCpuRank: { rank, shared, args: options.args },
        preload: (options.preload ?? []).map(href),
        main: href(module),
      };
      const w = new Worker(BOOTSTRAP, { eval: true, workerData: data });
      workers.push(w);
      w.on("message", (m: RankMessage) => {
        if (m.type === "result") {
          results[m.rank] = m.value;
          done[m.rank] = true;
          if (done.every(Boolean)) finish(null);
        } else if (m.aborted) {
          // The echo of another rank's failure: that rank reports the cause.
          echoed[m.rank] = true;
        } else {
          fail(m.rank, m.message);
        }
      });
      w.on("error", (err: Error) => fail(rank, err.stack ?? err.message));
      w.on("exit", (code) => {
        if (!done[rank] && !echoed[rank]) fail(rank, `its worker exited (code ${code}) before returning a result; does the module call cpuRank?`);
      });
    }
  });
}

/**
 * The rank side: call once at the top level of the module `runCpuGroup` runs. `fn` gets this
 * rank's collective (on a fresh single-threaded CPU backend, made the default backend) and the
 * group's args; what it returns (structured-cloneable) becomes this rank's result.
 */
export function cpuRank<R, A = undefined>(fn: (ctx: CpuRankContext<A>) => R | Promise<R>): void {
  const data = workerData as Partial<RankData> | null;
  if (!parentPort || !data?.lightningCpuRank) throw new Error("cpuRank: this module must be run by runCpuGroup (it is not in a CPU group worker)");
  const port = parentPort;
  const { rank, shared, args } = data.lightningCpuRank;
  const backend = createCpuBackend({ threads: 1 });
  setBackend(backend);
  const collective = new CpuCollective(shared, rank, backend);
  void (async () => {
    try {
      const value = await fn({ rank, worldSize: shared.worldSize, collective, args: args as A });
      port.postMessage({ type: "result", rank, value } satisfies RankMessage);
    } catch (err) {
      const aborted = err instanceof CollectiveAbortedError;
      if (!aborted) collective.abort();
      port.postMessage({ type: "error", rank, message: err instanceof Error ? (err.stack ?? err.message) : String(err), aborted } satisfies RankMessage);
    } finally {
      collective.dispose();
    }
  })();
}
