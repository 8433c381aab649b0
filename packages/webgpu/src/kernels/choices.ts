/**
 * Which of two fast kernels runs where both are correct, so that a benchmark can time both in one
 * process: set the fields at run time, or start the process with the environment variables.
 *
 * - forward (default `walk-rows2` in Node, `walk-rows` in a browser): the Lightning Attention
 *   forward by segment walks (`walk`, lightning-walk.ts: states carried in registers, one per
 *   segment stored; `walk64` the same with 64 columns of E per workgroup instead of 128;
 *   `walk-notouch` without the touches ahead; `walk-rows` without them and with q and k loaded by
 *   whole rows (as `staged-rows`); `walk-rows2` as walk-rows with every global load issued two
 *   stages ahead of its use instead of one, in two register slots taken in turn (where D > 96 or
 *   32 < D ≤ 64; elsewhere as walk-rows); `staged` the walk on copies of q, k and v of at most
 *   `stageBytes` (256 MiB) at a time, its output likewise copied out; `staged64` and
 *   `staged-notouch` the same on walk64 and walk-notouch; `wide` the walk with 512 invocations a
 *   workgroup (half the registers each, twice the warps an SM), `staged-wide` it on staged copies; `staged-rows` the
 *   staged walk with q and k loaded by whole rows, as the wide walk does; `products` and
 *   `products64` the walk (128 or 64 columns) with every block's kᵀ v product made first, in a
 *   parallel pass, and added by the walk: no product made twice however many segments) or by block states (`blocked`, lightning-blocked.ts: every block's
 *   state written and read once; `stored` and `stored64` the same with the output step on the
 *   walk's kernel, one block per walk: no state product repeated, at the price of the block
 *   states' bytes). LIGHTNING_WEBGPU_FORWARD.
 * - matmulOrder: the tiled matmul's workgroups over output tiles in row order (`linear`), or in
 *   groups of 8 tile rows walked column by column (`grouped`), so that the workgroups running at
 *   once share operand panels in L2; `rotated`: grouped, and each workgroup starts its walk over k
 *   at its own slice (a probe of DRAM page conflicts between workgroups reading rows a power of two
 *   apart at the same k). LIGHTNING_WEBGPU_MATMUL_ORDER.
 * - bindCapBytes: the segment walk binds q, k, v and o a chunk of batch·heads at a time, at most
 *   this many bytes each (0, the default: whole buffers); a probe of whether large bindings, not
 *   large allocations, are slow. LIGHTNING_WEBGPU_BIND_CAP_MIB (in MiB).
 * - touchAhead: the segment walk, its totals and the tiled matmul load one word of every 32-byte
 *   sector of their next block of operands well ahead of use, bringing it into L2 (default on).
 *   LIGHTNING_WEBGPU_TOUCH=0 turns it off.
 * - walkWorkgroups: how many workgroups the segment walk splits long sequences into segments for,
 *   at least (256), half of it counted as one wave (`walkSegmentBlocks` splits no sequence where the
 *   split takes as many waves of blocks, with its totals pass). LIGHTNING_WEBGPU_WALK_WORKGROUPS.
 * - backward: the Lightning backward's sweeps as forwards on the fast kernels (`forwards`, the
 *   default, lightning-backward.ts) or as the plain scan (`scan`). LIGHTNING_WEBGPU_BACKWARD.
 */
/** The Lightning forward variants (`forward` below). */
export const FORWARD_VARIANTS = ["walk", "walk64", "walk-notouch", "walk-rows", "walk-rows2", "wide", "staged", "staged64", "staged-notouch", "staged-wide", "staged-rows", "products", "products64", "stored", "stored64", "blocked"] as const;

export type ForwardVariant = (typeof FORWARD_VARIANTS)[number];

export interface KernelChoices {
  /** Whether the segment walk and the tiled matmul touch their operands ahead into L2. */
  touchAhead: boolean;
  /** Most bytes of q, k, v or o the segment walk binds at once (0: whole buffers). */
  bindCapBytes: number;
  /** Walk workgroups the segment walk asks for at least (fewer segments: less repeated work). */
  walkWorkgroups: number;
  forward: ForwardVariant;
  /** With forward `staged`: most bytes of a staged copy of q, k, v or o. */
  stageBytes: number;
  matmulOrder: "grouped" | "linear" | "rotated";
  backward: "forwards" | "scan";
}

function fromEnv<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
  const env = typeof process !== "undefined" ? process.env?.[name] : undefined;
  if (env === undefined || env === "") return fallback;
  if (!(allowed as readonly string[]).includes(env)) throw new Error(`${name}: expected one of ${allowed.join(", ")}, got '${env}'`);
  return env as T;
}

function countFromEnv(name: string, fallback: number, least = 1): number {
  const env = typeof process !== "undefined" ? process.env?.[name] : undefined;
  if (env === undefined || env === "") return fallback;
  const n = Number(env);
  if (!Number.isInteger(n) || n < least) throw new Error(`${name}: expected an integer of at least ${least}, got '${env}'`);
  return n;
}

// `walk-rows2` by default: on the H200 (Dawn, NVIDIA's Vulkan driver) at full clocks it took
// 3.65 / 3.64 / 4.72 ms at T = 1,024 / 8,192 / 65,536 against `walk-rows`'s 3.85 / 3.84 / 4.94
// in the same call, with the same output to the bit: an ablation of walk-rows showed the global
// loads' latency exposed, which a second stage in flight hides (docs/benchmarks/
// webgpu-h200-2026-11-30.md, session 22). walk-rows had replaced `walk-notouch` (3.92 / 3.90 /
// 5.01) and `walk` (4.03 / 4.08 / 5.10), whose touches ahead cost more than they save at full clock.
// In a browser the default stays `walk-rows`: its unrolled two-ahead blocks are several times the
// shader code, and Chromium's software adapter (SwiftShader) lost the device compiling or running
// them (D = 48 and D = 100, 2026-12-04), where walk-rows passes; a page may still choose walk-rows2.
const DEFAULT_FORWARD: ForwardVariant = typeof process !== "undefined" && process.versions?.node ? "walk-rows2" : "walk-rows";

export const kernelChoices: KernelChoices = {
  touchAhead: fromEnv("LIGHTNING_WEBGPU_TOUCH", ["0", "1"], "1") === "1",
  bindCapBytes: countFromEnv("LIGHTNING_WEBGPU_BIND_CAP_MIB", 0, 0) * 2 ** 20,
  walkWorkgroups: countFromEnv("LIGHTNING_WEBGPU_WALK_WORKGROUPS", 256),
  forward: fromEnv("LIGHTNING_WEBGPU_FORWARD", FORWARD_VARIANTS, DEFAULT_FORWARD),
  stageBytes: 2 ** 28,
  matmulOrder: fromEnv("LIGHTNING_WEBGPU_MATMUL_ORDER", ["grouped", "linear", "rotated"], "grouped"),
  backward: fromEnv("LIGHTNING_WEBGPU_BACKWARD", ["forwards", "scan"], "forwards"),
};
