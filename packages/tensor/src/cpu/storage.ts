/**
 * CPU storage: one byte buffer per allocation. Shared memory is used when the platform has it,
 * so worker threads can compute on tensors without copies.
 */
import type { TensorRef } from "../backend.js";
import { type DataArray, decode, type DType, encode, type StorageArray, storageView } from "../dtype.js";

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

/** Float values as kernels compute with them: f32 (f16 and bf16 decode to it) or f64. */
export type FloatArray = Float32Array | Float64Array;

/** The raw storage view of a tensor. */
export function view(ref: CpuRef): StorageArray {
  return storageView(ref.dtype, ref.storage.bytes.buffer, ref.storage.bytes.byteOffset, ref.size);
}

/** Float values of a tensor: the storage itself for f32/f64, a decoded copy for f16/bf16, a converted copy for ints. */
export function readFloat(ref: CpuRef): FloatArray {
  if (ref.dtype === "f32" || ref.dtype === "f64") return view(ref) as FloatArray;
  const v = decode(ref.dtype, view(ref));
  return v instanceof Float32Array ? v : Float32Array.from(v);
}

/** Numbers of any dtype (f16/bf16 decoded). */
export function readAny(ref: CpuRef): DataArray {
  return decode(ref.dtype, view(ref));
}

/**
 * A float scratch array for an output, and `commit` to store it in the output's dtype. For f32 and
 * f64 outputs the scratch is the storage itself and `commit` does nothing.
 */
export function writeFloat(ref: CpuRef): { out: FloatArray; commit: () => void } {
  if (ref.dtype === "f32" || ref.dtype === "f64") return { out: view(ref) as FloatArray, commit() {} };
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
  else dst.set(values);
}

export function dtypeOf(ref: CpuRef): DType {
  return ref.dtype;
}
