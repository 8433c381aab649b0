/**
 * Collectives over NCCL: `Collective` (packages/tensor/src/collectives.ts) for CUDA backends, one
 * rank per backend. native/nccl.cc holds the NCCL side (library loading, the watchdog that turns
 * a dead peer into an error, the communication stream).
 *
 * Ranks usually live in separate processes (one per GPU, started by a launcher that exchanges the
 * unique id). Several ranks of one communicator may also live in one thread, e.g. one process
 * driving two GPUs in tests and benchmarks: NCCL then needs their calls made together inside
 * `ncclGroup`, and calling one of them outside a group is refused instead of hanging.
 *
 * Letters: N the number of ranks (worldSize).
 *
 * @example
 * import { createCudaBackend, createNcclCollective, ncclUniqueId } from "@lightning-ts/cuda";
 * // in each process, with RANK and WORLD_SIZE from the launcher and the same 128-byte id on every rank
 * const backend = createCudaBackend({ device: Number(process.env.LOCAL_RANK) });
 * const uniqueId = rank === 0 ? ncclUniqueId() : await receiveFromRank0();
 * const group = await createNcclCollective({ backend, rank, worldSize, uniqueId });
 * const total = group.allReduce(gradient, "sum");
 * const same = group.allReduce(scratch, "sum", { inPlace: true }); // no output allocated
 */
import { type AllReduceOptions, allReduceInPlace, byteSize, type Collective, DTYPES, type DType, type PendingCollective, type ReduceOp, retain, sizeOf, Tensor } from "@lightning-ts/tensor";
import { CudaBackend } from "./backend.js";
import type { CudaStorage } from "./kernels.js";
import { loadAddon, type NativeCommunicator, type NativeNccl } from "./native.js";

const REDUCE_OPS: readonly ReduceOp[] = ["sum", "avg", "max", "min"];
const NCCL_DTYPES: readonly DType[] = ["f32", "f16", "bf16", "i32", "u8"];

/** Default collective timeout: a collective running longer than this means a peer is gone. */
const DEFAULT_TIMEOUT_MS = 30_000;
/** Default wait for every rank to join at creation. */
const DEFAULT_INIT_TIMEOUT_MS = 120_000;

export interface NcclCollectiveOptions {
  /** This rank's backend: every tensor passed in must live there. */
  backend: CudaBackend;
  rank: number;
  worldSize: number;
  /** The 128 bytes of `ncclUniqueId()` made by one rank and handed to all (the launcher's rendezvous). */
  uniqueId: Uint8Array;
  /**
   * A collective still running this long after it started on the GPU fails: the communicator is
   * aborted and the backend's next read or sync throws (within timeoutMs + 50 ms). Default 30 s,
   * or LIGHTNING_NCCL_TIMEOUT_MS.
   */
  timeoutMs?: number;
  /** How long creation waits for every rank to join. Default 120 s. */
  initTimeoutMs?: number;
}

function nccl(): NativeNccl {
  return loadAddon().nccl;
}

/** The NCCL library in use ({ version: "2.27.3", path }), or throws saying where it looked and what to set. */
export function ncclVersion(): { code: number; version: string; path: string } {
  return nccl().version();
}

/** Why NCCL cannot be used here, or null when it can (loads the library, starts nothing). */
export function ncclUnavailableReason(): string | null {
  try {
    ncclVersion();
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** A new NCCL unique id (128 bytes): made once, by one rank, and given to every rank. */
export function ncclUniqueId(): Uint8Array {
  return nccl().uniqueId();
}

// Group state of this thread: tensors kept alive until the group's end (NCCL enqueues the work
// that reads and writes them only then), and what waits for the end (barrier).
let groupDepth = 0;
let heldInGroup: Tensor[] = [];
let afterGroup: (() => void)[] = [];

/**
 * Runs `fn` inside ncclGroupStart/ncclGroupEnd: the NCCL calls made in it are launched together
 * at the end. Needed when one thread drives several ranks of a communicator (every rank's call of
 * a collective, or a send and its recv, in one group); `fn` may make only collective calls (no
 * other op may use their results before the group ends). Returns what `fn` returns.
 *
 * @example
 * const [y0, y1] = ncclGroup(() => [rank0.allReduce(x0), rank1.allReduce(x1)]);
 */
export function ncclGroup<R>(fn: () => R): R {
  const lib = nccl();
  lib.groupStart();
  groupDepth++;
  let result: R;
  try {
    result = fn();
    if (result instanceof Promise) throw new Error("ncclGroup(fn): fn must be synchronous (it returned a Promise)");
  } finally {
    groupDepth--;
    try {
      lib.groupEnd();
    } finally {
      if (groupDepth === 0) {
        const held = heldInGroup;
        const waiting = afterGroup;
        heldInGroup = [];
        afterGroup = [];
        for (const t of held) t.dispose();
        for (const f of waiting) f();
      }
    }
  }
  return result;
}

/** Ranks of each communicator (by unique id) that live in this thread. */
const localRanks = new Map<string, Set<number>>();
const idKey = (id: Uint8Array) => Buffer.from(id).toString("hex");

/**
 * Joins rank `rank` of a group of `worldSize` to the NCCL communicator named by `uniqueId`, on
 * `backend`'s device. Resolves once every rank has joined; rejects after `initTimeoutMs` otherwise.
 */
export async function createNcclCollective(options: NcclCollectiveOptions): Promise<CudaCollective> {
  const { backend, rank, worldSize, uniqueId } = options;
  if (!(backend instanceof CudaBackend)) throw new Error(`createNcclCollective: backend must be a CudaBackend, got ${describe(backend)}`);
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`createNcclCollective: worldSize must be a positive integer, got ${String(worldSize)}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new Error(`createNcclCollective: rank must be an integer in [0, ${worldSize}), got ${String(rank)}`);
  if (!(uniqueId instanceof Uint8Array) || uniqueId.byteLength !== 128) {
    throw new Error(`createNcclCollective: uniqueId must be the 128 bytes of ncclUniqueId(), got ${uniqueId instanceof Uint8Array ? `${uniqueId.byteLength} bytes` : describe(uniqueId)}`);
  }
  const envTimeout = Number(process.env.LIGHTNING_NCCL_TIMEOUT_MS);
  const timeoutMs = options.timeoutMs ?? (envTimeout > 0 ? envTimeout : DEFAULT_TIMEOUT_MS);
  const initTimeoutMs = options.initTimeoutMs ?? DEFAULT_INIT_TIMEOUT_MS;
  for (const [name, v] of [["timeoutMs", timeoutMs], ["initTimeoutMs", initTimeoutMs]] as const) {
    if (!(v > 0)) throw new Error(`createNcclCollective: ${name} must be a positive number of milliseconds, got ${String(v)}`);
  }
  const comm = new (nccl().Communicator)(backend.runtime, uniqueId, worldSize, rank, timeoutMs);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      comm.dispose();
      reject(
        new Error(
          `createNcclCollective: rank ${rank} of ${worldSize} on cuda:${backend.device} waited ${initTimeoutMs} ms for the other ranks to join (ncclCommInitRank); ` +
            "check that every rank started, on its own GPU, with the same unique id",
        ),
      );
    }, initTimeoutMs);
  });
  try {
    await Promise.race([comm.init(), timedOut]);
  } finally {
    clearTimeout(timer);
  }
  return new CudaCollective(comm, backend, rank, worldSize, idKey(uniqueId));
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return (v.constructor as { name?: string } | undefined)?.name ?? "an object";
  return typeof v;
}

/**
 * One rank of an NCCL communicator. Results are new tensors on the rank's backend, except an
 * in-place all-reduce's: a new handle to its input's storage, which NCCL overwrote.
 */
export class CudaCollective implements Collective {
  readonly #comm: NativeCommunicator;
  readonly #key: string;
  #disposed = false;

  /** @internal Made by `createNcclCollective`. */
  constructor(
    comm: NativeCommunicator,
    readonly backend: CudaBackend,
    readonly rank: number,
    readonly worldSize: number,
    key: string,
  ) {
    this.#comm = comm;
    this.#key = key;
    const set = localRanks.get(key) ?? new Set<number>();
    set.add(rank);
    localRanks.set(key, set);
  }

  allReduce(x: Tensor, op: ReduceOp = "sum", options?: AllReduceOptions): Tensor {
    this.#enter("allReduce");
    this.#check("allReduce", "x", x);
    this.#checkOp("allReduce", op, x.dtype);
    const inPlace = allReduceInPlace("allReduce", options);
    // In place, the result is a second handle to x's storage (NCCL allows send == recv).
    const y = inPlace ? new Tensor(x.handle, x.shape, x.dtype) : this.#output(x.shape, x.dtype);
    if (x.size > 0) this.#call(() => this.#comm.allReduce(ptr(x), ptr(y), x.size, code(x.dtype), op, false), inPlace ? [x] : [x, y], y);
    return y;
  }

  allReduceAsync(x: Tensor, op: ReduceOp = "sum", options?: AllReduceOptions): PendingCollective {
    this.#enter("allReduceAsync");
    this.#check("allReduceAsync", "x", x);
    this.#checkOp("allReduceAsync", op, x.dtype);
    const inPlace = allReduceInPlace("allReduceAsync", options);
    const y = inPlace ? new Tensor(x.handle, x.shape, x.dtype) : this.#output(x.shape, x.dtype);
    if (x.size === 0) return { value: y, wait: () => y };
    let token = -1;
    this.#call(() => (token = this.#comm.allReduce(ptr(x), ptr(y), x.size, code(x.dtype), op, true)), [], y);
    // The communication stream reads x and writes y until wait(): neither may go back to the
    // allocator (which hands memory on in compute-stream order) before the compute stream waits.
    return this.#pending("allReduceAsync", token, y, inPlace ? [retain(x)] : [retain(x), retain(y)]);
  }

  allGather(x: Tensor): Tensor {
    this.#enter("allGather");
    this.#check("allGather", "x", x);
    const y = this.#output([this.worldSize, ...x.shape], x.dtype);
    if (x.size > 0) this.#call(() => this.#comm.allGather(ptr(x), ptr(y), x.size, code(x.dtype)), [x, y], y);
    return y;
  }

  reduceScatter(x: Tensor, op: ReduceOp = "sum"): Tensor {
    this.#enter("reduceScatter");
    this.#check("reduceScatter", "x", x);
    this.#checkOp("reduceScatter", op, x.dtype);
    if (x.rank === 0 || x.shape[0] % this.worldSize !== 0) {
      throw new Error(`reduceScatter: x must have a first dim divisible by worldSize ${this.worldSize}, got ${x.describe()}`);
    }
    const y = this.#output([x.shape[0] / this.worldSize, ...x.shape.slice(1)], x.dtype);
    if (y.size > 0) this.#call(() => this.#comm.reduceScatter(ptr(x), ptr(y), y.size, code(x.dtype), op), [x, y], y);
    return y;
  }

  broadcast(x: Tensor, root: number): Tensor {
    this.#enter("broadcast");
    this.#check("broadcast", "x", x);
    this.#checkRank("broadcast", "root", root);
    const y = this.#output(x.shape, x.dtype);
    if (x.size > 0) this.#call(() => this.#comm.broadcast(ptr(x), ptr(y), x.size, code(x.dtype), root), [x, y], y);
    return y;
  }

  send(x: Tensor, peer: number): void {
    this.#enter("send");
    this.#check("send", "x", x);
    this.#checkRank("send", "peer", peer);
    if (x.size > 0) this.#call(() => this.#comm.send(ptr(x), x.size, code(x.dtype), peer), [x], null);
  }

  recv(shape: readonly number[], dtype: DType, peer: number): Tensor {
    this.#enter("recv");
    this.#checkRecv("recv", shape, dtype, peer);
    const y = this.#output(shape, dtype);
    if (y.size > 0) this.#call(() => this.#comm.recv(ptr(y), y.size, code(dtype), peer), [y], y);
    return y;
  }

  sendAsync(x: Tensor, peer: number): PendingCollective {
    this.#enter("sendAsync");
    this.#check("sendAsync", "x", x);
    this.#checkRank("sendAsync", "peer", peer);
    if (x.size === 0) return { value: x, wait: () => x };
    let token = -1;
    this.#call(() => (token = this.#comm.send(ptr(x), x.size, code(x.dtype), peer, true)), [], null);
    // The communication stream reads x until wait(): its storage may not go back to the allocator before.
    return this.#pending("sendAsync", token, x, [retain(x)]);
  }

  recvAsync(shape: readonly number[], dtype: DType, peer: number): PendingCollective {
    this.#enter("recvAsync");
    this.#checkRecv("recvAsync", shape, dtype, peer);
    const y = this.#output(shape, dtype);
    if (y.size === 0) return { value: y, wait: () => y };
    let token = -1;
    this.#call(() => (token = this.#comm.recv(ptr(y), y.size, code(dtype), peer, true)), [], y);
    return this.#pending("recvAsync", token, y, [retain(y)]);
  }

  async barrier(): Promise<void> {
    this.#enter("barrier");
    const token = this.#output([1], "i32");
    this.backend.write(token.handle.storage as CudaStorage, new Uint8Array(4));
    this.#call(() => this.#comm.allReduce(ptr(token), ptr(token), 1, code("i32"), "sum", false), [token], null);
    try {
      // Inside a group the all-reduce is enqueued only at the group's end.
      if (groupDepth > 0) await new Promise<void>((resolve) => afterGroup.push(resolve));
      await this.backend.sync();
    } finally {
      token.dispose();
    }
  }

  /** Why this communicator failed ("" while it has not): a peer gone, a timeout, an NCCL error. */
  get failure(): string {
    return this.#comm.failure();
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#enter("dispose");
    this.#disposed = true;
    const set = localRanks.get(this.#key);
    set?.delete(this.rank);
    if (set?.size === 0) localRanks.delete(this.#key);
    this.#comm.dispose();
  }

  /** A collective on the communication stream: `wait()` makes the compute stream wait for it, then lets `held` go. */
  #pending(method: string, token: number, value: Tensor, held: Tensor[]): PendingCollective {
    let waited = false;
    const comm = this.#comm;
    return {
      value,
      wait: () => {
        if (waited) return value;
        if (groupDepth > 0) throw new Error(`${method}: wait() inside ncclGroup; call it after the group ends`);
        comm.wait(token);
        waited = true;
        for (const t of held) t.dispose();
        return value;
      },
    };
  }

  /** Checks a receive's shape, dtype and peer. */
  #checkRecv(method: string, shape: readonly number[], dtype: DType, peer: number): void {
    if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
      throw new Error(`${method}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!NCCL_DTYPES.includes(dtype)) throw new Error(`${method}: dtype must be one of ${NCCL_DTYPES.join(", ")}, got ${String(dtype)}`);
    this.#checkRank(method, "peer", peer);
  }

  /** Refuses a disposed communicator, and a call that one thread cannot make alone. */
  #enter(method: string): void {
    if (this.#disposed) throw new Error(`${method}: this collective (rank ${this.rank} of ${this.worldSize}) was disposed`);
    const here = localRanks.get(this.#key);
    if (groupDepth === 0 && here && here.size > 1) {
      throw new Error(
        `${method}: ranks ${[...here].sort((a, b) => a - b).join(", ")} of this communicator live in this thread, so NCCL needs their calls together: ` +
          "make them inside ncclGroup(() => { ... }) (else the first call would wait forever for the others)",
      );
    }
  }

  #check(method: string, name: string, x: unknown): asserts x is Tensor {
    if (!(x instanceof Tensor)) throw new Error(`${method}: ${name} must be a Tensor, got ${describe(x)}`);
    if (x.isDisposed) throw new Error(`${method}: ${name} must be a live tensor, got tensor #${x.id} that was disposed`);
    if (x.backend !== this.backend) {
      throw new Error(`${method}: ${name} must be a tensor on this collective's backend (cuda:${this.backend.device}, rank ${this.rank}), got one on ${x.backend.name}${x.backend instanceof CudaBackend ? `:${x.backend.device}` : ""}`);
    }
    if (!NCCL_DTYPES.includes(x.dtype)) throw new Error(`${method}: ${name} must have dtype ${NCCL_DTYPES.join(", ")}, got ${x.dtype}`);
  }

  /** As the CPU implementation: `avg` only for float dtypes (an integer mean would have to round). */
  #checkOp(method: string, op: unknown, dtype: DType): void {
    if (!REDUCE_OPS.includes(op as ReduceOp)) throw new Error(`${method}: op must be one of ${REDUCE_OPS.map((o) => `"${o}"`).join(", ")}, got ${JSON.stringify(op)}`);
    if (op === "avg" && (dtype === "i32" || dtype === "u8")) throw new Error(`${method}: op must be "sum", "max" or "min" for ${dtype} ("avg" needs a float dtype), got "avg"`);
  }

  #checkRank(method: string, name: string, r: unknown): void {
    if (!Number.isInteger(r) || (r as number) < 0 || (r as number) >= this.worldSize) {
      throw new Error(`${method}: ${name} must be a rank in [0, ${this.worldSize}), got ${String(r)}`);
    }
  }

  #output(shape: readonly number[], dtype: DType): Tensor {
    const byteLength = sizeOf(shape) * byteSize(dtype);
    const storage = this.backend.allocate(byteLength);
    return new Tensor({ backend: this.backend, storage, byteLength, refs: 0 }, [...shape], dtype);
  }

  /** Makes one native call; inside a group, keeps `tensors` alive until its end. Frees `output` if the call throws. */
  #call(fn: () => void, tensors: Tensor[], output: Tensor | null): void {
    try {
      fn();
    } catch (err) {
      output?.dispose();
      throw err;
    }
    if (groupDepth > 0) for (const t of tensors) heldInGroup.push(retain(t));
  }
}

const ptr = (t: Tensor) => (t.handle.storage as CudaStorage).ptr;
const code = (dtype: DType) => DTYPES.indexOf(dtype);
