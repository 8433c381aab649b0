/**
 * Persistent matmul worker threads (Node only), started lazily on the first large matmul.
 *
 * CPU kernels are synchronous, so `run` blocks the calling thread on Atomics.wait until every
 * worker is done; the caller computes one share itself meanwhile. Workers are unref'd, so an idle
 * pool never keeps the process alive, and `dispose` terminates them.
 *
 * Workers are started from source text (`eval: true`) built from `createGemmEngine.toString()`:
 * that works the same from the TypeScript sources under vitest and from the tsup bundle, with no
 * separate worker file to locate at run time.
 *
 * After a task a worker keeps polling its port for the next one for SPIN_MS before it sleeps.
 * A sleeping worker is woken by the post, and on a busy 2-core machine the scheduler then often
 * runs it on the caller's core, pre-empting the caller: measured at 512³, the post took 2.3 ms
 * and the two shares ran one after the other, no faster than one thread. A worker still polling
 * needs no wake-up (OpenBLAS's threads spin for the same reason).
 */
import { createGemmEngine, type GemmEngine, type GemmTask } from "./matmul-engine.js";

interface NodeWorker {
  unref(): void;
  terminate(): Promise<number>;
}

interface NodePort {
  postMessage(message: unknown): void;
  unref(): void;
  close(): void;
}

interface WorkerThreads {
  Worker: new (source: string, options: { eval: true; workerData: unknown; transferList: unknown[] }) => NodeWorker;
  MessageChannel: new () => { port1: NodePort; port2: NodePort };
}

let workerThreads: WorkerThreads | null | undefined;

/** node:worker_threads, or null where there is none (browsers, Node < 20.16). */
export function nodeWorkerThreads(): WorkerThreads | null {
  if (workerThreads === undefined) {
    try {
      const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
      workerThreads = (proc?.getBuiltinModule?.("node:worker_threads") as WorkerThreads | undefined) ?? null;
    } catch {
      workerThreads = null;
    }
  }
  return workerThreads;
}

/** How long a worker polls for the next task before sleeping (ms). */
const SPIN_MS = 2;

// A task as posted: `sync` is [finished count, failures] in shared memory.
const WORKER_SOURCE = `"use strict";
const { workerData, receiveMessageOnPort } = require("node:worker_threads");
const createGemmEngine = ${createGemmEngine.toString()};
const port = workerData.port;
let engine = null;
let startError = null;
try { engine = createGemmEngine(workerData.wasm); } catch (e) { startError = e; }
function runTask(task) {
  try {
    if (startError) throw startError;
    engine.run(task);
  } catch (e) {
    Atomics.add(task.sync, 1, 1);
  }
  Atomics.add(task.sync, 0, 1);
  Atomics.notify(task.sync, 0);
}
port.on("message", (first) => {
  runTask(first);
  for (let until = performance.now() + ${SPIN_MS}; performance.now() < until; ) {
    const next = receiveMessageOnPort(port);
    if (next) {
      runTask(next.message);
      until = performance.now() + ${SPIN_MS};
    }
  }
});
`;

export class GemmPool {
  readonly #size: number;
  readonly #wasm: Uint8Array | null;
  #workers: NodeWorker[] = [];
  #ports: NodePort[] = [];

  /** `size` worker threads (the caller's thread is one more). */
  constructor(size: number, wasm: Uint8Array | null) {
    this.#size = size;
    this.#wasm = wasm;
  }

  /** Runs tasks[0] on the calling thread with `engine` and the rest on workers; returns when all are done. */
  run(engine: GemmEngine, tasks: readonly GemmTask[]): void {
    const remote = tasks.length - 1;
    if (remote > this.#size) throw new Error(`matmul: ${tasks.length} tasks for a pool of ${this.#size} workers`);
    this.#start(remote);
    const sync = new Int32Array(new SharedArrayBuffer(8));
    for (let w = 0; w < remote; w++) this.#ports[w].postMessage({ ...tasks[w + 1], sync });
    let localError: { error: unknown } | null = null;
    try {
      engine.run(tasks[0]);
    } catch (error) {
      localError = { error };
    }
    // Wait even after a local failure: workers still write into the caller's buffers.
    for (let done = Atomics.load(sync, 0); done < remote; done = Atomics.load(sync, 0)) Atomics.wait(sync, 0, done);
    if (localError) throw localError.error;
    if (Atomics.load(sync, 1) > 0) throw new Error(`matmul: ${Atomics.load(sync, 1)} worker thread(s) failed`);
  }

  dispose(): void {
    for (const w of this.#workers) void w.terminate();
    for (const p of this.#ports) p.close();
    this.#workers = [];
    this.#ports = [];
  }

  #start(count: number): void {
    const threads = nodeWorkerThreads();
    if (!threads) throw new Error("matmul: worker threads are not available here");
    while (this.#workers.length < count) {
      const { port1, port2 } = new threads.MessageChannel();
      const worker = new threads.Worker(WORKER_SOURCE, { eval: true, workerData: { wasm: this.#wasm, port: port2 }, transferList: [port2] });
      worker.unref();
      port1.unref();
      this.#workers.push(worker);
      this.#ports.push(port1);
    }
  }
}
