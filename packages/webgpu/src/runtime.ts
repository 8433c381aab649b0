/**
 * The WebGPU runtime under the kernels: a pipeline cache keyed by (kernel, specialisation), a
 * buffer pool by size class, one open command encoder that collects dispatches until something
 * must wait (a read, a sync, a host write), and the device's error and loss reporting.
 *
 * Kernels only encode. A model step therefore becomes one or a few queue submissions: the encoder
 * is submitted when a read needs the results, when a host write must not overtake queued work,
 * or when the parameter ring is full.
 */
import type { KernelOpName } from "@lightning-ts/tensor";
import { TimestampTimer } from "./timer.js";
import { PARAM_WORDS, shader, type ShaderSpec } from "./wgsl.js";

/** Dispatches per submission before the parameter ring wraps and forces a submit. */
const PARAM_SLOTS = 1024;
const SLOT_BYTES = PARAM_WORDS * 4;
/**
 * Pooled (freed, kept for reuse) bytes above which freed buffers are destroyed instead. Generous:
 * a new buffer costs an allocation and a lazy zero-fill, which dominate a step at large shapes.
 */
const POOL_CAP_BYTES = 4 * 2 ** 30;

const MAX_WORKGROUPS_X = 65535;

export interface Binding {
  buffer: GPUBuffer;
  /** Must match the access of the shader's binding at the same position. */
  access: "read" | "rw" | "atomic";
  /**
   * Bytes of the buffer bound, from `offset` (a multiple of minStorageBufferOffsetAlignment) for
   * `size` bytes; the whole buffer without them.
   */
  offset?: number;
  size?: number;
}

export interface DispatchSpec {
  /** Pipeline cache key: the kernel name and every specialisation constant. */
  key: string;
  /** Builds the shader on a cache miss. */
  shader: () => ShaderSpec;
  bindings: readonly Binding[];
  /** u32 parameter words (bit patterns for floats). */
  params: ArrayLike<number>;
  /** Total workgroups; spread over x and y when above the per-dimension limit. */
  workgroups: number;
}

/** Rounds a byte size up to its pool class: 256 bytes at least, then 2^k or 1.5·2^k. */
export function sizeClass(bytes: number): number {
  const n = Math.max(256, Math.ceil(bytes / 4) * 4);
  const p = 2 ** Math.ceil(Math.log2(n));
  return n <= p * 0.75 ? p * 0.75 : p;
}

/** Why the device cannot be used any more (device loss or an earlier uncaptured error). */
export class WebGpuError extends Error {
  override name = "WebGpuError";
}

/** Reason codes a kernel stores in the error buffer when it finds bad data (e.g. an index out of range). */
export const ERROR_CODES = {
  gather: 1,
  scatterAdd: 2,
  embedding: 3,
  embeddingBackward: 4,
  softmaxCrossEntropy: 5,
  softmaxCrossEntropyBackward: 6,
  /** A slope too large for the fast backward (lightning-backward.ts MAX_SLOPE). */
  lightningAttentionBackward: 7,
  /** Prompt segment offsets out of order (value: the offset, position: its index, bound: N − B + 1). */
  lightningStep: 8,
} as const satisfies Partial<Record<KernelOpName, number>>;

export class Runtime {
  readonly device: GPUDevice;
  readonly dumpShaders: boolean;
  /** Run the plain twin of every kernel that has a fast path (the fast paths' test oracle). */
  readonly plainKernels: boolean;
  /** Binding for kernels that report bad data: 4 atomic words [code, value, position, bound]. */
  readonly errorBuffer: GPUBuffer;
  #pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  #pool = new Map<number, GPUBuffer[]>();
  #pooledBytes = 0;
  #params: GPUBuffer;
  #paramHost = new Uint32Array(PARAM_SLOTS * PARAM_WORDS);
  #slots = 0;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #lost: string | null = null;
  #uncaptured: string | null = null;
  #lostPromise: Promise<never>;
  submissions = 0;
  /** GPU time of passes from timestamp queries; null where the device lacks `timestamp-query`. */
  readonly timer: TimestampTimer | null;
  /** Ends the pass after every dispatch, so each kernel gets timestamps of its own (`profileDispatches`). */
  splitPasses = false;

  constructor(device: GPUDevice, dumpShaders: boolean, plainKernels = false) {
    this.device = device;
    this.dumpShaders = dumpShaders;
    this.plainKernels = plainKernels;
    this.#params = device.createBuffer({ size: PARAM_SLOTS * SLOT_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.errorBuffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    this.timer = device.features.has("timestamp-query") ? new TimestampTimer(this) : null;
    this.#lostPromise = device.lost.then((info) => {
      this.#lost = `${info.reason}: ${info.message || "no message"}`;
      throw new WebGpuError(`WebGPU device lost (${this.#lost})`);
    });
    // Nothing awaits it unless a read is pending; an unhandled rejection must not kill the process.
    this.#lostPromise.catch(() => {});
    device.addEventListener("uncapturederror", (ev) => {
      this.#uncaptured ??= ev.error.message;
    });
  }

  /** Throws if the device was lost or reported an error; called before any new work. */
  check(): void {
    if (this.#lost !== null) throw new WebGpuError(`WebGPU device lost (${this.#lost})`);
    if (this.#uncaptured !== null) {
      const msg = this.#uncaptured;
      this.#uncaptured = null;
      throw new WebGpuError(`WebGPU error: ${msg}`);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Buffers.

  acquire(bytes: number): GPUBuffer {
    this.check();
    // Kernels bind whole buffers, so no buffer may exceed the largest storage binding.
    const limit = Math.min(this.device.limits.maxStorageBufferBindingSize, this.device.limits.maxBufferSize);
    if (bytes > limit) {
      throw new WebGpuError(`cannot allocate ${bytes} bytes: this device binds at most ${limit} bytes per buffer (maxStorageBufferBindingSize)`);
    }
    // Multiples of 16 bytes, so any buffer may be bound as an array of vec4.
    const size = Math.min(sizeClass(bytes), Math.floor(limit / 16) * 16);
    const free = this.#pool.get(size);
    const reused = free?.pop();
    if (reused) {
      this.#pooledBytes -= size;
      return reused;
    }
    return this.device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  }

  /**
   * Returns a buffer for reuse. Safe while queued work still uses it: later work that reuses it is
   * encoded after, and the queue runs in order; host writes submit queued work first (`write`).
   */
  release(buffer: GPUBuffer): void {
    if (this.#pooledBytes + buffer.size > POOL_CAP_BYTES) {
      // Destroy only once queued work that may use it has been submitted.
      this.flush();
      buffer.destroy();
      return;
    }
    let list = this.#pool.get(buffer.size);
    if (!list) this.#pool.set(buffer.size, (list = []));
    list.push(buffer);
    this.#pooledBytes += buffer.size;
  }

  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  write(buffer: GPUBuffer, bytes: Uint8Array, byteOffset: number): void {
    this.check();
    if (byteOffset % 4 !== 0) throw new WebGpuError(`write: byte offset ${byteOffset} is not a multiple of 4`);
    // Queued work may still read this buffer's previous contents (it may be a reused one).
    this.flush();
    let data = bytes;
    if (bytes.byteLength % 4 !== 0) {
      data = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      data.set(bytes);
    }
    if (data.byteLength > 0) this.device.queue.writeBuffer(buffer, byteOffset, data.buffer, data.byteOffset, data.byteLength);
  }

  // ------------------------------------------------------------------------------------------
  // Pipelines and dispatches.

  #pipeline(key: string, build: () => ShaderSpec) {
    let entry = this.#pipelines.get(key);
    if (entry) return entry;
    const spec = build();
    const code = `// kernel: ${key}\n${shader(spec)}`;
    if (this.dumpShaders) console.log(`[webgpu] ----- ${key} -----\n${code}`);
    const module = this.device.createShaderModule({ code, label: key });
    const entries: GPUBindGroupLayoutEntry[] = [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } },
      ...spec.bindings.map((b, i) => ({
        binding: i + 1,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.access === "read" ? ("read-only-storage" as const) : ("storage" as const) },
      })),
    ];
    const layout = this.device.createBindGroupLayout({ entries, label: key });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
      label: key,
    });
    entry = { pipeline, layout };
    this.#pipelines.set(key, entry);
    return entry;
  }

  get pipelineCount(): number {
    return this.#pipelines.size;
  }

  /** Keys of the pipelines built so far (tests use them to see which kernel an op ran). */
  pipelineKeys(): string[] {
    return [...this.#pipelines.keys()];
  }

  dispatch(d: DispatchSpec): void {
    this.check();
    if (d.workgroups <= 0) return;
    if (d.params.length > PARAM_WORDS) throw new Error(`${d.key}: ${d.params.length} parameter words (at most ${PARAM_WORDS})`);
    const { pipeline, layout } = this.#pipeline(d.key, d.shader);
    if (this.#slots === PARAM_SLOTS) this.flush();
    const slot = this.#slots++;
    this.#paramHost.set(d.params, slot * PARAM_WORDS);
    const bindGroup = this.device.createBindGroup({
      layout,
      entries: [
        { binding: 0, resource: { buffer: this.#params, offset: slot * SLOT_BYTES, size: SLOT_BYTES } },
        ...d.bindings.map((b, i) => ({ binding: i + 1, resource: { buffer: b.buffer, offset: b.offset ?? 0, size: b.size } })),
      ],
    });
    const pass = this.#computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    const x = Math.min(d.workgroups, MAX_WORKGROUPS_X);
    const y = Math.ceil(d.workgroups / x);
    if (y > MAX_WORKGROUPS_X) throw new WebGpuError(`${d.key}: ${d.workgroups} workgroups exceed the dispatch limit`);
    pass.dispatchWorkgroups(x, y);
    this.timer?.noteDispatch(d.key);
    if (this.splitPasses) this.endPass();
  }

  #encoderNow(): GPUCommandEncoder {
    return (this.#encoder ??= this.device.createCommandEncoder());
  }

  #computePass(): GPUComputePassEncoder {
    // One pass holds many dispatches: each dispatch is its own synchronisation scope, so WebGPU
    // orders their buffer accesses for us.
    return (this.#pass ??= this.#encoderNow().beginComputePass({ timestampWrites: this.timer?.passWrites() }));
  }

  /** Ends the open compute pass: the next dispatch opens a new one (a timer mark's boundary). */
  endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /** Encodes a buffer-to-buffer copy after the queued dispatches. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    this.endPass();
    this.#encoderNow().copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
  }

  /** Submits everything encoded so far. */
  flush(): void {
    if (!this.#encoder) return;
    this.endPass();
    if (this.#slots > 0) this.device.queue.writeBuffer(this.#params, 0, this.#paramHost.buffer, 0, this.#slots * SLOT_BYTES);
    this.device.queue.submit([this.#encoder.finish()]);
    this.submissions++;
    this.#encoder = null;
    this.#slots = 0;
  }

  /**
   * Copies `size` bytes at `offset` (both multiples of 4) and the error words back to the host,
   * then reports any error a kernel recorded.
   */
  async readBack(buffer: GPUBuffer, offset: number, size: number): Promise<Uint8Array> {
    this.check();
    const staging = this.device.createBuffer({ size: size + 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    if (size > 0) this.copy(buffer, offset, staging, 0, size);
    this.copy(this.errorBuffer, 0, staging, size, 16);
    this.flush();
    try {
      await Promise.race([staging.mapAsync(GPUMapMode.READ), this.#lostPromise]);
    } catch (err) {
      staging.destroy();
      this.check();
      throw err;
    }
    const all = new Uint8Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    this.check();
    const err = new Int32Array(all.buffer, size, 4);
    if (err[0] !== 0) {
      const words = Array.from(err);
      this.device.queue.writeBuffer(this.errorBuffer, 0, new Uint32Array(4));
      throw kernelError(words);
    }
    return all.subarray(0, size);
  }

  async sync(): Promise<void> {
    await this.readBack(this.errorBuffer, 0, 0);
  }

  destroy(): void {
    for (const list of this.#pool.values()) for (const b of list) b.destroy();
    this.#pool.clear();
    this.#pooledBytes = 0;
    this.#pipelines.clear();
  }
}

/** The error a kernel reported through the error buffer, named after its op. */
function kernelError([code, value, position, bound]: number[]): Error {
  const op = Object.entries(ERROR_CODES).find(([, c]) => c === code)?.[0] ?? `kernel ${code}`;
  if (code === ERROR_CODES.lightningAttentionBackward) {
    const slope = new Float32Array(new Uint32Array([value]).buffer)[0];
    return new Error(
      `${op}: argument 'slopes' expected values ≤ ${bound} (the fast backward divides the final state's gradient by exp(−slope)), got ${slope} for head ${position}; a backend with plainKernels runs the plain scan (found on the GPU; reported at the next read)`,
    );
  }
  if (code === ERROR_CODES.lightningStep) {
    return new Error(
      `${op}: argument 'segments' expected offsets rising from 0 to at most N − B = ${bound - 1}, got ${value} at position ${position} (found on the GPU; reported at the next read)`,
    );
  }
  const arg = op.startsWith("embedding") ? "ids" : op.startsWith("softmax") ? "labels" : "indices";
  const allowed = op.startsWith("softmax") ? `values in [0, ${bound}) or the ignoreIndex` : `values in [0, ${bound})`;
  return new Error(`${op}: argument '${arg}' expected ${allowed}, got ${value} at position ${position} (found on the GPU; reported at the next read)`);
}
