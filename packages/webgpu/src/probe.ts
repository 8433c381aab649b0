/**
 * Probes of how fast a device reads and writes large buffers, for benchmarks (no op uses them).
 *
 * `probeCopy` copies one buffer into another in chunks of 16 KiB, one workgroup a chunk, with the
 * workgroups taking their chunks in one of two orders:
 * - `linear`: workgroup w copies chunk w, so the workgroups running at once stream through one
 *   window of the buffers (what `copyWords` does);
 * - `scattered`: workgroup w copies chunk (w mod 1024)·⌈n/1024⌉ + ⌊w/1024⌋, so the workgroups
 *   running at once (a few thousand) each read and write 1/1024 of the buffer apart: thousands of
 *   pages of memory at once instead of a few. Where the driver maps an allocation with small pages,
 *   or address translation misses for another reason, this order falls off against `linear` on
 *   the same buffers, while the two orders move the same bytes at the same sizes.
 */
import type { WebGpuBackend } from "./backend.js";

export type CopyOrder = "linear" | "scattered";

/** 16-byte vectors a workgroup copies (4 per invocation, 256 invocations). */
const CHUNK = 1024;
/** Rows of the scattered order: workgroups w and w + 1 are n/ROWS chunks apart. */
const ROWS = 1024;

/** dst[0, bytes) = src[0, bytes), by chunks in `order`; `bytes` a multiple of 16. */
export function probeCopy(backend: WebGpuBackend, src: GPUBuffer, dst: GPUBuffer, bytes: number, order: CopyOrder): void {
  if (!Number.isInteger(bytes) || bytes <= 0 || bytes % 16 !== 0) throw new Error(`probeCopy: argument 'bytes' expected a positive multiple of 16, got ${bytes}`);
  for (const [name, buffer] of [["src", src], ["dst", dst]] as const) {
    if (buffer.size < bytes) throw new Error(`probeCopy: argument '${name}' expected a buffer of at least ${bytes} bytes, got ${buffer.size}`);
  }
  if (order !== "linear" && order !== "scattered") throw new Error(`probeCopy: argument 'order' expected 'linear' or 'scattered', got '${String(order)}'`);
  const vectors = bytes / 16;
  const chunks = Math.ceil(vectors / CHUNK);
  const cols = order === "scattered" ? Math.ceil(chunks / ROWS) : chunks;
  backend.runtime.dispatch({
    key: `probe_copy:${order}`,
    shader: () => ({
      doc: ["x: (n) vec4<u32>", "y: (n) vec4<u32>"],
      bindings: [
        { name: "x", access: "read", vec4: true },
        { name: "y", access: "rw", vec4: true },
      ],
      workgroupSize: 256,
      // Params: vectors, chunks, chunks a row of the scattered order.
      body: `  let n = pu(0u);
  ${order === "scattered" ? `let chunk = (wg % ${ROWS}u) * pu(2u) + wg / ${ROWS}u;` : "let chunk = wg;"}
  if (chunk >= pu(1u)) { return; }
  let i = chunk * ${CHUNK}u + lid;
  // The four loads are issued before the stores, as in copyWords.
  ${[0, 1, 2, 3].map((j) => `var v${j} = vec4<u32>(0u); if (i + ${j * 256}u < n) { v${j} = x[i + ${j * 256}u]; }`).join(" ")}
  ${[0, 1, 2, 3].map((j) => `if (i + ${j * 256}u < n) { y[i + ${j * 256}u] = v${j}; }`).join(" ")}`,
    }),
    bindings: [
      { buffer: src, access: "read", offset: 0, size: bytes },
      { buffer: dst, access: "rw", offset: 0, size: bytes },
    ],
    params: [vectors, chunks, cols],
    workgroups: order === "scattered" ? ROWS * cols : chunks,
  });
}
