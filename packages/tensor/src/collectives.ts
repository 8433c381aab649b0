/**
 * Collective communication over a group of ranks: the interface data- and sequence-parallel code is
 * written against. Each rank (a process per GPU, or a worker thread in the CPU implementation) holds
 * one `Collective` bound to its own backend; tensors passed in must live on that backend.
 *
 * Calls are made by every rank in the same order with the same shapes and dtypes (as with NCCL or
 * torch.distributed). On a GPU they only enqueue work on the backend's stream, so they return at once
 * and the result is ready for whatever op is enqueued next; only a read or `barrier` waits.
 * `allReduceAsync` runs on a separate stream where the implementation has one, so it can overlap
 * with compute; its result may be used only after `wait()`.
 *
 * Letters: N the number of ranks (`worldSize`).
 */
import type { Backend } from "./backend.js";
import type { DType } from "./dtype.js";
import type { Tensor } from "./tensor.js";

export type ReduceOp = "sum" | "avg" | "max" | "min";

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
  allReduce(x: Tensor, op?: ReduceOp): Tensor;
  /** Like `allReduce`, on the communication stream, for overlap with compute. */
  allReduceAsync(x: Tensor, op?: ReduceOp): PendingCollective;
  /** Every rank's `x` stacked in rank order: [N, ...x.shape]. */
  allGather(x: Tensor): Tensor;
  /** `x` [N·n, ...] reduced over ranks; rank r gets rows r·n … (r+1)·n − 1: [n, ...]. */
  reduceScatter(x: Tensor, op?: ReduceOp): Tensor;
  /** Rank `root`'s `x` on every rank (the others' `x` gives only shape and dtype). */
  broadcast(x: Tensor, root: number): Tensor;
  send(x: Tensor, peer: number): void;
  recv(shape: readonly number[], dtype: DType, peer: number): Tensor;
  /** Resolves once every rank has reached this call and all enqueued collectives have finished. */
  barrier(): Promise<void>;
  /** Leaves the group; the collective cannot be used afterwards. */
  dispose(): void;
}
