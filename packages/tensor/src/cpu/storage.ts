/**
 * CPU storage: one byte buffer per allocation. Shared memory is used when the platform has it,
 * so worker threads can compute on tensors without copies.
 */
import type { TensorRef } from "../backend.js";
import { decode, type DType, encode, storageView } from "../dtype.js";

export interface CpuStorage {
  readonly bytes: Uint8Array;
}

export type CpuRef = TensorRef<CpuStorage>;

const shared = typeof SharedArrayBuffer !== "undefined";

export function allocateBytes(byteLength: number): CpuStorage {
  // Round up to 8 bytes so every typed-array view is aligned.
  const padded = Math.ceil(byteLength / 8) * 8;
  const buffer = shared ? new SharedArrayBuffer(padded) : new ArrayBuffer(padded);
  return { bytes: new Uint8Array(buffer, 0, byteLength) };
}

/** The raw storage view of a tensor. */
export function view(ref: CpuRef): Float32Array | Int32Array | Uint16Array | Uint8Array {
  return storageView(ref.dtype, ref.storage.bytes.buffer, ref.storage.bytes.byteOffset, ref.size);
}

/** Float values of a tensor: the storage itself for f32, a decoded copy for f16/bf16, a converted copy for ints. */
export function readFloat(ref: CpuRef): Float32Array {
  if (ref.dtype === "f32") return view(ref) as Float32Array;
  const v = decode(ref.dtype, view(ref));
  return v instanceof Float32Array ? v : Float32Array.from(v);
}

/** Numbers of any dtype (f16/bf16 decoded). */
export function readAny(ref: CpuRef): Float32Array | Int32Array | Uint8Array {
  return decode(ref.dtype, view(ref));
}

/**
 * A float32 scratch array for an output, and `commit` to store it in the output's dtype. For f32
 * outputs the scratch is the storage itself and `commit` does nothing.
 */
export function writeFloat(ref: CpuRef): { out: Float32Array; commit(): void } {
  if (ref.dtype === "f32") return { out: view(ref) as Float32Array, commit() {} };
  const out = new Float32Array(ref.size);
  return {
    out,
    commit() {
      storeAs(ref, out);
    },
  };
}

/** Stores numbers into an output of any dtype, converting (round to nearest even for f16/bf16). */
export function storeAs(ref: CpuRef, values: ArrayLike<number>): void {
  const dst = view(ref);
  if (ref.dtype === "f16" || ref.dtype === "bf16") dst.set(encode(ref.dtype, values));
  else dst.set(values as ArrayLike<number>);
}

export function dtypeOf(ref: CpuRef): DType {
  return ref.dtype;
}
