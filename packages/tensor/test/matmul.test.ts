/**
 * CPU matmul against a float64 triple-loop oracle: odd sizes, all transpose combinations, batch
 * broadcasting, f16/bf16 storage, every micro-kernel (relaxed-SIMD FMA, plain SIMD, plain JS),
 * threads vs one thread (bitwise equal: the row split never changes any element's summation
 * order), and the small-M path's packed-weight cache (reused, and dropped when the weight changes).
 */
import { seeded } from "../src/testing/index.js";
import { afterAll, describe, expect, it } from "vitest";
import type { DType } from "../src/dtype.js";
import { byteSize, decode, encode } from "../src/dtype.js";
import { CpuBackend } from "../src/cpu/backend.js";
import { createGemmEngine } from "../src/cpu/matmul-engine.js";
import { createMatmulKernel, type MatmulKernelKind, matmulKernel, matmulKernelKind, matmulUsesSimd, packedCacheFloats } from "../src/cpu/matmul.js";
import { allocateBytes, type CpuRef, view } from "../src/cpu/storage.js";
import { setBackend } from "../src/engine.js";
import { matmul, tensor } from "../src/api/ops.js";
import { matmulDims } from "../src/ops/specs.js";
import { sizeOf } from "../src/shape.js";

/** Uniform values in [-1, 1) from the shared seeded test generator. */
function random(seed: number): () => number {
  const rng = seeded(seed);
  return () => rng.next() * 2 - 1;
}

/** A tensor ref holding `values` rounded to `dtype`; returns the rounded values too (the oracle's input). */
function makeRef(shape: number[], dtype: DType, values: ArrayLike<number>): { ref: CpuRef; rounded: Float64Array } {
  const raw = encode(dtype, values);
  const storage = allocateBytes(raw.byteLength);
  storage.bytes.set(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
  const rounded = Float64Array.from(decode(dtype, raw));
  return { ref: { storage, shape, dtype, size: sizeOf(shape) }, rounded };
}

function randomRef(shape: number[], dtype: DType, seed: number) {
  const next = random(seed);
  return makeRef(shape, dtype, Array.from({ length: sizeOf(shape) }, next));
}

function emptyRef(shape: number[], dtype: DType): CpuRef {
  const bytes = sizeOf(shape) * byteSize(dtype);
  return { storage: allocateBytes(bytes), shape, dtype, size: sizeOf(shape) };
}

/** The float64 oracle, written independently of the kernel: index arithmetic per element. */
function oracle(a: ArrayLike<number>, aShape: number[], b: ArrayLike<number>, bShape: number[], transA: boolean, transB: boolean) {
  const { m, k, n, batch } = matmulDims(aShape, bShape, transA, transB);
  const out = new Float64Array(sizeOf(batch) * m * n);
  const index = new Array<number>(batch.length).fill(0);
  // Offset of the matrix a broadcast batch index selects in a tensor of this shape.
  const matrixOffset = (shape: number[]) => {
    const dims = shape.slice(0, -2);
    let offset = 0;
    for (let d = 0; d < dims.length; d++) offset = offset * dims[d] + (dims[d] === 1 ? 0 : index[d + batch.length - dims.length]);
    return offset * shape.at(-1)! * shape.at(-2)!;
  };
  for (let bi = 0; bi < sizeOf(batch); bi++) {
    for (let d = batch.length - 1, rest = bi; d >= 0; d--) {
      index[d] = rest % batch[d];
      rest = Math.floor(rest / batch[d]);
    }
    const ao = matrixOffset(aShape);
    const bo = matrixOffset(bShape);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const x = a[ao + (transA ? p * m + i : i * k + p)];
          const y = b[bo + (transB ? j * k + p : p * n + j)];
          s += x * y;
        }
        out[bi * m * n + i * n + j] = s;
      }
    }
  }
  return out;
}

function relRms(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let err = 0;
  let ref = 0;
  for (let i = 0; i < want.length; i++) {
    const d = got[i] - want[i];
    err += Number.isNaN(d) ? Infinity : d * d;
    ref += want[i] * want[i];
  }
  return Math.sqrt(err / Math.max(ref, 1e-30));
}

const TOLERANCE: Record<string, number> = { f64: 1e-14, f32: 1e-5, f16: 1e-3, bf16: 6e-3 };

/** Runs `kernel` on seeded inputs and returns its output (decoded) and the oracle's. */
function check(
  kernel: typeof matmulKernel,
  aShape: number[],
  bShape: number[],
  opts: { transA?: boolean; transB?: boolean; dtype?: DType; seed?: number } = {},
) {
  const { transA = false, transB = false, dtype = "f32", seed = 1 } = opts;
  const a = randomRef(aShape, dtype, seed);
  const b = randomRef(bShape, dtype, seed + 1000);
  const { m, n, batch } = matmulDims(aShape, bShape, transA, transB);
  const out = emptyRef([...batch, m, n], dtype);
  kernel({ inputs: [a.ref, b.ref], outputs: [out], attrs: { transA, transB } });
  const got = Float64Array.from(decode(dtype, view(out)));
  return { got, want: oracle(a.rounded, aShape, b.rounded, bShape, transA, transB) };
}

/** Shapes of a and b for an (m, k) x (k, n) product under the given transposes. */
function shapes(m: number, k: number, n: number, transA: boolean, transB: boolean): [number[], number[]] {
  return [transA ? [k, m] : [m, k], transB ? [n, k] : [k, n]];
}

const TRANSPOSES = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
] as const;

// (m, k, n): odd sizes around the 6x8 micro-tile, k across the 256-wide k slice.
const SIZES: [number, number, number][] = [
  [1, 1, 1],
  [1, 17, 3],
  [3, 1, 17],
  [17, 65, 3],
  [65, 127, 17],
  [127, 3, 65],
  [127, 127, 127],
  [65, 300, 129],
];

const threaded = new CpuBackend({ threads: 2 });
afterAll(() => threaded.dispose());

describe("matmul kernel vs the float64 oracle", () => {
  it("runs the WebAssembly SIMD micro-kernel here, with relaxed-SIMD FMA (Node ≥ 22)", () => {
    expect(matmulUsesSimd()).toBe(true);
    expect(matmulKernelKind()).toBe("relaxed-simd");
  });

  // Each kernel forced in turn, so the fallbacks stay tested on an engine that has relaxed SIMD.
  for (const kind of ["relaxed-simd", "simd", "js"] as MatmulKernelKind[]) {
    it(`${kind} kernel: M = 1, 3, 17 with K and N off the tile, all transposes`, () => {
      const kernel = createMatmulKernel(1, { kind });
      for (const [transA, transB] of TRANSPOSES) {
        for (const [m, k, n] of [[1, 300, 13], [3, 7, 29], [17, 259, 517], [25, 2049, 9]] as const) {
          const [aShape, bShape] = shapes(m, k, n, transA, transB);
          const { got, want } = check(kernel, aShape, bShape, { transA, transB, seed: 31 * m + n });
          expect(relRms(got, want), `${kind} ${m}x${k}x${n}`).toBeLessThan(TOLERANCE.f32);
        }
      }
    });
  }

  for (const [transA, transB] of TRANSPOSES) {
    it(`f32, transA=${transA}, transB=${transB}, odd sizes`, () => {
      for (const [m, k, n] of SIZES) {
        const [aShape, bShape] = shapes(m, k, n, transA, transB);
        const { got, want } = check(matmulKernel, aShape, bShape, { transA, transB, seed: m * 7 + k });
        expect(relRms(got, want), `${m}x${k}x${n}`).toBeLessThan(TOLERANCE.f32);
      }
    });
  }

  it("broadcasts batch dims", () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[2, 1, 5, 7], [3, 7, 4], false, false],
      [[4, 17, 9], [9, 13], false, false],
      [[17, 9], [3, 9, 13], false, false],
      [[3, 1, 9, 17], [1, 2, 13, 9], true, true],
      [[1, 6, 11], [5, 1, 11, 6], false, false],
    ];
    for (const [aShape, bShape, transA, transB] of cases) {
      const { got, want } = check(matmulKernel, aShape, bShape, { transA, transB });
      expect(relRms(got, want), `${aShape.join(",")} x ${bShape.join(",")}`).toBeLessThan(TOLERANCE.f32);
    }
  });

  for (const dtype of ["f16", "bf16"] as const) {
    it(`${dtype} storage, f32 compute`, () => {
      for (const [transA, transB] of TRANSPOSES) {
        const [aShape, bShape] = shapes(65, 127, 17, transA, transB);
        const { got, want } = check(matmulKernel, [2, ...aShape], bShape, { transA, transB, dtype });
        expect(relRms(got, want)).toBeLessThan(TOLERANCE[dtype]);
      }
      // Large enough for worker threads: the shared-memory copies of decoded inputs.
      const { got, want } = check(threaded.kernels.matmul as typeof matmulKernel, [130, 200], [200, 150], { dtype });
      expect(relRms(got, want)).toBeLessThan(TOLERANCE[dtype]);
    });
  }

  it("f64 accumulates in float64", () => {
    for (const [transA, transB] of TRANSPOSES) {
      const [aShape, bShape] = shapes(17, 65, 3, transA, transB);
      const { got, want } = check(matmulKernel, [3, 1, ...aShape], [2, ...bShape], { transA, transB, dtype: "f64" });
      expect(relRms(got, want)).toBeLessThan(TOLERANCE.f64);
    }
  });

  it("k = 0 gives zeros", () => {
    const { got } = check(matmulKernel, [3, 0], [0, 5]);
    expect(Array.from(got)).toEqual(new Array(15).fill(0));
  });

  it("the plain JS micro-kernel matches the oracle too", () => {
    const engine = createGemmEngine(null);
    expect(engine.simd).toBe(false);
    const viaJs: typeof matmulKernel = ({ inputs, outputs, attrs }) => {
      const [a, b] = inputs;
      const { m, n, k } = matmulDims(a.shape, b.shape, attrs.transA, attrs.transB);
      const f32 = (r: CpuRef) => new Float32Array(r.storage.bytes.buffer, 0, r.size);
      const zero = new Float64Array(1);
      engine.run({ a: f32(a), b: f32(b), c: f32(outputs[0]), aOffsets: zero, bOffsets: zero, m, n, k, ...attrs, rowStart: 0, rowEnd: m });
    };
    for (const [transA, transB] of TRANSPOSES) {
      const [aShape, bShape] = shapes(65, 300, 129, transA, transB);
      const { got, want } = check(viaJs, aShape, bShape, { transA, transB });
      expect(relRms(got, want)).toBeLessThan(TOLERANCE.f32);
    }
  });
});

describe("matmul on worker threads", () => {
  const kernel = threaded.kernels.matmul as typeof matmulKernel;

  // n > 512 and k > 2048 cross the engine's column block and k super-slice.
  it("matches the oracle on a problem split across threads", () => {
    for (const [transA, transB] of TRANSPOSES) {
      const [aShape, bShape] = shapes(101, 2100, 530, transA, transB);
      const { got, want } = check(kernel, aShape, bShape, { transA, transB, seed: 5 });
      expect(relRms(got, want)).toBeLessThan(TOLERANCE.f32);
    }
  });

  it("equals the single-threaded result bit for bit", () => {
    const cases: [number[], number[]][] = [
      [[255, 300], [300, 257]],
      [[3, 50, 120], [120, 97]], // the row split crosses batch boundaries
    ];
    for (const [aShape, bShape] of cases) {
      const one = check(createMatmulKernel(1), aShape, bShape, { seed: 9 });
      const two = check(kernel, aShape, bShape, { seed: 9 });
      expect(two.got).toEqual(one.got);
    }
  });
});

describe("matmul small-M path: packed weights cached between calls", () => {
  const backend = new CpuBackend({ threads: 2 });
  afterAll(() => backend.dispose());
  const kernel = backend.kernels.matmul as typeof matmulKernel;

  /** A live backend tensor holding seeded values (the oracle's copy returned beside it). */
  function live(shape: number[], seed: number) {
    const next = random(seed);
    const values = Float32Array.from({ length: sizeOf(shape) }, next);
    const storage = backend.allocate(values.byteLength);
    backend.write(storage, new Uint8Array(values.buffer));
    return { ref: { storage, shape, dtype: "f32" as const, size: values.length }, values };
  }
  function product(x: CpuRef, w: CpuRef, transB = false) {
    const { m, n } = matmulDims(x.shape, w.shape, false, transB);
    const out = live([m, n], 0);
    kernel({ inputs: [x, w], outputs: [out.ref], attrs: { transA: false, transB } });
    return Float64Array.from(view(out.ref) as Float32Array);
  }

  it("reuses the packed weight, and follows writes and frees of it", () => {
    const w = live([259, 531], 41);
    for (const m of [1, 3, 17]) {
      const x = live([m, 259], 40 + m);
      const before = packedCacheFloats();
      const first = product(x.ref, w.ref);
      expect(relRms(first, oracle(x.values, x.ref.shape, w.values, w.ref.shape, false, false))).toBeLessThan(TOLERANCE.f32);
      // Packed once, at M = 1 (536 padded columns x 259), then reused at M = 3; 17 rows is above
      // the small-M limit and packs per call, caching nothing.
      expect(packedCacheFloats() - before).toBe(m === 1 ? 536 * 259 : 0);
      expect(product(x.ref, w.ref)).toEqual(first);
    }

    // New values through backend.write: the next product uses them.
    const x = live([3, 259], 50);
    product(x.ref, w.ref);
    const next = random(42);
    const fresh = Float32Array.from({ length: w.values.length }, next);
    backend.write(w.ref.storage, new Uint8Array(fresh.buffer));
    expect(relRms(product(x.ref, w.ref), oracle(x.values, x.ref.shape, fresh, w.ref.shape, false, false))).toBeLessThan(TOLERANCE.f32);

    // New values as a kernel's output (here another matmul writing into the weight's storage).
    const y = live([259, 7], 51);
    const z = live([7, 531], 52);
    kernel({ inputs: [y.ref, z.ref], outputs: [w.ref], attrs: { transA: false, transB: false } });
    const written = Float32Array.from(view(w.ref) as Float32Array);
    expect(relRms(product(x.ref, w.ref), oracle(x.values, x.ref.shape, written, w.ref.shape, false, false))).toBeLessThan(TOLERANCE.f32);

    // Freed: its packed copy goes too.
    const held = packedCacheFloats();
    backend.free(w.ref.storage);
    expect(packedCacheFloats()).toBe(held - 536 * 259);
  });

  it("caches a transposed weight apart from its untransposed use", () => {
    const w = live([45, 259], 61); // used as (259, 45) through transB
    const x = live([2, 259], 62);
    const got = product(x.ref, w.ref, true);
    expect(relRms(got, oracle(x.values, x.ref.shape, w.values, w.ref.shape, false, true))).toBeLessThan(TOLERANCE.f32);
    expect(product(x.ref, w.ref, true)).toEqual(got);
    const square = live([45, 45], 63);
    const x45 = live([1, 45], 64);
    for (const transB of [false, true, false]) {
      expect(relRms(product(x45.ref, square.ref, transB), oracle(x45.values, x45.ref.shape, square.values, square.ref.shape, false, transB))).toBeLessThan(TOLERANCE.f32);
    }
  });
});

describe("matmul through the op API", () => {
  it("dispatches to the CPU kernel with threads", () => {
    setBackend(threaded);
    const next = random(3);
    const av = Array.from({ length: 2 * 130 * 140 }, next);
    const bv = Array.from({ length: 140 * 150 }, next);
    const c = matmul(tensor(av, [2, 130, 140]), tensor(bv, [150, 140]), { transB: true });
    expect(c.shape).toEqual([2, 130, 150]);
    const want = oracle(Float32Array.from(av), [2, 130, 140], Float32Array.from(bv), [150, 140], false, true);
    expect(relRms(c.dataSync(), want)).toBeLessThan(TOLERANCE.f32);
  });
});
