/**
 * CPU matmul: C (..., m, n) = op(A) (..., m, k) . op(B) (..., k, n), op = optional transpose of the
 * last two dims, batch dims broadcast NumPy-style.
 *
 * The arithmetic is matmul-engine.ts (packed panels and a WebAssembly micro-kernel: relaxed-SIMD
 * FMA 6x8 where the engine validates it, plain SIMD 4x8 otherwise, a plain JS twin without
 * WebAssembly). This file maps tensors onto it: f16/bf16 are decoded to f32, computed, and encoded
 * back; large problems are split by rows of the flattened (batch·m, n) output across worker threads.
 * Small-M products (decoding: a few rows times a weight matrix) run on the calling thread with the
 * weight's packed form cached (see `forgetPacked`). f64 takes a separate plain float64 loop.
 */
import type { Kernel } from "../backend.js";
import { matmulDims } from "../ops/specs.js";
import { sizeOf } from "../shape.js";
import { createGemmEngine, type GemmEngine, type GemmTask } from "./matmul-engine.js";
import { GemmPool, nodeWorkerThreads } from "./matmul-pool.js";
import { type CpuRef, type CpuStorage, readFloat, storeAs, view } from "./storage.js";
import { MATMUL_RELAXED_WASM_BASE64, MATMUL_WASM_BASE64 } from "./wasm/matmul-wasm.js";

/** Below this many multiply-adds a matmul stays on one thread: a worker round trip costs ~0.1 ms. */
const PARALLEL_MIN_MACS = 1 << 21;
/**
 * Up to this many output rows a matmul is "small-M": it stays on the calling thread and keeps B
 * packed between calls. Packing B costs about as much as multiplying ten rows by it, so for a
 * decoding step (1 to a few rows) the cache removes most of the work; larger M amortise the packing.
 */
const SMALL_M_ROWS = 16;

/** The micro-kernels: relaxed-SIMD FMA, plain SIMD, or the plain JS twin (no WebAssembly). */
export type MatmulKernelKind = "relaxed-simd" | "simd" | "js";

declare const WebAssembly: { validate(bytes: Uint8Array): boolean } | undefined;

const wasmBytes = new Map<MatmulKernelKind, Uint8Array | null>();
function kernelBytes(kind: MatmulKernelKind): Uint8Array | null {
  if (kind === "js") return null;
  let bytes = wasmBytes.get(kind);
  if (bytes === undefined) {
    try {
      const text = atob(kind === "relaxed-simd" ? MATMUL_RELAXED_WASM_BASE64 : MATMUL_WASM_BASE64);
      bytes = Uint8Array.from(text, (ch) => ch.charCodeAt(0));
    } catch {
      bytes = null;
    }
    wasmBytes.set(kind, bytes);
  }
  return bytes;
}

function validates(kind: MatmulKernelKind): boolean {
  const bytes = kernelBytes(kind);
  return bytes !== null && typeof WebAssembly !== "undefined" && WebAssembly.validate(bytes);
}

let bestKind: MatmulKernelKind | undefined;
/**
 * The fastest kernel this engine runs, decided once: the relaxed-SIMD module validates only where
 * relaxed SIMD is supported (Node ≥ 22 / V8 ≥ 11.4), the plain one wherever WebAssembly SIMD is.
 */
export function matmulKernelKind(): MatmulKernelKind {
  return (bestKind ??= validates("relaxed-simd") ? "relaxed-simd" : validates("simd") ? "simd" : "js");
}

// One engine per kernel kind serves every backend on this thread: kernels are synchronous, so it is
// never re-entered.
const engines = new Map<MatmulKernelKind, GemmEngine>();
function engine(kind: MatmulKernelKind): GemmEngine {
  let e = engines.get(kind);
  if (!e) engines.set(kind, (e = createGemmEngine(kernelBytes(kind))));
  return e;
}

/** Whether the default engine on this thread runs a WebAssembly SIMD micro-kernel (false: plain JS). */
export function matmulUsesSimd(): boolean {
  return engine(matmulKernelKind()).simd;
}

/**
 * Drops the packed copies cached for `storage` (as matmul's B operand). The CPU backend calls it
 * whenever a storage is written — by `write` or as any kernel's output — or freed, so a cached
 * pack never outlives the values it was made from.
 */
export function forgetPacked(storage: CpuStorage): void {
  for (const e of engines.values()) e.forget(storage);
}

/** Floats of packed B cached by this thread's engines (for tests and diagnostics). */
export function packedCacheFloats(): number {
  let sum = 0;
  for (const e of engines.values()) sum += e.cachedFloats();
  return sum;
}

export interface MatmulKernelOptions {
  /** The backend: its dispose() also terminates this kernel's worker threads. */
  owner?: { dispose(): void };
  /** Micro-kernel to run (default: `matmulKernelKind()`); tests force the fallbacks with it. */
  kind?: MatmulKernelKind;
  /**
   * Whether B's storage may be cached in packed form for small-M products. Only storages whose
   * writes and frees reach `forgetPacked` qualify (the backend's live tensors); default: none.
   */
  cacheable?: (storage: CpuStorage) => boolean;
}

/**
 * A matmul kernel using up to `threads` threads (the calling one included). Passing the backend as
 * `owner` makes its dispose() also terminate this kernel's worker threads.
 */
export function createMatmulKernel(threads: number, ownerOrOptions?: { dispose(): void } | MatmulKernelOptions): Kernel<"matmul", CpuStorage> {
  const options: MatmulKernelOptions = ownerOrOptions && "dispose" in ownerOrOptions ? { owner: ownerOrOptions } : (ownerOrOptions ?? {});
  const { owner, cacheable } = options;
  const kind = options.kind ?? matmulKernelKind();
  const local = engine(kind);
  let pool: GemmPool | null = null;
  if (owner) {
    // Chained here so the backend needs to know nothing about the pool.
    const disposeOwner = owner.dispose.bind(owner);
    owner.dispose = () => {
      pool?.dispose();
      pool = null;
      disposeOwner();
    };
  }

  return ({ inputs, outputs, attrs }) => {
    const [a, b] = inputs as [CpuRef, CpuRef];
    const out = outputs[0];
    const { m, n, k, batch } = matmulDims(a.shape, b.shape, attrs.transA, attrs.transB);
    const batches = sizeOf(batch);
    const rows = batches * m;
    if (rows === 0 || n === 0) return;
    if (out.dtype === "f64") {
      matmulF64(a, b, out, m, n, k, batch, attrs.transA, attrs.transB);
      return;
    }

    // Thread shares are whole micro-tiles.
    const grain = local.mr;
    const small = rows <= SMALL_M_ROWS;
    const parts = Math.min(threads, Math.floor(rows / grain));
    const parallel = !small && parts > 1 && batches * m * n * k >= PARALLEL_MIN_MACS && nodeWorkerThreads() !== null;
    // One B matrix for every batch (a weight): its packed form can be kept between calls.
    const bKey = small && cacheable?.(b.storage) && b.shape.length === 2 ? b.storage : undefined;

    const c = out.dtype === "f32" && (!parallel || isShared(view(out))) ? (view(out) as Float32Array) : scratch(out.size, parallel);
    const base = {
      bKey,
      a: floatInput(a, parallel),
      b: floatInput(b, parallel),
      c,
      aOffsets: batchOffsets(batch, a.shape, m * k),
      bOffsets: batchOffsets(batch, b.shape, k * n),
      m,
      n,
      k,
      transA: attrs.transA,
      transB: attrs.transB,
    };

    if (!parallel) {
      local.run({ ...base, rowStart: 0, rowEnd: rows });
    } else {
      const tasks: GemmTask[] = [];
      for (let t = 0; t < parts; t++) {
        const rowStart = t === 0 ? 0 : Math.round((rows * t) / parts / grain) * grain;
        const rowEnd = t === parts - 1 ? rows : Math.round((rows * (t + 1)) / parts / grain) * grain;
        tasks.push({ ...base, bKey: undefined, rowStart, rowEnd });
      }
      pool ??= new GemmPool(threads - 1, kernelBytes(kind));
      pool.run(local, tasks);
    }
    if (c.buffer !== out.storage.bytes.buffer) storeAs(out, c);
  };
}

/** Single-threaded matmul kernel. */
export const matmulKernel: Kernel<"matmul", CpuStorage> = createMatmulKernel(1);

function isShared(x: ArrayBufferView): boolean {
  return typeof SharedArrayBuffer !== "undefined" && x.buffer instanceof SharedArrayBuffer;
}

function scratch(length: number, shared: boolean): Float32Array {
  return shared ? new Float32Array(new SharedArrayBuffer(length * 4)) : new Float32Array(length);
}

/**
 * f64 matmul, accumulated in float64: f64 exists for oracles and finite-difference gradient checks,
 * which need the exact double result more than speed, so it is a plain loop on one thread.
 */
function matmulF64(a: CpuRef, b: CpuRef, out: CpuRef, m: number, n: number, k: number, batch: number[], transA: boolean, transB: boolean): void {
  const [av, bv, cv] = [view(a), view(b), view(out)] as Float64Array[];
  const aOffsets = batchOffsets(batch, a.shape, m * k);
  const bOffsets = batchOffsets(batch, b.shape, k * n);
  const [rsA, csA] = transA ? [1, m] : [k, 1];
  const [rsB, csB] = transB ? [1, k] : [n, 1];
  cv.fill(0);
  for (let bi = 0; bi < aOffsets.length; bi++) {
    const c0 = bi * m * n;
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) {
        const x = av[aOffsets[bi] + i * rsA + p * csA];
        const row = bOffsets[bi] + p * rsB;
        for (let j = 0; j < n; j++) cv[c0 + i * n + j] += x * bv[row + j * csB];
      }
    }
  }
}

/** f32 values of an input, in shared memory when worker threads will read them. */
function floatInput(ref: CpuRef, shared: boolean): Float32Array {
  const values = readFloat(ref) as Float32Array;
  if (!shared || isShared(values)) return values;
  const copy = scratch(values.length, true);
  copy.set(values);
  return copy;
}

/** Element offset of each batch's matrix in a tensor whose batch dims broadcast to `batch`. */
function batchOffsets(batch: readonly number[], shape: readonly number[], matrixSize: number): Float64Array {
  const dims = shape.slice(0, -2);
  const pad = batch.length - dims.length;
  // Stride of each broadcast batch dim, in elements; 0 where this tensor has size 1 there.
  const strides = new Array<number>(batch.length).fill(0);
  for (let d = batch.length - 1, s = matrixSize; d >= pad; d--) {
    const size = dims[d - pad];
    strides[d] = size === 1 ? 0 : s;
    s *= size;
  }
  const offsets = new Float64Array(sizeOf(batch));
  for (let i = 0; i < offsets.length; i++) {
    let rest = i;
    let offset = 0;
    for (let d = batch.length - 1; d >= 0; d--) {
      const size = batch[d];
      offset += (rest % size) * strides[d];
      rest = Math.floor(rest / size);
    }
    offsets[i] = offset;
  }
  return offsets;
}
