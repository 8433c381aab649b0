/**
 * Collective communication over a group of ranks: the interface data- and sequence-parallel code is
 * written against. Each rank (a process per GPU, or a worker thread in the CPU implementation) holds
 * one `Collective` bound to its own backend; tensors passed in must live on that backend.
 *
 * Calls are made by every rank in the same order with the same shapes and dtypes (as with NCCL or
 * torch.distributed). On a GPU they only enqueue work on the backend's stream, so they return at once
 * and the result is ready for whatever op is enqueued next; only a read or `barrier` waits.
 * `allReduceAsync`, `sendAsync` and `recvAsync` run on a separate stream where the implementation
 * has one, so they can overlap with compute and a rank need not wait for a slower peer; a result may
 * be used only after `wait()`.
 *
 * Letters: N the number of ranks (`worldSize`).
 */
import type { Backend } from "./backend.js";
import type { DType } from "./dtype.js";
import { argError } from "./errors.js";
import type { Tensor } from "./tensor.js";

export type ReduceOp = "sum" | "avg" | "max" | "min";

/**
 * Options of `allReduce` and `allReduceAsync`.
 *
 * `inPlace`: the result is written over `x`'s storage and returned as a new handle to it (dispose
 * both, as for any result); no output is allocated. Every tensor sharing that storage (reshapes of
 * `x`) sees the sum, so use it only on a buffer nothing else reads, e.g. a scratch gradient bucket.
 * Callers use the returned tensor either way, so an implementation may ignore it and allocate.
 *
 * @example
 * const flat = concat(grads.map((g) => reshape(g, [g.size])), 0); // scratch
 * const summed = group.allReduce(flat, "sum", { inPlace: true }); // same storage as flat
 */
export interface AllReduceOptions {
  inPlace?: boolean;
}

/** Whether `options` (of `method`) asks for an in-place all-reduce; throws naming the bad field. */
export function allReduceInPlace(method: string, options: unknown): boolean {
  if (options === undefined) return false;
  if (options === null || typeof options !== "object") argError(method, "options", "an object such as { inPlace: true }", JSON.stringify(options) ?? typeof options);
  const inPlace = (options as AllReduceOptions).inPlace;
  if (inPlace !== undefined && typeof inPlace !== "boolean") argError(method, "options.inPlace", "a boolean", JSON.stringify(inPlace));
  return inPlace === true;
}

/** A collective in flight: `value` may be read or used as an op input only after `wait()`. */
export interface PendingCollective {
  readonly value: Tensor;
  /** Orders later work after the collective (on a GPU the stream waits; the host does not block). */
  wait(): Tensor;
}

export interface Collective {
  readonly rank: number;
  readonly worldSize: number;
  /** The backend every tensor of this rank lives on. */
  readonly backend: Backend;
  /** Elementwise reduction over ranks; every rank gets the result (same shape and dtype as `x`). */
  allReduce(x: Tensor, op?: ReduceOp, options?: AllReduceOptions): Tensor;
  /** Like `allReduce`, on the communication stream, for overlap with compute. */
  allReduceAsync(x: Tensor, op?: ReduceOp, options?: AllReduceOptions): PendingCollective;
  /** Every rank's `x` stacked in rank order: [N, ...x.shape]. */
  allGather(x: Tensor): Tensor;
  /** `x` [N·n, ...] reduced over ranks; rank r gets rows r·n … (r+1)·n − 1: [n, ...]. */
  reduceScatter(x: Tensor, op?: ReduceOp): Tensor;
  /** Rank `root`'s `x` on every rank (the others' `x` gives only shape and dtype). */
  broadcast(x: Tensor, root: number): Tensor;
  send(x: Tensor, peer: number): void;
  recv(shape: readonly number[], dtype: DType, peer: number): Tensor;
  /**
   * `send` on the communication stream where the implementation has one: the compute stream goes on
   * without waiting for the peer to receive. `value` is `x`, which stays readable; `wait()` orders
   * later work after the send (call it before `x`'s storage may be reused, e.g. before disposing it).
   */
  sendAsync(x: Tensor, peer: number): PendingCollective;
  /** `recv` on the communication stream where the implementation has one: `value` is usable after `wait()`. */
  recvAsync(shape: readonly number[], dtype: DType, peer: number): PendingCollective;
  /** Resolves once every rank has reached this call and all enqueued collectives have finished. */
  barrier(): Promise<void>;
  /** Leaves the group; the collective cannot be used afterwards. */
  dispose(): void;
}
