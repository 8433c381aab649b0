/**
 * The WebGPU backend: storage is a GPUBuffer per tensor (sizes rounded to a pool class), kernels
 * encode WGSL dispatches, and `read` is the only point that waits for the GPU.
 *
 * dtypes: f32, i32, u8, and f16 and bf16 as storage types (decoded to f32 in the shader with exact
 * integer conversions, so they work with or without `shader-f16`). f64 is CPU-only.
 */
import type { Backend, Capabilities, KernelTable, KernelTimer, MemoryStats } from "@lightning-ts/tensor";
import { acquireDevice, type DeviceOptions } from "./device.js";
import { elementwiseKernels } from "./kernels/elementwise.js";
import { indexingKernels } from "./kernels/indexing.js";
import { lightningKernels, maxHeadDim } from "./kernels/lightning.js";
import { matmulKernels } from "./kernels/matmul.js";
import { movementKernels } from "./kernels/movement.js";
import { nnKernels } from "./kernels/nn.js";
import { randomKernels } from "./kernels/random.js";
import { reduceKernels } from "./kernels/reduce.js";
import { Runtime } from "./runtime.js";

export interface WebGpuBackendOptions extends DeviceOptions {
  /** Print every generated WGSL shader once, when its pipeline is built (also: LIGHTNING_DUMP_WGSL=1). */
  dumpShaders?: boolean;
  /**
   * Use only the plain kernels, never their fast twins (vectorised copies, register-tiled matmul,
   * blocked Lightning Attention): the reference the fast paths are tested against (also:
   * LIGHTNING_WEBGPU_PLAIN=1).
   */
  plainKernels?: boolean;
}

/** Summed device time of one kernel (pipeline key) in `profileDispatches`. */
export interface DispatchTime {
  key: string;
  calls: number;
  ms: number;
}

export class WebGpuBackend implements Backend<GPUBuffer> {
  readonly name = "webgpu";
  readonly capabilities: Capabilities;
  readonly kernels: KernelTable<GPUBuffer>;
  readonly runtime: Runtime;
  /**
   * GPU time of kernels from timestamp queries (`profileOps`, benchmarks); absent where the
   * adapter lacks `timestamp-query`. Marks are read back by `sync()`.
   */
  readonly timer?: KernelTimer;
  #live = new Map<GPUBuffer, number>();
  #liveBytes = 0;
  #peak = 0;
  #disposed = false;

  constructor(device: GPUDevice, description: string, features: readonly string[], dumpShaders: boolean, plainKernels = false) {
    this.runtime = new Runtime(device, dumpShaders, plainKernels);
    if (this.runtime.timer) this.timer = this.runtime.timer;
    const lim = device.limits;
    this.capabilities = {
      device: description,
      dtypes: ["f32", "f16", "bf16", "i32", "u8"],
      syncRead: false,
      features: [...features],
      limits: {
        maxBufferBytes: lim.maxBufferSize,
        maxStorageBindingBytes: lim.maxStorageBufferBindingSize,
        maxWorkgroupStorageBytes: lim.maxComputeWorkgroupStorageSize,
        maxInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
        /** Largest D or E of Lightning Attention (the state slice lives in workgroup memory). */
        maxLightningHeadDim: maxHeadDim(lim.maxComputeWorkgroupStorageSize),
      },
    };
    const rt = this.runtime;
    this.kernels = {
      ...elementwiseKernels(rt),
      ...reduceKernels(rt),
      ...movementKernels(rt, lim.maxStorageBuffersPerShaderStage - 1),
      ...indexingKernels(rt),
      ...nnKernels(rt),
      ...matmulKernels(rt),
      ...randomKernels(rt),
      ...lightningKernels(rt, lim.maxComputeWorkgroupStorageSize),
    };
  }

  allocate(byteLength: number): GPUBuffer {
    this.#check();
    const buffer = this.runtime.acquire(byteLength);
    this.#live.set(buffer, byteLength);
    this.#liveBytes += byteLength;
    this.#peak = Math.max(this.#peak, this.#liveBytes);
    return buffer;
  }

  free(storage: GPUBuffer): void {
    const bytes = this.#live.get(storage);
    if (bytes === undefined || this.#disposed) return;
    this.#live.delete(storage);
    this.#liveBytes -= bytes;
    this.runtime.release(storage);
  }

  write(storage: GPUBuffer, bytes: Uint8Array, byteOffset = 0): void {
    this.#check();
    this.runtime.write(storage, bytes, byteOffset);
  }

  /**
   * A device-side copy, encoded after the queued work. copyBufferToBuffer wants two buffers and
   * offsets and a length in whole 4-byte words; 16- and 8-bit tensors at odd element offsets go
   * through a byte-merging kernel instead, and a copy within one buffer through a scratch buffer.
   */
  copyWithin(dst: GPUBuffer, dstByteOffset: number, src: GPUBuffer, srcByteOffset: number, byteLength: number): void {
    this.#check();
    for (const [name, buffer, offset] of [["dst", dst, dstByteOffset], ["src", src, srcByteOffset]] as const) {
      const size = this.#live.get(buffer);
      if (size === undefined) throw new Error(`copyWithin: ${name} is not a live buffer of this webgpu backend`);
      if (offset < 0 || offset + byteLength > size) throw new Error(`copyWithin: ${byteLength} bytes at ${name} byte ${offset} run past its ${size} bytes`);
    }
    if (byteLength === 0) return;
    const rt = this.runtime;
    const aligned = dstByteOffset % 4 === 0 && srcByteOffset % 4 === 0 && byteLength % 4 === 0;
    if (src !== dst) {
      if (aligned) rt.copy(src, srcByteOffset, dst, dstByteOffset, byteLength);
      else copyBytes(rt, dst, dstByteOffset, src, srcByteOffset, byteLength);
      return;
    }
    // The source's whole words (inside the buffer: its size is a multiple of 4).
    const start = srcByteOffset - (srcByteOffset % 4);
    const words = Math.ceil((srcByteOffset + byteLength) / 4) * 4 - start;
    const scratch = rt.acquire(words);
    rt.copy(src, start, scratch, 0, words);
    if (aligned) rt.copy(scratch, 0, dst, dstByteOffset, byteLength);
    else copyBytes(rt, dst, dstByteOffset, scratch, srcByteOffset - start, byteLength);
    rt.release(scratch);
  }

  async read(storage: GPUBuffer, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    this.#check();
    const start = byteOffset - (byteOffset % 4);
    const end = Math.ceil((byteOffset + byteLength) / 4) * 4;
    const bytes = await this.runtime.readBack(storage, start, end - start);
    return bytes.slice(byteOffset - start, byteOffset - start + byteLength);
  }

  /**
   * Device time per kernel of the work `fn` enqueues: every dispatch runs in a compute pass of its
   * own with timestamps (which adds a little per dispatch), and the times are summed per pipeline
   * key (kernel name and specialisation), largest first. Null where the adapter has no
   * `timestamp-query`. For finding which kernel of an op takes the time; `profileOps` times ops.
   *
   * @example
   * const rows = await backend.profileDispatches(() => T.scope(() => void T.lightningAttention(q, k, v, slopes)));
   * // [{ key: "lightning_blocked_out", calls: 1, ms: 1.9 }, { key: "lightning_blocked_kv", … }, …]
   */
  async profileDispatches(fn: () => void): Promise<DispatchTime[] | null> {
    const timer = this.runtime.timer;
    if (!timer) return null;
    const start = timer.mark();
    this.runtime.splitPasses = true;
    try {
      fn();
    } catch (err) {
      timer.release([start]);
      throw err;
    } finally {
      this.runtime.splitPasses = false;
    }
    const end = timer.mark();
    try {
      await this.sync();
      const byKey = new Map<string, DispatchTime>();
      for (const pass of timer.passTimes(start, end)) {
        // A pass holds one dispatch here; one with several (none should) counts under its first.
        const key = pass.keys[0] ?? "(no dispatch)";
        const row = byKey.get(key) ?? { key, calls: 0, ms: 0 };
        row.calls += pass.keys.length;
        row.ms += pass.ms;
        byKey.set(key, row);
      }
      return [...byKey.values()].sort((a, b) => b.ms - a.ms);
    } finally {
      timer.release([start, end]);
    }
  }

  async sync(): Promise<void> {
    this.#check();
    await this.runtime.sync();
    await this.runtime.timer?.collect();
  }

  memory(): MemoryStats {
    return { liveBytes: this.#liveBytes, liveBuffers: this.#live.size, pooledBytes: this.runtime.pooledBytes, peakBytes: this.#peak };
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.runtime.flush();
    for (const b of this.#live.keys()) b.destroy();
    this.#live.clear();
    this.#liveBytes = 0;
    this.runtime.destroy();
    this.runtime.device.destroy();
  }

  #check(): void {
    if (this.#disposed) throw new Error("the webgpu backend was disposed");
  }
}

/**
 * dst bytes [dstByteOffset, +byteLength) = src bytes [srcByteOffset, +byteLength), for offsets and
 * lengths that are not whole words. One invocation per destination word: it merges the copied
 * bytes into the word and keeps the others, so no two invocations write one word.
 */
function copyBytes(rt: Runtime, dst: GPUBuffer, dstByteOffset: number, src: GPUBuffer, srcByteOffset: number, byteLength: number): void {
  const first = Math.floor(dstByteOffset / 4);
  const words = Math.ceil((dstByteOffset + byteLength) / 4) - first;
  rt.dispatch({
    key: "copy_bytes",
    shader: () => ({
      doc: ["src: bytes (u32 words)", "dst: bytes (u32 words)"],
      bindings: [
        { name: "src", access: "read" },
        { name: "dst", access: "rw" },
      ],
      workgroupSize: 256,
      // Params: first destination word, words, destination byte offset, bytes, source byte offset.
      body: `  if (gid >= pu(1u)) { return; }
  let w = pu(0u) + gid;
  let d0 = pu(2u); let n = pu(3u); let s0 = pu(4u);
  var word = dst[w];
  for (var j = 0u; j < 4u; j = j + 1u) {
    let g = w * 4u + j;
    if (g >= d0 && g - d0 < n) {
      let sb = s0 + (g - d0);
      let byte = (src[sb >> 2u] >> ((sb & 3u) * 8u)) & 0xffu;
      word = (word & ~(0xffu << (j * 8u))) | (byte << (j * 8u));
    }
  }
  dst[w] = word;`,
    }),
    bindings: [
      { buffer: src, access: "read" },
      { buffer: dst, access: "rw" },
    ],
    params: [first, words, dstByteOffset, byteLength, srcByteOffset],
    workgroups: Math.ceil(words / 256),
  });
}

const envFlag = (name: string) => typeof process !== "undefined" && process.env?.[name] === "1";

/**
 * Creates the WebGPU backend on the best adapter: navigator.gpu in a browser, Dawn over Vulkan in
 * Node. Throws an Error saying why when there is no usable adapter.
 *
 * @example
 * import { setBackend, tensor, matmul } from "@lightning-ts/tensor";
 * import { createWebGpuBackend } from "@lightning-ts/webgpu";
 * setBackend(await createWebGpuBackend());
 * console.log(await matmul(tensor([[1, 2]]), tensor([[3], [4]])).data()); // Float32Array [11]
 */
export async function createWebGpuBackend(options: WebGpuBackendOptions = {}): Promise<WebGpuBackend> {
  const { device, description, features } = await acquireDevice(options);
  return new WebGpuBackend(device, description, features, options.dumpShaders ?? envFlag("LIGHTNING_DUMP_WGSL"), options.plainKernels ?? envFlag("LIGHTNING_WEBGPU_PLAIN"));
}
