/**
 * CUDA graphs for `CudaBackend.captureGraph`: the kernels a function enqueues are recorded instead
 * of run (stream capture), instantiated once, and replayed with one launch. Replays read and write
 * the addresses the recording used, so every buffer allocated while recording belongs to the graph
 * (the native allocator keeps it out of reuse) until the graph is disposed. The tensors `fn`
 * returns point into those buffers: they hold what the last replay wrote, and disposing them
 * before the graph is a no-op for the allocator.
 */
import type { CapturedGraph } from "@lightning-ts/tensor";
import type { CudaStorage } from "./kernels.js";
import type { NativeRuntime } from "./native.js";

export class CudaGraph<T> implements CapturedGraph<T> {
  #disposed = false;

  constructor(
    private readonly runtime: NativeRuntime,
    private readonly id: number,
    readonly result: T,
    /** Every storage allocated while recording (the graph's buffers). */
    private readonly storages: readonly CudaStorage[],
  ) {}

  /** Enqueues the recorded work again on the backend's stream. */
  replay(): void {
    if (this.#disposed) throw new Error("CudaGraph.replay: the graph was disposed");
    this.runtime.graphLaunch(this.id);
  }

  /**
   * Frees the graph; its buffers go back to the allocator. Tensors still pointing into them are
   * detached (null pointers), so a late dispose cannot free a buffer that has a new owner by then.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const s of this.storages) (s as { ptr: number }).ptr = 0;
    this.runtime.graphDestroy(this.id);
  }
}

/**
 * Records `fn`'s device work as a graph. `track` receives the list that the backend's `allocate`
 * must append every new storage to while recording (then null). Host reads, writes and syncs are
 * refused while recording (the native runtime throws, naming the call); an error in `fn` drops
 * the recording and is rethrown.
 */
export function recordGraph<T>(runtime: NativeRuntime, track: (storages: CudaStorage[] | null) => void, fn: () => T): CudaGraph<T> {
  const storages: CudaStorage[] = [];
  runtime.captureBegin();
  track(storages);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    track(null);
    runtime.captureEnd(false);
    throw err;
  }
  track(null);
  const id = runtime.captureEnd(true);
  return new CudaGraph(runtime, id, result, storages);
}
