/**
 * GPU time of WebGPU work from timestamp queries (`timestamp-query`), as the backend's
 * `KernelTimer` for `profileOps` and the benchmarks.
 *
 * WebGPU writes timestamps only at the beginning and end of a pass (`timestampWrites`), not between
 * the dispatches of one pass. So a mark ends the open compute pass, and while any mark is live every
 * pass the runtime opens writes its begin and end times (pass p: queries 2p and 2p + 1). The time
 * from mark a to mark b is from the beginning of the first pass opened after a to the end of the
 * last pass opened before b: device time, including the gaps between those passes, but not what
 * the host did before the work reached the GPU. Work outside compute passes (copyBufferToBuffer,
 * used by `copyWithin`) writes no timestamps: alone between two marks it counts as 0 ms.
 *
 * Reading the queries waits for the device, so it happens in `collect()`, which the backend's
 * `sync()` calls; `elapsedMs` of marks whose passes are not read back yet throws.
 */
import type { KernelTimer } from "@lightning-ts/tensor";

/** Queries per query set: the largest count WebGPU allows. Even, so a pass's pair is in one set. */
const SET_QUERIES = 4096;

/** Device time of one timed pass and the kernels (pipeline keys) dispatched in it. */
export interface PassTime {
  keys: string[];
  ms: number;
}

export interface PassTimestamps {
  /** Ends the open compute pass, so the next dispatch opens a new one. */
  endPass(): void;
  /** Submits all encoded work. */
  flush(): void;
  readonly device: GPUDevice;
}

export class TimestampTimer implements KernelTimer {
  readonly #rt: PassTimestamps;
  #sets: GPUQuerySet[] = [];
  #resolve: GPUBuffer | null = null;
  /** Timed passes opened since the timer was last idle (no live marks). */
  #passes = 0;
  /** Passes whose times are read back; their begin and end in ns at [2p] and [2p + 1]. */
  #read = 0;
  #ns: number[] = [];
  /** Live marks: id → timed passes opened before the mark. */
  #marks = new Map<number, number>();
  #nextId = 0;
  /** Bumped when the timer goes idle, so a read back still in flight drops its stale times. */
  #generation = 0;
  #collecting: Promise<void> | null = null;
  /** Pipeline keys dispatched in each timed pass. */
  #keys: string[][] = [];

  constructor(rt: PassTimestamps) {
    this.#rt = rt;
  }

  mark(): number {
    this.#rt.endPass();
    const id = this.#nextId++;
    this.#marks.set(id, this.#passes);
    return id;
  }

  elapsedMs(a: number, b: number): number {
    const pa = this.#marks.get(a);
    const pb = this.#marks.get(b);
    if (pa === undefined || pb === undefined) throw new Error(`elapsedMs: mark ${pa === undefined ? a : b} is not a live mark of this timer (released, or never made)`);
    if (pb <= pa) return 0;
    if (pb > this.#read) throw new Error(`elapsedMs: the timestamps of marks ${a} and ${b} are not read back yet; await backend.sync() first`);
    return (this.#ns[2 * pb - 1] - this.#ns[2 * pa]) / 1e6;
  }

  release(marks: readonly number[]): void {
    for (const id of marks) this.#marks.delete(id);
    if (this.#marks.size > 0) return;
    // Idle: the query sets are reused from the start by the next marks.
    this.#passes = 0;
    this.#read = 0;
    this.#ns = [];
    this.#keys = [];
    this.#generation++;
  }

  /**
   * The timestamp writes of a pass about to begin: one pair of queries while a mark is live,
   * none otherwise (untimed work pays nothing).
   */
  passWrites(): GPUComputePassTimestampWrites | undefined {
    if (this.#marks.size === 0) return undefined;
    this.#keys.push([]);
    const q = 2 * this.#passes++;
    const s = Math.floor(q / SET_QUERIES);
    while (this.#sets.length <= s) this.#sets.push(this.#rt.device.createQuerySet({ type: "timestamp", count: SET_QUERIES }));
    return { querySet: this.#sets[s], beginningOfPassWriteIndex: q % SET_QUERIES, endOfPassWriteIndex: (q % SET_QUERIES) + 1 };
  }

  /**
   * Records a dispatch into the open pass. While a mark is live the open pass is a timed one: a
   * mark ends the pass, so the open pass began after the latest mark.
   */
  noteDispatch(key: string): void {
    if (this.#marks.size > 0 && this.#passes > 0) this.#keys[this.#passes - 1].push(key);
  }

  /** Each timed pass from mark a to mark b: its device time and the kernels in it (after a sync). */
  passTimes(a: number, b: number): PassTime[] {
    const pa = this.#marks.get(a) ?? NaN;
    const pb = this.#marks.get(b) ?? NaN;
    if (Number.isNaN(pa + pb)) throw new Error(`passTimes: mark ${Number.isNaN(pa) ? a : b} is not a live mark of this timer (released, or never made)`);
    if (pb > this.#read) throw new Error(`passTimes: the timestamps of marks ${a} and ${b} are not read back yet; await backend.sync() first`);
    const out: PassTime[] = [];
    for (let p = pa; p < pb; p++) out.push({ keys: this.#keys[p], ms: (this.#ns[2 * p + 1] - this.#ns[2 * p]) / 1e6 });
    return out;
  }

  /** Reads back the timestamps of the passes opened so far (waits for the device). */
  async collect(): Promise<void> {
    // One read back at a time: each appends the passes after the previous one's.
    while (this.#collecting) await this.#collecting;
    this.#collecting = this.#collectNow();
    try {
      await this.#collecting;
    } finally {
      this.#collecting = null;
    }
  }

  async #collectNow(): Promise<void> {
    const from = 2 * this.#read;
    const to = 2 * this.#passes;
    if (to === from) return;
    const generation = this.#generation;
    this.#rt.flush();
    const device = this.#rt.device;
    this.#resolve ??= device.createBuffer({ size: SET_QUERIES * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const staging = device.createBuffer({ size: (to - from) * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    // One resolve buffer serves every set: the commands of an encoder run in order.
    for (let q = from; q < to; ) {
      const s = Math.floor(q / SET_QUERIES);
      const count = Math.min(to, (s + 1) * SET_QUERIES) - q;
      encoder.resolveQuerySet(this.#sets[s], q % SET_QUERIES, count, this.#resolve, 0);
      encoder.copyBufferToBuffer(this.#resolve, 0, staging, (q - from) * 8, count * 8);
      q += count;
    }
    device.queue.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
      if (generation !== this.#generation) return;
      const ticks = new BigUint64Array(staging.getMappedRange());
      // ns since an arbitrary origin stay far below 2^53 (104 days), so Number is exact.
      for (const t of ticks) this.#ns.push(Number(t));
      this.#read = to / 2;
    } finally {
      staging.destroy();
    }
  }
}
