/**
 * Every fast kernel of the WebGPU backend against its plain twin (the same backend started with
 * `plainKernels`) and against the CPU backend, on seeded random inputs of odd sizes: the vec4 copy
 * (and the contiguous slices that use it), the register-tiled matmul in all four transpose
 * layouts, the blocked Lightning Attention forward (output and final state, with and without an
 * initial state), the backward as forwards on those kernels (dq, dk, dv, dInitialState) and the
 * vectorised decode step (new storage and in place). Each test also checks that
 * the fast kernel really ran, by the pipelines the backend built.
 *
 * Tolerances: f32 sums of a few hundred products in another order differ by a few units of
 * roundoff (2^-24 ≈ 6e-8) relative to the result's scale; 1e-5 relative RMS is far above that and
 * far below any indexing mistake (which moves whole values, error ~1).
 */
import * as T from "@lightning-ts/tensor";
import { type Backend, createCpuBackend, type DType } from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createWebGpuBackend, type WebGpuBackend } from "../src/index.js";
import { kernelChoices } from "../src/kernels/choices.js";
import { BLOCKED_SCRATCH_BYTES, segmentBlocks, setBlockedScratchBytes, setBlockedSegmentBlocks } from "../src/kernels/lightning-blocked.js";
import { setWalkScratchBytes, setWalkSegmentBlocks, walkSegmentBlocks } from "../src/kernels/lightning-walk.js";

/** The forward a test puts back after choosing another. */
const DEFAULT_FORWARD = kernelChoices.forward;

/** mulberry32: seeded values in [-1, 1), never all zero. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  };
}

function values(n: number, seed: number): Float32Array {
  const next = random(seed);
  return Float32Array.from({ length: n }, next);
}

function relRms(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  const e = Math.sqrt(num / den);
  // NaN never passes.
  return Number.isNaN(e) ? Infinity : e;
}

const TOL = 1e-5;

let fast: WebGpuBackend | null = null;
let plain: WebGpuBackend | null = null;
let reason = "";
const cpu = createCpuBackend();
try {
  fast = await createWebGpuBackend();
  plain = await createWebGpuBackend({ plainKernels: true });
} catch (err) {
  reason = (err as Error).message;
  if (process.env.LIGHTNING_WEBGPU_REQUIRED === "1" || (process.env.LIGHTNING_WEBGPU_REQUIRED !== "0" && process.env.VK_ICD_FILENAMES)) throw err;
  console.log(`[fast-paths] WebGPU skipped: ${reason}`);
}

const on = (be: Backend, data: Float32Array, shape: number[], dtype: DType = "f32") => T.tensor(data, shape, { backend: be, dtype });

/** Runs `fn` on the fast backend, its plain twin and the CPU; returns the three results' values. */
async function threeWays(fn: (be: Backend) => T.Tensor): Promise<[Float32Array, Float32Array, Float32Array]> {
  const out: Float32Array[] = [];
  for (const be of [fast!, plain!, cpu]) {
    const t = fn(be);
    out.push(Float32Array.from(await t.data()));
    t.dispose();
  }
  return out as [Float32Array, Float32Array, Float32Array];
}

/**
 * `lightningAttention`'s output and final state on the fast backend, the plain one and the CPU, for
 * inputs drawn from seeds seed … seed + 3 (q, k, v, initial state); q, k and v in `dtype`.
 */
async function lightningThreeWays(
  [B, H, Tn, D, E]: readonly [number, number, number, number, number],
  withInit: boolean,
  seed: number,
  slopeLayer: number,
  dtype: DType = "f32",
): Promise<Record<"output" | "state", [Float32Array, Float32Array, Float32Array]>> {
  const q = values(B * H * Tn * D, seed);
  const k = values(B * H * Tn * D, seed + 1);
  const v = values(B * H * Tn * E, seed + 2);
  const s0 = values(B * H * D * E, seed + 3);
  const slopes = T.tnlSlopes(H, slopeLayer, 3);
  const run = (part: "output" | "state") =>
    threeWays((be) => {
      const ins = [on(be, q, [B, H, Tn, D], dtype), on(be, k, [B, H, Tn, D], dtype), on(be, v, [B, H, Tn, E], dtype), T.tensor(slopes, [H], { backend: be })];
      const init = withInit ? on(be, s0, [B, H, D, E]) : undefined;
      const r = T.lightningAttention(ins[0], ins[1], ins[2], ins[3], { returnState: true, initialState: init });
      const keep = r[part];
      for (const t of [...ins, init, r.output, r.state]) if (t && t !== keep) t.dispose();
      return keep;
    });
  return { output: await run("output"), state: await run("state") };
}

/**
 * `lightningAttentionBackward`'s dq, dk, dv and dInitialState on the fast backend, the plain one
 * and the CPU, for inputs drawn from seeds seed … seed + 5 (q, k, v, dO, dFinalState, initial
 * state); the last head has slope 0 (no decay). q, k, v and dO in `dtype`.
 */
async function backwardThreeWays(
  [B, H, Tn, D, E]: readonly [number, number, number, number, number],
  withInit: boolean,
  seed: number,
  dtype: DType = "f32",
): Promise<Record<"dq" | "dk" | "dv" | "dInitialState", [Float32Array, Float32Array, Float32Array]>> {
  const q = values(B * H * Tn * D, seed);
  const k = values(B * H * Tn * D, seed + 1);
  const v = values(B * H * Tn * E, seed + 2);
  const dO = values(B * H * Tn * E, seed + 3);
  const dS = values(B * H * D * E, seed + 4);
  const s0 = values(B * H * D * E, seed + 5);
  const slopes = T.tnlSlopes(H, 0, 3).map((x, h) => (h === H - 1 && H > 1 ? 0 : x));
  const run = (part: "dq" | "dk" | "dv" | "dInitialState") =>
    threeWays((be) => {
      const ins = [on(be, q, [B, H, Tn, D], dtype), on(be, k, [B, H, Tn, D], dtype), on(be, v, [B, H, Tn, E], dtype), T.tensor(slopes, [H], { backend: be }), on(be, dO, [B, H, Tn, E], dtype)];
      const dFinal = on(be, dS, [B, H, D, E]);
      const init = withInit ? on(be, s0, [B, H, D, E]) : undefined;
      const g = T.lightningAttentionBackward(ins[0], ins[1], ins[2], ins[3], ins[4], dFinal, { initialState: init });
      const keep = g[part]!;
      for (const t of [...ins, dFinal, init, g.dq, g.dk, g.dv, g.dInitialState]) if (t && t !== keep) t.dispose();
      return keep;
    });
  const parts = { dq: await run("dq"), dk: await run("dk"), dv: await run("dv") };
  return { ...parts, dInitialState: withInit ? await run("dInitialState") : parts.dq };
}

const suite = fast ? describe : describe.skip;

suite(`WebGPU fast paths against their plain twins${fast ? "" : ` [skipped: ${reason}]`}`, () => {
  beforeAll(() => {
    expect(fast!.runtime.plainKernels).toBe(false);
    expect(plain!.runtime.plainKernels).toBe(true);
  });
  afterAll(() => {
    fast?.dispose();
    plain?.dispose();
  });

  it("copy moves vec4 bulk and a scalar tail bit for bit (f32 and bf16, odd lengths)", async () => {
    for (const [n, dtype, seed] of [[1, "f32", 1], [7, "f32", 2], [1029, "f32", 3], [4097, "bf16", 4], [333, "f16", 5], [9001, "f32", 6], [12291, "f32", 7]] as const) {
      const x = values(n, seed);
      const [f, p, c] = await threeWays((be) => {
        const t = on(be, x, [n], dtype);
        const y = T.copy(t);
        t.dispose();
        return y;
      });
      expect(Array.from(f)).toEqual(Array.from(c));
      expect(Array.from(p)).toEqual(Array.from(c));
    }
    expect(fast!.runtime.pipelineKeys()).toContain("copy_vec4");
    expect(plain!.runtime.pipelineKeys()).not.toContain("copy_vec4");
  });

  it("slices of leading rows copy as one run, aligned (vec4) or not (words), equal to the CPU", async () => {
    // (rows, cols, begin row): offsets 2·12 = 24 words (aligned), 3·13 = 39 (unaligned), 1·6 bf16 = 3 words.
    for (const [rows, cols, begin, dtype, seed] of [[9, 12, 2, "f32", 11], [11, 13, 3, "f32", 12], [7, 6, 1, "bf16", 13], [701, 12, 5, "f32", 14]] as const) {
      const x = values(rows * cols, seed);
      const [f, p, c] = await threeWays((be) => {
        const t = on(be, x, [rows, cols], dtype);
        const y = T.slice(t, [begin, 0], [rows - 1, cols]);
        t.dispose();
        return y;
      });
      expect(Array.from(f)).toEqual(Array.from(c));
      expect(Array.from(p)).toEqual(Array.from(c));
    }
  });

  // One test a layout (each its own time limit: on CI's two cores lavapipe shares them with the
  // other packages' suites).
  it.each([
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ])("the tiled matmul matches the plain kernel and the CPU with transA %s, transB %s, batched and broadcast", async (transA, transB) => {
    // (batch of A, m, k, n, batch of B): sizes not multiples of the 128 tile, k not of the 16 slice.
    const cases: [number[], number, number, number, number[]][] = [
      [[], 131, 68, 196, []],
      [[3], 67, 36, 100, []],
      [[2, 1], 64, 132, 68, [3]],
      [[], 257, 20, 72, [2]],
    ];
    let seed = 20 + 8 * (Number(transA) * 2 + Number(transB));
    for (const [ba, m, k, n, bb] of cases) {
      const aShape = [...ba, ...(transA ? [k, m] : [m, k])];
      const bShape = [...bb, ...(transB ? [n, k] : [k, n])];
      const a = values(aShape.reduce((x, y) => x * y, 1), seed++);
      const b = values(bShape.reduce((x, y) => x * y, 1), seed++);
      const [f, p, c] = await threeWays((be) => {
        const ta = on(be, a, aShape);
        const tb = on(be, b, bShape);
        const y = T.matmul(ta, tb, { transA, transB });
        ta.dispose();
        tb.dispose();
        return y;
      });
      const what = `A ${JSON.stringify(aShape)} B ${JSON.stringify(bShape)} transA ${transA} transB ${transB}`;
      expect(relRms(f, c), what).toBeLessThan(TOL);
      expect(relRms(p, c), what).toBeLessThan(TOL);
      expect(relRms(f, p), what).toBeLessThan(TOL);
    }
    expect(fast!.runtime.pipelineKeys()).toContain(`matmul_tiled:${transA}:${transB}`);
    expect(plain!.runtime.pipelineKeys().some((key) => key.startsWith("matmul_tiled"))).toBe(false);
  });

  it("the tiled matmul takes its tiles in grouped and in row order alike, and k from any slice: a last group of fewer tile rows, batched", async () => {
    // 11 tile rows (one group of 8 and one of 3) by 3 tile columns, k of 2 slices (the last one
    // partial); then 2 batches of 9 tile rows, k of one partial slice.
    const cases: [number[], number, number, number][] = [
      [[], 1409, 20, 260],
      [[2], 1100, 12, 132],
      [[], 300, 52, 132],
      [[], 260, 200, 68],
    ];
    let seed = 120;
    try {
      for (const [ba, m, k, n] of cases) {
        const a = values([...ba, m, k].reduce((x, y) => x * y, 1), seed++);
        const b = values(k * n, seed++);
        const got: Float32Array[] = [];
        for (const order of ["linear", "grouped", "rotated", "untouched"] as const) {
          // untouched: grouped, without the loads that bring the next 64 of k into L2 ahead.
          kernelChoices.matmulOrder = order === "untouched" ? "grouped" : order;
          kernelChoices.touchAhead = order !== "untouched";
          const [f, , c] = await threeWays((be) => {
            const ta = on(be, a, [...ba, m, k]);
            const tb = on(be, b, [k, n]);
            const y = T.matmul(ta, tb);
            ta.dispose();
            tb.dispose();
            return y;
          });
          expect(relRms(f, c), `${order} A ${JSON.stringify([...ba, m, k])} B ${JSON.stringify([k, n])}`).toBeLessThan(TOL);
          got.push(f);
        }
        // The same tiles, only in another order: the same bits (rotated sums k in another order).
        expect(Array.from(got[1])).toEqual(Array.from(got[0]));
        expect(relRms(got[2], got[0])).toBeLessThan(TOL);
        expect(Array.from(got[3])).toEqual(Array.from(got[0]));
      }
    } finally {
      kernelChoices.matmulOrder = "grouped";
      kernelChoices.touchAhead = true;
    }
    const keys = fast!.runtime.pipelineKeys();
    expect(keys).toContain("matmul_tiled:false:false");
    expect(keys).toContain("matmul_tiled:false:false:linear");
    expect(keys).toContain("matmul_tiled:false:false:rotated");
    expect(keys).toContain("matmul_tiled:false:false:no_touch");
  });

  it("the vectorised decode step matches the plain step and the CPU, in new storage and in place", async () => {
    // (B, H, D, E): E a multiple of 4 (the vec4 kernel) at several column slices, D odd.
    for (const [B, H, D, E, seed] of [[3, 5, 13, 20, 40], [2, 3, 7, 132, 41], [1, 2, 33, 256, 42]] as const) {
      const q = values(B * H * D, seed);
      const k = values(B * H * D, seed + 100);
      const v = values(B * H * E, seed + 200);
      const s = values(B * H * D * E, seed + 300);
      const slopes = T.tnlSlopes(H, 1, 3);
      for (const inPlace of [false, true]) {
        for (const part of ["output", "state"] as const) {
          const [f, p, c] = await threeWays((be) => {
            const ts = [on(be, q, [B, H, D]), on(be, k, [B, H, D]), on(be, v, [B, H, E]), T.tensor(slopes, [H], { backend: be })];
            const state = on(be, s, [B, H, D, E]);
            const r = T.lightningStep(ts[0], ts[1], ts[2], ts[3], state, { inPlace });
            const keep = r[part];
            for (const t of [...ts, state, r.output, r.state]) if (t !== keep) t.dispose();
            return keep;
          });
          const what = `B ${B} H ${H} D ${D} E ${E} ${part}${inPlace ? " in place" : ""}`;
          expect(relRms(f, c), what).toBeLessThan(TOL);
          expect(relRms(p, c), what).toBeLessThan(TOL);
        }
      }
    }
    const keys = fast!.runtime.pipelineKeys();
    expect(keys).toContain("lightning_step_vec4:f32:new");
    expect(keys).toContain("lightning_step_vec4:f32:in_place");
    expect(plain!.runtime.pipelineKeys().some((key) => key.startsWith("lightning_step_vec4"))).toBe(false);
  });

  it("the blocked Lightning forward with blocks grouped in segments matches the plain scan and the CPU (its output step also on the walk kernel)", async () => {
    // The benchmark shape's batch·heads (B·T = 65,536, H = 16, D = E = 128) in one chunk would take
    // 16-block segments at every T; small inputs take one-block segments unless forced.
    for (const [B, Tn] of [[64, 1024], [8, 8192], [1, 65536]]) expect(segmentBlocks(B * 16 * (Tn / 64))).toBe(16);
    expect(segmentBlocks(1)).toBe(1);
    expect(segmentBlocks(3000)).toBe(2);
    // (B, H, T, D, E, initial state, blocks per segment, scratch cap): short last segments and
    // blocks (577 = 9·64 + 1), one segment longer than the sequence, two D tiles, chunks of batch·heads.
    const cases = [
      [2, 2, 577, 12, 20, true, 3],
      [2, 2, 577, 12, 20, false, 2],
      [1, 3, 300, 8, 12, true, 16],
      [1, 1, 200, 136, 8, true, 2],
      [3, 2, 390, 8, 4, true, 4, 2 * 7 * 8 * 4 * 4],
    ] as [number, number, number, number, number, boolean, number, number?][];
    let seed = 200;
    try {
      // The output step as written here, and on the walk's kernel (128 and 64 columns of E; D = 136
      // stays on the blocked one).
      for (const forward of ["blocked", "stored", "stored64"] as const) {
        kernelChoices.forward = forward;
        for (const [B, H, Tn, D, E, withInit, G, scratch] of cases) {
          setBlockedSegmentBlocks(G);
          setBlockedScratchBytes(scratch ?? BLOCKED_SCRATCH_BYTES);
          const parts = await lightningThreeWays([B, H, Tn, D, E], withInit, seed, 0);
          seed += 4;
          for (const part of ["output", "state"] as const) {
            const [f, p, c] = parts[part];
            const what = `${forward}: B ${B} H ${H} T ${Tn} D ${D} E ${E}, ${G}-block segments${withInit ? ", initial state" : ""}: ${part}`;
            expect(relRms(f, c), what).toBeLessThan(TOL);
            expect(relRms(p, c), what).toBeLessThan(TOL);
          }
        }
      }
    } finally {
      setBlockedSegmentBlocks(null);
      setBlockedScratchBytes(BLOCKED_SCRATCH_BYTES);
      kernelChoices.forward = DEFAULT_FORWARD;
    }
    const keys = fast!.runtime.pipelineKeys();
    for (const key of ["lightning_blocked_kv", "lightning_blocked_out", "lightning_walk_stored", "lightning_walk64_stored"]) expect(keys).toContain(key);
  });

  it("the blocked Lightning forward matches the plain scan and the CPU: output and final state, odd T, several tiles", async () => {
    // (B, H, T, D, E, initial state): partial last blocks, T = 1, two D tiles (136), two E tiles (132).
    const cases = [
      [2, 3, 65, 12, 20, false],
      [1, 2, 130, 20, 132, true],
      [1, 1, 63, 136, 8, true],
      [3, 2, 1, 8, 8, false],
      [1, 2, 257, 16, 16, true],
      [3, 3, 70, 12, 20, true, 2 * 2 * 12 * 20 * 4],
    ] as [number, number, number, number, number, boolean, number?][];
    // bf16 inputs (widened to f32 for the blocked kernels) and a bf16 output: the GPU and the CPU
    // round the same f32/f64 sums to bf16, so they differ only where a sum lies within the other's
    // rounding error of a rounding boundary, by one bf16 step (2^-8) in a small fraction of the
    // elements (about 1e-5 relative RMS here). 5e-4 allows ~2% of them to flip; a wrong index or
    // decay moves whole values.
    const bf16Cases = [
      [2, 3, 65, 12, 20, true],
      [1, 2, 130, 8, 132, false],
    ] as const;
    let seed = 60;
    kernelChoices.forward = "blocked";
    for (const [B, H, Tn, D, E, withInit, scratch] of cases) {
      // A scratch cap below B·H sequences' block states makes the forward run in chunks of batch·heads.
      setBlockedScratchBytes(scratch ?? BLOCKED_SCRATCH_BYTES);
      const parts = await lightningThreeWays([B, H, Tn, D, E], withInit, seed, 0);
      seed += 4;
      for (const part of ["output", "state"] as const) {
        const [f, p, c] = parts[part];
        const what = `B ${B} H ${H} T ${Tn} D ${D} E ${E}${withInit ? " with initial state" : ""}: ${part}`;
        expect(relRms(f, c), what).toBeLessThan(TOL);
        expect(relRms(p, c), what).toBeLessThan(TOL);
      }
    }
    setBlockedScratchBytes(BLOCKED_SCRATCH_BYTES);
    for (const [B, H, Tn, D, E, withInit] of bf16Cases) {
      const parts = await lightningThreeWays([B, H, Tn, D, E], withInit, seed, 1, "bf16");
      seed += 4;
      for (const part of ["output", "state"] as const) {
        const [f, p, c] = parts[part];
        const what = `bf16 B ${B} H ${H} T ${Tn} D ${D} E ${E}${withInit ? " with initial state" : ""}: ${part}`;
        const tol = part === "output" ? 5e-4 : TOL;
        expect(relRms(f, c), what).toBeLessThan(tol);
        expect(relRms(p, c), what).toBeLessThan(tol);
      }
    }
    kernelChoices.forward = DEFAULT_FORWARD;
    const keys = fast!.runtime.pipelineKeys();
    expect(keys).toContain("widen_f32:bf16");
    for (const step of ["kv", "scan", "out"]) expect(keys).toContain(`lightning_blocked_${step}`);
    expect(plain!.runtime.pipelineKeys().some((key) => key.startsWith("lightning_blocked"))).toBe(false);
  });

  it("the Lightning backward as forwards on the fast kernels (two in reversed time) matches the plain scan and the CPU: dq, dk, dv, dInitialState", async () => {
    // (B, H, T, D, E, initial state): T not a multiple of 64, D ≠ E both ways (the dq and dk sweeps
    // swap them), several segments, T = 1, a shape the walk does not take (D = 132: blocked), and
    // with walk-rows2 heads above 96 (loads two stages ahead; 100 a partial quarter of D). The dk and
    // dv sweeps read and write reversed time in the walks, on reversed copies in the blocked forward.
    const cases = [
      [1, 3, 199, 16, 24, true],
      [2, 2, 70, 24, 8, false],
      [1, 2, 300, 64, 64, true],
      [3, 1, 1, 8, 12, true],
      [1, 2, 65, 132, 8, true],
    ] as const;
    const wideHeads = [[1, 2, 150, 128, 100, true]] as const;
    let seed = 700;
    try {
      for (const forward of ["walk", "walk-rows2", "wide", "staged", "blocked", "products"] as const) {
        kernelChoices.forward = forward;
        setWalkSegmentBlocks(2);
        for (const [B, H, Tn, D, E, withInit] of forward === "walk" ? cases : forward === "walk-rows2" ? [...cases, ...wideHeads] : cases.slice(0, 2)) {
          const parts = await backwardThreeWays([B, H, Tn, D, E], withInit, seed);
          seed += 6;
          for (const part of withInit ? (["dq", "dk", "dv", "dInitialState"] as const) : (["dq", "dk", "dv"] as const)) {
            const [f, p, c] = parts[part];
            const what = `${forward}: B ${B} H ${H} T ${Tn} D ${D} E ${E}${withInit ? ", initial state" : ""}: ${part}`;
            expect(relRms(f, c), what).toBeLessThan(TOL);
            expect(relRms(p, c), what).toBeLessThan(TOL);
          }
        }
      }
      // bf16 inputs and gradients: rounded once from f32 (fast) or f64 (CPU) sums, as in the forward.
      kernelChoices.forward = DEFAULT_FORWARD;
      setWalkSegmentBlocks(null);
      const parts = await backwardThreeWays([2, 3, 130, 16, 20], true, seed, "bf16");
      for (const part of ["dq", "dk", "dv", "dInitialState"] as const) {
        const [f, p, c] = parts[part];
        const tol = part === "dInitialState" ? TOL : 5e-4;
        expect(relRms(f, c), `bf16: ${part}`).toBeLessThan(tol);
        expect(relRms(p, c), `bf16: ${part}`).toBeLessThan(tol);
      }
      // backward `scan`: the plain scan on the fast backend, the plain backend's bits.
      kernelChoices.backward = "scan";
      const scanned = await backwardThreeWays([1, 3, 199, 16, 24], true, seed + 6);
      for (const part of ["dq", "dk", "dv", "dInitialState"] as const) {
        const [f, p] = scanned[part];
        expect(f.findIndex((x, i) => !Object.is(x, p[i])), `scan: ${part}`).toBe(-1);
      }
    } finally {
      kernelChoices.forward = DEFAULT_FORWARD;
      kernelChoices.backward = "forwards";
      setWalkSegmentBlocks(null);
    }
    const keys = fast!.runtime.pipelineKeys();
    for (const key of ["reverse_time:f32", "scale_state:t:0", "scale_state:t:1", "scale_state:n:1", "scale_state:n:-1"]) expect(keys).toContain(key);
    // The walks ran the reversed sweeps themselves: the walk, its totals, the wide walk, two stages ahead.
    for (const key of ["lightning_walk:reversed", "lightning_walk_totals:reversed", "lightning_walk_wide:reversed", "lightning_walk:no_touch:rows:ahead2:reversed", "lightning_walk_totals:no_touch:ahead2:reversed", "lightning_walk_block_products_totals:reversed"]) {
      expect(keys).toContain(key);
    }
    expect(plain!.runtime.pipelineKeys().some((key) => key.startsWith("reverse_time") || key.startsWith("scale_state"))).toBe(false);
  }, 300_000);

  it("the fast backward refuses a slope too large to divide the final state's gradient by λ, naming slopes, at the next read", async () => {
    const [B, H, Tn, D, E] = [1, 2, 9, 8, 8];
    const be = fast!;
    const x = (n: number, seed: number, shape: number[]) => on(be, values(n, seed), shape);
    const ins = [x(B * H * Tn * D, 1, [B, H, Tn, D]), x(B * H * Tn * D, 2, [B, H, Tn, D]), x(B * H * Tn * E, 3, [B, H, Tn, E])];
    const slopes = T.tensor([0.5, 70], [H], { backend: be });
    const dO = x(B * H * Tn * E, 4, [B, H, Tn, E]);
    const dS = x(B * H * D * E, 5, [B, H, D, E]);
    const g = T.lightningAttentionBackward(ins[0], ins[1], ins[2], slopes, dO, dS);
    await expect(g.dv.data()).rejects.toThrow(/lightningAttentionBackward: argument 'slopes' expected values ≤ 64 .*got 70 for head 1/);
    for (const t of [...ins, slopes, dO, dS, g.dq, g.dk, g.dv, g.dInitialState]) t?.dispose();
    // The backend stays usable, and the plain scan takes such slopes.
    const y = T.add(on(be, values(4, 6), [4]), on(be, values(4, 7), [4]));
    expect((await y.data()).length).toBe(4);
  });

  it("the Lightning forward by segment walks matches the plain scan and the CPU: output and final state, odd sizes, segments, chunks", async () => {
    // The benchmark shape (B·T = 65,536, H = 16, D = E = 128): one segment per sequence at T = 1,024
    // (no totals, no scan) and at T = 8,192 (128 walks: one wave either way), 16 segments of 64
    // blocks at T = 65,536; at T = 16,384 (64 walks) 4 segments of 64 blocks (two waves of 64
    // blocks and the totals, against one wave of 256 blocks); 192 walks of 128 blocks (also as 96
    // sequences of two column tiles) split in two (three waves of 64 blocks, against two waves of
    // 128), 256 walks not split.
    expect(walkSegmentBlocks(64 * 16, 16, 1)).toBe(16);
    expect(walkSegmentBlocks(8 * 16, 128, 1)).toBe(128);
    expect(walkSegmentBlocks(16, 1024, 1)).toBe(64);
    expect(walkSegmentBlocks(4 * 16, 256, 1)).toBe(64);
    expect(walkSegmentBlocks(96, 128, 2)).toBe(64);
    expect(walkSegmentBlocks(192, 128, 1)).toBe(64);
    expect(walkSegmentBlocks(256, 128, 1)).toBe(128);
    // (B, H, T, D, E, initial state, blocks per segment or null (by size), scratch cap): T not a
    // multiple of 64, B·H odd, D and E of 64, 128 and odd multiples of 4, a partial last segment,
    // one segment longer than the sequence, several E tiles (E = 132, 260), a segment-state cap that
    // runs the batch·heads in chunks, and T = 1.
    const cases = [
      [1, 3, 577, 64, 64, true, 3],
      [3, 1, 199, 128, 128, false, 2],
      [1, 3, 300, 20, 12, true, 16],
      [1, 5, 390, 12, 132, true, 2],
      [1, 1, 70, 124, 260, false, 1],
      [3, 1, 333, 36, 28, true, 2, 36 * 28 * 4 * 3],
      [1, 3, 130, 128, 64, true, null],
      [3, 3, 1, 8, 8, false, null],
      [1, 1, 65, 4, 4, true, null],
    ] as [number, number, number, number, number, boolean, number | null, number?][];
    let seed = 400;
    try {
      // 128 columns of E per walk workgroup, and 64; 128 on workgroups of 512 invocations; both
      // widths with every block's product made first.
      for (const forward of ["walk", "walk64", "wide", "products", "products64"] as const) {
        kernelChoices.forward = forward;
        for (const [B, H, Tn, D, E, withInit, G, scratch] of cases) {
          setWalkSegmentBlocks(G);
          setWalkScratchBytes(scratch ?? 2 ** 30);
          const parts = await lightningThreeWays([B, H, Tn, D, E], withInit, seed, 0);
          seed += 4;
          for (const part of ["output", "state"] as const) {
            const [f, p, c] = parts[part];
            const what = `${forward}: B ${B} H ${H} T ${Tn} D ${D} E ${E}, ${G ?? "sized"}-block segments${withInit ? ", initial state" : ""}: ${part}`;
            expect(relRms(f, c), what).toBeLessThan(TOL);
            expect(relRms(p, c), what).toBeLessThan(TOL);
          }
        }
      }
      // Without the loads that touch the next block ahead (a kernel of its own), and without them
      // with q and k loaded by whole rows. Then loads two stages ahead (walk-rows2, the default):
      // four quarters of d a block (D > 96) and two (32 < D ≤ 64), blocks of every stage, a partial
      // last block (stages with no tokens), D not a multiple of 32 (a partial last quarter), two E
      // tiles, T = 1, and D = 24 and 80, where the walk keeps one stage ahead.
      type Case = readonly [number, number, number, number, number, boolean, number | null];
      const oneAhead: readonly Case[] = [
        [1, 3, 577, 64, 64, true, 3],
        [3, 1, 199, 128, 128, false, 2],
        [2, 2, 130, 36, 20, true, null],
      ];
      const twoAhead: readonly Case[] = [
        [1, 3, 577, 128, 128, true, 3],
        [3, 1, 199, 100, 132, false, 2],
        [2, 2, 130, 128, 20, true, null],
        [1, 2, 1, 128, 8, false, null],
        [1, 3, 200, 64, 64, true, 2],
        [2, 1, 257, 36, 40, false, 2],
        [1, 2, 150, 24, 16, true, 2],
        [1, 2, 130, 80, 64, true, null],
      ];
      for (const [forward, cases] of [
        ["walk-notouch", oneAhead],
        ["walk-rows", oneAhead],
        ["walk-rows2", twoAhead],
      ] as const) {
        kernelChoices.forward = forward;
        for (const [B, H, Tn, D, E, withInit, G] of cases) {
          setWalkSegmentBlocks(G);
          const parts = await lightningThreeWays([B, H, Tn, D, E], withInit, seed, 0);
          seed += 4;
          for (const part of ["output", "state"] as const) {
            const [f, p, c] = parts[part];
            const what = `${forward}: B ${B} H ${H} T ${Tn} D ${D} E ${E}: ${part}`;
            expect(relRms(f, c), what).toBeLessThan(TOL);
            expect(relRms(p, c), what).toBeLessThan(TOL);
          }
        }
      }
      // q, k, v and o bound two batch·heads at a time (rows at offsets aligned to 256 bytes), or
      // copied two at a time into buffers of their own (the output copied back) for each walk kernel.
      // staged64, staged-notouch and staged-wide run kernels tested unstaged above: one case each.
      // bound-wide: the wide walk with those bindings.
      for (const how of ["bound", "bound-wide", "staged", "staged-rows", "staged64", "staged-notouch", "staged-wide"] as const) {
        const chunked = [
          [1, 5, 200, 64, 32, true, null],
          [3, 1, 320, 128, 128, false, 2],
        ] as const;
        for (const [B, H, Tn, D, E, withInit, G] of how === "bound" || how === "bound-wide" || how === "staged" || how === "staged-rows" ? chunked : chunked.slice(1)) {
          const bytes = 2 * Tn * Math.max(D, E) * 4;
          const bound = how === "bound" || how === "bound-wide";
          kernelChoices.forward = how === "bound" ? "walk" : how === "bound-wide" ? "wide" : how;
          kernelChoices.bindCapBytes = bound ? bytes : 0;
          kernelChoices.stageBytes = bytes;
          setWalkSegmentBlocks(G);
          const parts = await lightningThreeWays([B, H, Tn, D, E], withInit, seed, 0);
          seed += 4;
          for (const part of ["output", "state"] as const) {
            const [f, p, c] = parts[part];
            const what = `${how} in chunks: B ${B} H ${H} T ${Tn} D ${D} E ${E}: ${part}`;
            expect(relRms(f, c), what).toBeLessThan(TOL);
            expect(relRms(p, c), what).toBeLessThan(TOL);
          }
        }
      }
    } finally {
      kernelChoices.forward = DEFAULT_FORWARD;
      kernelChoices.touchAhead = true;
      kernelChoices.bindCapBytes = 0;
      kernelChoices.stageBytes = 2 ** 28;
      setWalkSegmentBlocks(null);
      setWalkScratchBytes(2 ** 30);
    }
    const keys = fast!.runtime.pipelineKeys();
    for (const step of ["walk_totals", "walk_scan", "walk", "walk64", "walk_wide", "walk:no_touch", "walk_totals:no_touch", "walk:rows", "walk:no_touch:rows", "walk_products", "walk64_products", "walk_block_products", "walk_block_products_totals", "walk:no_touch:rows:ahead2", "walk:no_touch:rows:ahead2q2", "walk_totals:no_touch:ahead2", "walk_totals64:no_touch", "walk_totals64:no_touch:ahead2"]) {
      expect(keys).toContain(`lightning_${step}`);
    }
    expect(plain!.runtime.pipelineKeys().some((key) => key.startsWith("lightning_walk"))).toBe(false);
    // Eight walk kernels and their chunked runs take minutes on lavapipe's two cores.
  }, 300_000);
});
