/**
 * The CPU collective: ranks are threads (Node worker_threads, or web workers) that share one
 * `SharedArrayBuffer` and meet at barriers built on `Atomics.wait` / `Atomics.notify`, so every
 * call blocks until its data has moved, as an NCCL call followed by a read would.
 *
 * Layout of the shared buffer: a control block of Int32 words (a barrier counter and generation,
 * an abort word, one header per rank naming the call it is in, one send/recv flag per ordered
 * pair of ranks), then one data slot per rank. Tensors larger than a slot move in slot-sized
 * chunks: each chunk is written by its owner, the ranks meet, every rank reads what it needs,
 * and the ranks meet again before the slots are reused.
 *
 * Reductions run in rank order on every rank (rank 0's value, then + rank 1's …), so every rank
 * gets the same bits and a run is reproducible. Each step rounds to the tensor's dtype: f32 sums
 * are f32 additions (as NCCL's reduction kernels do), f16/bf16 are added in f32 and rounded to the
 * half dtype after each rank (as at each hop of a ring), f64 in f64; i32 and u8 wrap. `avg` divides
 * the sum by N once at the end (float dtypes only).
 *
 * A rank that fails sets the abort word (the group runner does it for a rank that dies), and every
 * rank waiting in a call throws `CollectiveAbortedError` naming it; a call that waits longer than
 * `timeoutMs` throws `CollectiveTimeoutError` naming the ranks that never arrived.
 *
 * Letters: N the number of ranks.
 */
import type { Backend } from "./backend.js";
import { type DType, DTYPES, bf16ToF32, byteSize, encodeBf16, encodeF16, f16ToF32, isFloat, roundTo } from "./dtype.js";
import { argError, fmtShape } from "./errors.js";
import { type AllReduceOptions, allReduceInPlace, type Collective, type PendingCollective, type ReduceOp } from "./collectives.js";
import { fromStorage } from "./api/ops.js";
import { sizeOf } from "./shape.js";
import { Tensor } from "./tensor.js";

/** Everything ranks share; structured-cloneable, so it can be posted to workers. */
export interface CpuGroupShared {
  readonly buffer: SharedArrayBuffer;
  readonly worldSize: number;
  readonly slotBytes: number;
  readonly timeoutMs: number;
}

export interface CpuGroupOptions {
  /** Bytes each rank can put in flight at once (default 4 MiB); larger tensors move in chunks. */
  slotBytes?: number;
  /** How long a call waits for the other ranks before it fails (default 60 s). */
  timeoutMs?: number;
}

export class CollectiveAbortedError extends Error {
  constructor(
    readonly failedRank: number,
    call: string,
  ) {
    super(`${call}: the group was aborted because rank ${failedRank} failed`);
    this.name = "CollectiveAbortedError";
  }
}

export class CollectiveTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CollectiveTimeoutError";
  }
}

// Control words.
const COUNT = 0;
const GEN = 1;
const ABORT = 2;
const HEADER = 8;
/** Header words per rank: call code, call number, dtype code, element count, root/peer. */
const HEADER_WORDS = 5;
const CALLS = ["allReduce", "allGather", "reduceScatter", "broadcast", "barrier", "send"] as const;
type CallName = (typeof CALLS)[number];

function controlWords(n: number): number {
  return HEADER + n * HEADER_WORDS + n * n;
}

function dataOffset(n: number): number {
  return Math.ceil((controlWords(n) * 4) / 64) * 64;
}

/**
 * The shared state of a group of `worldSize` ranks: make it once, hand it to every rank (e.g. in
 * `workerData`), and build each rank's `CpuCollective` from it.
 */
export function createCpuGroup(worldSize: number, options: CpuGroupOptions = {}): CpuGroupShared {
  if (!Number.isInteger(worldSize) || worldSize < 1) argError("createCpuGroup", "worldSize", "a positive integer", String(worldSize));
  const slotBytes = options.slotBytes ?? 4 * 2 ** 20;
  if (!Number.isInteger(slotBytes) || slotBytes < 8 || slotBytes % 8 !== 0) argError("createCpuGroup", "slotBytes", "a positive multiple of 8", String(slotBytes));
  const timeoutMs = options.timeoutMs ?? 60_000;
  if (!(timeoutMs > 0)) argError("createCpuGroup", "timeoutMs", "a positive number", String(timeoutMs));
  const buffer = new SharedArrayBuffer(dataOffset(worldSize) + worldSize * slotBytes);
  return { buffer, worldSize, slotBytes, timeoutMs };
}

/** Marks the group failed by `rank` and wakes every waiting rank (safe from any thread). */
export function abortCpuGroup(shared: CpuGroupShared, rank: number): void {
  const ctrl = new Int32Array(shared.buffer, 0, controlWords(shared.worldSize));
  Atomics.compareExchange(ctrl, ABORT, 0, rank + 1);
  Atomics.notify(ctrl, GEN);
  for (let i = 0; i < shared.worldSize * shared.worldSize; i++) Atomics.notify(ctrl, HEADER + shared.worldSize * HEADER_WORDS + i);
}

/** One rank's end of a CPU group. Tensors must live on `backend`, which must read synchronously. */
export class CpuCollective implements Collective {
  readonly backend: Backend;
  readonly rank: number;
  readonly worldSize: number;
  readonly #shared: CpuGroupShared;
  readonly #ctrl: Int32Array;
  readonly #slots: Uint8Array;
  #calls = 0;
  #disposed = false;

  constructor(shared: CpuGroupShared, rank: number, backend: Backend) {
    if (!Number.isInteger(rank) || rank < 0 || rank >= shared.worldSize) argError("CpuCollective", "rank", `an integer in [0, ${shared.worldSize - 1}]`, String(rank));
    if (!backend.readSync) argError("CpuCollective", "backend", "a backend that reads synchronously", `the ${backend.name} backend`);
    this.#shared = shared;
    this.rank = rank;
    this.worldSize = shared.worldSize;
    this.backend = backend;
    this.#ctrl = new Int32Array(shared.buffer, 0, controlWords(shared.worldSize));
    this.#slots = new Uint8Array(shared.buffer, dataOffset(shared.worldSize));
  }

  allReduce(x: Tensor, op: ReduceOp = "sum", options: AllReduceOptions = {}): Tensor {
    return this.#allReduce("allReduce", x, op, options);
  }

  /** On the CPU there is no second stream: the reduction runs now and `wait` returns its result. */
  allReduceAsync(x: Tensor, op: ReduceOp = "sum", options: AllReduceOptions = {}): PendingCollective {
    const value = this.#allReduce("allReduceAsync", x, op, options);
    return { value, wait: () => value };
  }

  #allReduce(method: string, x: Tensor, op: ReduceOp, options: AllReduceOptions): Tensor {
    this.#checkTensor(method, x);
    checkReduceOp(method, op, x.dtype);
    const inPlace = allReduceInPlace(method, options);
    const out = this.#reduceBytes("allReduce", x, op);
    if (!inPlace) return fromStorage(out, x.shape, x.dtype, this.backend);
    this.backend.write(x.handle.storage, out);
    return new Tensor(x.handle, x.shape, x.dtype);
  }

  allGather(x: Tensor): Tensor {
    this.#checkTensor("allGather", x);
    const n = this.worldSize;
    const bytes = x.bytesSync();
    const out = new Uint8Array(bytes.byteLength * n);
    this.#chunks("allGather", x, bytes.byteLength, 0, (begin, end) => {
      this.#slot(this.rank).set(bytes.subarray(begin, end));
      this.#meet("allGather");
      for (let r = 0; r < n; r++) out.set(this.#slot(r).subarray(0, end - begin), r * bytes.byteLength + begin);
    });
    return fromStorage(out, [n, ...x.shape], x.dtype, this.backend);
  }

  reduceScatter(x: Tensor, op: ReduceOp = "sum"): Tensor {
    this.#checkTensor("reduceScatter", x);
    checkReduceOp("reduceScatter", op, x.dtype);
    const n = this.worldSize;
    if (x.rank === 0 || x.shape[0] % n !== 0) {
      argError("reduceScatter", "x", `a leading dimension divisible by the ${n} ranks`, `${x.dtype}${fmtShape(x.shape)}`);
    }
    // The whole reduction, then this rank's rows: N times the traffic of a ring, which the CPU
    // group does not need to save, and the same bits as allReduce.
    const all = this.#reduceBytes("reduceScatter", x, op);
    const rows = x.shape[0] / n;
    const block = (x.size / n) * byteSize(x.dtype);
    return fromStorage(all.subarray(this.rank * block, (this.rank + 1) * block), [rows, ...x.shape.slice(1)], x.dtype, this.backend);
  }

  broadcast(x: Tensor, root: number): Tensor {
    this.#checkTensor("broadcast", x);
    this.#checkPeer("broadcast", "root", root, true);
    const bytes = this.rank === root ? x.bytesSync() : new Uint8Array(x.size * byteSize(x.dtype));
    this.#chunks("broadcast", x, bytes.byteLength, root, (begin, end) => {
      if (this.rank === root) this.#slot(root).set(bytes.subarray(begin, end));
      this.#meet("broadcast");
      if (this.rank !== root) bytes.set(this.#slot(root).subarray(0, end - begin), begin);
    });
    return fromStorage(bytes, x.shape, x.dtype, this.backend);
  }

  /**
   * Blocks until `peer` has received every byte (a rendezvous, chunk by chunk): order sends and
   * receives so that they do not form a cycle (e.g. in a ring, even ranks send first).
   */
  send(x: Tensor, peer: number): void {
    this.#checkTensor("send", x);
    this.#checkPeer("send", "peer", peer, false);
    const bytes = x.bytesSync();
    const flag = this.#pairFlag(this.rank, peer);
    const slot = this.#slot(this.rank);
    const header = this.#header(this.rank);
    header[0] = CALLS.indexOf("send");
    header[2] = DTYPES.indexOf(x.dtype);
    header[3] = x.size;
    for (let begin = 0; begin === 0 || begin < bytes.byteLength; begin += this.#shared.slotBytes) {
      const end = Math.min(bytes.byteLength, begin + this.#shared.slotBytes);
      slot.set(bytes.subarray(begin, end));
      Atomics.store(this.#ctrl, flag, 1);
      Atomics.notify(this.#ctrl, flag);
      this.#waitFlag(flag, 1, `send to rank ${peer}`, [peer]);
      if (end === bytes.byteLength) break;
    }
  }

  /** On the CPU there is no second stream: the send runs now (a rendezvous, as `send`). */
  sendAsync(x: Tensor, peer: number): PendingCollective {
    this.send(x, peer);
    return { value: x, wait: () => x };
  }

  /** On the CPU there is no second stream: the receive runs now (as `recv`). */
  recvAsync(shape: readonly number[], dtype: DType, peer: number): PendingCollective {
    const value = this.recv(shape, dtype, peer);
    return { value, wait: () => value };
  }

  recv(shape: readonly number[], dtype: DType, peer: number): Tensor {
    this.#checkLive("recv");
    this.#checkPeer("recv", "peer", peer, false);
    const byteLength = sizeOf(shape) * byteSize(dtype);
    const out = new Uint8Array(byteLength);
    const flag = this.#pairFlag(peer, this.rank);
    for (let begin = 0; begin === 0 || begin < byteLength; begin += this.#shared.slotBytes) {
      this.#waitFlag(flag, 0, `recv from rank ${peer}`, [peer]);
      if (begin === 0) {
        const h = this.#header(peer);
        if (h[2] !== DTYPES.indexOf(dtype) || h[3] !== sizeOf(shape)) {
          throw new Error(`recv: rank ${peer} sent ${h[3]} elements of ${DTYPES[h[2]] ?? "?"}, rank ${this.rank} expected ${dtype}${fmtShape(shape)}`);
        }
      }
      const end = Math.min(byteLength, begin + this.#shared.slotBytes);
      out.set(this.#slot(peer).subarray(0, end - begin), begin);
      Atomics.store(this.#ctrl, flag, 0);
      Atomics.notify(this.#ctrl, flag);
      if (end === byteLength) break;
    }
    return fromStorage(out, shape, dtype, this.backend);
  }

  barrier(): Promise<void> {
    try {
      this.#checkLive("barrier");
      this.#enter("barrier", "f32", 0, 0);
      this.#meet("barrier");
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  dispose(): void {
    this.#disposed = true;
  }

  /** The group failed here: wake the other ranks, which throw `CollectiveAbortedError`. */
  abort(): void {
    abortCpuGroup(this.#shared, this.rank);
  }

  #checkLive(call: string): void {
    if (this.#disposed) throw new Error(`${call}: the collective of rank ${this.rank} was disposed`);
  }

  #checkTensor(call: string, x: Tensor): void {
    this.#checkLive(call);
    if (!(x instanceof Tensor)) argError(call, "x", "a Tensor", typeof x);
    if (x.backend !== this.backend) argError(call, "x", `a tensor on this rank's backend (${this.backend.name})`, `one on another ${x.backend.name} backend`);
  }

  #checkPeer(call: string, name: string, peer: number, selfOk: boolean): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.worldSize || (!selfOk && peer === this.rank)) {
      argError(call, name, `a rank in [0, ${this.worldSize - 1}]${selfOk ? "" : ` other than ${this.rank}`}`, String(peer));
    }
  }

  #slot(r: number): Uint8Array {
    const s = this.#shared.slotBytes;
    return this.#slots.subarray(r * s, (r + 1) * s);
  }

  #header(r: number): Int32Array {
    return this.#ctrl.subarray(HEADER + r * HEADER_WORDS, HEADER + (r + 1) * HEADER_WORDS);
  }

  #pairFlag(from: number, to: number): number {
    return HEADER + this.worldSize * HEADER_WORDS + from * this.worldSize + to;
  }

  /** Announces the call, then checks at the first meeting that every rank made the same one. */
  #enter(call: CallName, dtype: DType, size: number, root: number): void {
    const h = this.#header(this.rank);
    h[0] = CALLS.indexOf(call);
    h[1] = ++this.#calls;
    h[2] = DTYPES.indexOf(dtype);
    h[3] = size;
    h[4] = root;
  }

  #checkSame(call: CallName): void {
    const mine = this.#header(this.rank);
    for (let r = 0; r < this.worldSize; r++) {
      const h = this.#header(r);
      if (h[0] !== mine[0] || h[1] !== mine[1] || h[2] !== mine[2] || h[3] !== mine[3] || h[4] !== mine[4]) {
        const what = (x: Int32Array) => `${CALLS[x[0]] ?? "?"} #${x[1]} of ${x[3]} ${DTYPES[x[2]] ?? "?"} (root ${x[4]})`;
        throw new Error(`${call}: ranks disagree: rank ${this.rank} is in ${what(mine)}, rank ${r} in ${what(h)}; every rank must make the same calls in the same order`);
      }
    }
  }

  /** Runs `step(begin, end)` for each slot-sized byte range, the ranks meeting after each. */
  #chunks(call: CallName, x: Tensor, byteLength: number, root: number, step: (begin: number, end: number) => void): void {
    this.#enter(call, x.dtype, x.size, root);
    const chunk = this.#shared.slotBytes;
    let first = true;
    for (let begin = 0; first || begin < byteLength; begin += chunk) {
      const end = Math.min(byteLength, begin + chunk);
      step(begin, end);
      if (first) this.#checkSame(call);
      first = false;
      // Nobody may overwrite a slot before every rank has read it.
      this.#meet(call);
    }
  }

  #reduceBytes(call: "allReduce" | "reduceScatter", x: Tensor, op: ReduceOp): Uint8Array {
    const n = this.worldSize;
    const bytes = x.bytesSync();
    const out = new Uint8Array(bytes.byteLength);
    const esize = byteSize(x.dtype);
    this.#chunks(call, x, bytes.byteLength, 0, (begin, end) => {
      this.#slot(this.rank).set(bytes.subarray(begin, end));
      this.#meet(call);
      const count = (end - begin) / esize;
      const parts = Array.from({ length: n }, (_, r) => this.#slot(r).subarray(0, end - begin));
      reduceInto(out.subarray(begin, end), parts, count, x.dtype, op, n);
    });
    return out;
  }

  /** A barrier over all ranks, aware of aborts and timeouts. */
  #meet(call: string): void {
    const ctrl = this.#ctrl;
    const gen = Atomics.load(ctrl, GEN);
    if (Atomics.add(ctrl, COUNT, 1) === this.worldSize - 1) {
      Atomics.store(ctrl, COUNT, 0);
      Atomics.add(ctrl, GEN, 1);
      Atomics.notify(ctrl, GEN);
      return;
    }
    const deadline = performance.now() + this.#shared.timeoutMs;
    while (Atomics.load(ctrl, GEN) === gen) {
      this.#throwIfAborted(call);
      const left = deadline - performance.now();
      if (left <= 0) {
        const mine = this.#header(this.rank)[1];
        const late = Array.from({ length: this.worldSize }, (_, r) => r).filter((r) => this.#header(r)[1] < mine);
        throw new CollectiveTimeoutError(
          `${call}: rank ${this.rank} waited ${this.#shared.timeoutMs} ms for the other ranks` +
            (late.length > 0 ? `; rank(s) ${late.join(", ")} never reached call #${mine}` : ""),
        );
      }
      Atomics.wait(ctrl, GEN, gen, Math.min(left, 100));
    }
    this.#throwIfAborted(call);
  }

  #waitFlag(flag: number, whileValue: number, what: string, peers: number[]): void {
    const deadline = performance.now() + this.#shared.timeoutMs;
    while (Atomics.load(this.#ctrl, flag) === whileValue) {
      this.#throwIfAborted(what);
      const left = deadline - performance.now();
      if (left <= 0) throw new CollectiveTimeoutError(`${what}: rank ${this.rank} waited ${this.#shared.timeoutMs} ms for rank ${peers.join(", ")}`);
      Atomics.wait(this.#ctrl, flag, whileValue, Math.min(left, 100));
    }
  }

  #throwIfAborted(call: string): void {
    const a = Atomics.load(this.#ctrl, ABORT);
    if (a !== 0) throw new CollectiveAbortedError(a - 1, call);
  }
}

function checkReduceOp(call: string, op: ReduceOp, dtype: DType): void {
  if (!["sum", "avg", "max", "min"].includes(op)) argError(call, "op", "'sum', 'avg', 'max' or 'min'", String(op));
  if (op === "avg" && !isFloat(dtype)) argError(call, "op", `'sum', 'max' or 'min' for ${dtype} ('avg' needs a float dtype)`, op);
}

/** Typed views of little-endian slot bytes (slots and chunks are aligned to the element size). */
function view(dtype: DType, b: Uint8Array, count: number): ArrayLike<number> & { [i: number]: number } {
  switch (dtype) {
    case "f32":
      return new Float32Array(b.buffer, b.byteOffset, count);
    case "f64":
      return new Float64Array(b.buffer, b.byteOffset, count);
    case "i32":
      return new Int32Array(b.buffer, b.byteOffset, count);
    case "u8":
      return new Uint8Array(b.buffer, b.byteOffset, count);
    case "f16":
    case "bf16":
      return new Uint16Array(b.buffer, b.byteOffset, count);
  }
}

/** out = parts[0] ∘ parts[1] ∘ … in rank order, each step rounded to the dtype (see the header). */
function reduceInto(out: Uint8Array, parts: Uint8Array[], count: number, dtype: DType, op: ReduceOp, n: number): void {
  const half = dtype === "f16" || dtype === "bf16";
  const toNumber = dtype === "f16" ? f16ToF32 : bf16ToF32;
  const read = (b: Uint8Array): Float64Array => {
    const v = view(dtype, b, count);
    return half ? Float64Array.from(v, toNumber) : Float64Array.from(v);
  };
  const acc = read(parts[0]);
  for (let r = 1; r < n; r++) {
    const v = read(parts[r]);
    for (let i = 0; i < count; i++) {
      const a = acc[i];
      const x = v[i];
      const y = op === "max" ? (a >= x || Number.isNaN(a) ? a : x) : op === "min" ? (a <= x || Number.isNaN(a) ? a : x) : a + x;
      acc[i] = roundTo(dtype, y);
    }
  }
  if (op === "avg") for (let i = 0; i < count; i++) acc[i] = roundTo(dtype, acc[i] / n);
  // Written through a fresh, aligned buffer: `out` may sit at any offset of the result.
  const aligned = new Uint8Array(out.byteLength);
  const o = view(dtype, aligned, count);
  const encodeHalf = dtype === "f16" ? encodeF16 : encodeBf16;
  for (let i = 0; i < count; i++) o[i] = half ? encodeHalf(acc[i]) : acc[i];
  out.set(aligned);
}
