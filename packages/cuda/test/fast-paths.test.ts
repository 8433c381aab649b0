/**
 * The fast paths of the elementwise and movement kernels (native/elementwise.cu, movement.cu:
 * 16-byte packs, 32-bit offsets, strided copies widened to 16-byte units) and their fallbacks,
 * against the CPU backend on the same inputs, at sizes the conformance suite does not reach: sizes
 * that are and are not multiples of a pack, scalars on either side, row and column broadcasts,
 * permutes of [B, T, H, hd], slices and concats along the last dim at aligned and unaligned
 * offsets. Skipped, with the reason printed, where the CUDA backend cannot start; under
 * LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 */
import * as T from "@lightning-ts/tensor";
import { type Backend, type DType, type Tensor } from "@lightning-ts/tensor";
import { assertClose, describeBackends, seeded, tolerance } from "@lightning-ts/testing";
import { afterEach, beforeEach, expect, it } from "vitest";
import "./setup.js";

const cpu = T.createCpuBackend();
const FLOATS: DType[] = ["f32", "f16", "bf16"];
const exact = { atol: 0, rtol: 0 };

const fmt = (s: readonly number[]) => s.join(", ");
const values = async (t: Tensor) => Float64Array.from(await t.data());

/** The same values on the CPU backend. */
async function onCpu(x: Tensor): Promise<Tensor> {
  return T.tensor(await x.data(), x.shape, { dtype: x.dtype, backend: cpu });
}

/** Element by element, NaN equal to NaN: what "bit-identical" means once read back as numbers. */
async function expectSame(got: Tensor, want: Tensor, label: string) {
  expect(got.shape, label).toEqual(want.shape);
  expect(Array.from(await got.data()), label).toEqual(Array.from(await want.data()));
}

/**
 * Pairs of shapes for the broadcast kernels, each with the path it takes for 16-bit dtypes (pack of
 * 8) and f32 (pack of 4).
 */
const PAIRS: [number[], number[], string][] = [
  [[37, 219], [37, 219], "same shape, n not a multiple of a pack: packs and a scalar tail"],
  [[64, 128], [64, 128], "same shape, whole packs"],
  [[3], [3], "shorter than one pack: tail only"],
  [[], [37, 219], "scalar on the left"],
  [[37, 219], [1], "scalar on the right"],
  [[1, 1], [1], "one element"],
  [[129, 64], [64], "row vector over rows: packs along rows"],
  [[129, 60], [60], "row of 60: packs of 4 for f32, one by one for 16-bit"],
  [[129, 61], [61], "row of odd width: one by one"],
  [[129, 64], [129, 1], "column over columns: one element repeated per pack"],
  [[129, 1], [1, 64], "outer sum"],
  [[33, 1, 40], [1, 7, 40], "both broadcast, rank 3"],
  [[2, 3, 5, 24], [3, 1, 24], "rank 4 with a broadcast middle dim"],
];

await describeBackends("elementwise and movement fast paths vs the CPU", (gpu: () => Backend) => {
  const rng = seeded(4242);
  // Every tensor a test makes (on either backend) is disposed after it.
  let before = new Set<Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });
  /** Random values, never zero, on the GPU; `shift` keeps them away from zero (div, pow). */
  const rand = (shape: number[], dtype: DType, shift = 0) =>
    T.tensor(
      rng.array(shape.reduce((a, b) => a * b, 1)).map((v) => (shift ? Math.sign(v || 1) * (Math.abs(v) + shift) : v || 0.5)),
      shape,
      { dtype, backend: gpu() },
    );
  /** Small positive integers (so that comparisons meet equal values), as `dtype`. */
  const smallInts = (shape: number[], dtype: DType) =>
    T.tensor(Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => 1 + rng.int(3)), shape, { dtype, backend: gpu() });

  for (const dtype of FLOATS) {
    it(`binary ops over packs, tails and broadcasts (${dtype})`, async () => {
      for (const op of T.BINARY_OPS) {
        for (const [sa, sb, path] of PAIRS) {
          const a = op === "pow" ? T.abs(rand(sa, dtype, 0.1)) : rand(sa, dtype);
          const b = rand(sb, dtype, op === "div" ? 0.5 : 0);
          const [ca, cb] = [await onCpu(a), await onCpu(b)];
          const binary = T[op] as (x: Tensor, y: Tensor) => Tensor;
          const y = binary(a, b);
          const want = binary(ca, cb);
          expect(y.shape).toEqual(want.shape);
          assertClose(await values(y), await values(want), { ...tolerance(dtype, 10), label: `${op} ${dtype} [${fmt(sa)}]×[${fmt(sb)}]: ${path}` });
        }
      }
    });

    it(`unary ops over packs and tails (${dtype})`, async () => {
      for (const op of ["neg", "exp", "silu", "tanh"] as const) {
        for (const shape of [[37, 219], [64, 128], [5]]) {
          const x = rand(shape, dtype);
          const cx = await onCpu(x);
          const y = T[op](x);
          const want = T[op](cx);
          assertClose(await values(y), await values(want), { ...tolerance(dtype, 10), label: `${op} ${dtype} [${fmt(shape)}]` });
        }
      }
    });

    it(`comparisons and where over packs, tails and broadcasts (${dtype})`, async () => {
      for (const [sa, sb, path] of PAIRS) {
        const a = smallInts(sa, dtype);
        const b = smallInts(sb, dtype);
        const [ca, cb] = [await onCpu(a), await onCpu(b)];
        for (const op of ["less", "equal", "greaterEqual"] as const) {
          const y = T[op](a, b);
          const want = T[op](ca, cb);
          assertClose(await values(y), await values(want), { ...exact, label: `${op} ${dtype} [${fmt(sa)}]×[${fmt(sb)}]: ${path}` });
        }
        // where(cond, a, b) with cond shaped like a and like b in turn, a and b random.
        for (const sc of [sa, sb]) {
          const cond = T.less(smallInts(sc, dtype), smallInts(sc, dtype));
          const x = rand(sa, dtype);
          const z = rand(sb, dtype);
          const [cc, cx, cz] = [await onCpu(cond), await onCpu(x), await onCpu(z)];
          await expectSame(T.where(cond, x, z), T.where(cc, cx, cz), `where ${dtype} [${fmt(sc)}] ? [${fmt(sa)}] : [${fmt(sb)}]`);
          await expectSame(T.where(cond, z, x), T.where(cc, cz, cx), `where ${dtype} [${fmt(sc)}] ? [${fmt(sb)}] : [${fmt(sa)}]`);
        }
      }
    });

    it(`movement: permutes of [B, T, H, hd], last-dim slices, concats, pads, expands (${dtype})`, async () => {
      // hd 64 and 128: 16-byte units; 60, 62: 8- and 4-byte units for 16-bit dtypes; 63: elements.
      for (const hd of [64, 128, 60, 62, 63]) {
        const x = rand([2, 33, 3, hd], dtype);
        const cx = await onCpu(x);
        const y = T.permute(x, [0, 2, 1, 3]);
        await expectSame(y, T.permute(cx, [0, 2, 1, 3]), `permute [2, 33, 3, ${hd}] → [B, H, T, hd]`);
        await expectSame(T.permute(y, [0, 2, 1, 3]), cx, `permute back, hd ${hd}`);
        await expectSame(T.permute(x, [0, 2, 3, 1]), T.permute(cx, [0, 2, 3, 1]), `permute last dim away, hd ${hd}`);
        await expectSame(T.slice(x, [0, 5, 1, 0], [2, 30, 3, hd]), T.slice(cx, [0, 5, 1, 0], [2, 30, 3, hd]), `slice middle dims, hd ${hd}`);
      }
      // [N, 4096] split into four [N, 1024] and put back; uneven splits start off 16-byte boundaries.
      const wide = rand([37, 4096], dtype);
      const cwide = await onCpu(wide);
      const parts = T.split(wide, 4, 1);
      const cparts = T.split(cwide, 4, 1);
      for (let i = 0; i < 4; i++) await expectSame(parts[i], cparts[i], `split [37, 4096] part ${i}`);
      await expectSame(T.concat(parts, 1), cwide, "concat of the four parts");
      for (const sections of [[3, 64, 33], [8, 2, 90], [1, 99]]) {
        const x = rand([37, 100], dtype);
        const cx = await onCpu(x);
        const got = T.split(x, sections, 1);
        const want = T.split(cx, sections, 1);
        for (let i = 0; i < sections.length; i++) await expectSame(got[i], want[i], `split [37, 100] as ${fmt(sections)} part ${i}`);
        await expectSame(T.concat([...got].reverse(), 1), T.concat([...want].reverse(), 1), `concat ${fmt(sections)} reversed`);
      }
      const x = rand([37, 64], dtype);
      const cx = await onCpu(x);
      for (const widths of [[[0, 0], [8, 8]], [[0, 0], [1, 2]], [[2, 1], [0, 0]]] as [number, number][][]) {
        await expectSame(T.pad(x, widths), T.pad(cx, widths), `pad ${JSON.stringify(widths)}`);
      }
      for (const [shape, to] of [[[1, 64], [37, 64]], [[37, 1], [37, 64]], [[64], [3, 37, 64]], [[3, 1, 8], [3, 5, 8]]]) {
        const e = rand(shape, dtype);
        await expectSame(T.expand(e, to), T.expand(await onCpu(e), to), `expand [${fmt(shape)}] → [${fmt(to)}]`);
      }
    });

    it(`reductions over the last and the first axis (${dtype})`, async () => {
      const x = rand([5, 37, 219], dtype);
      const cx = await onCpu(x);
      for (const op of T.REDUCE_OPS) {
        for (const axes of [[2], [0], [1, 2], [0, 2]]) {
          assertClose(await values(T[op](x, axes)), await values(T[op](cx, axes)), { ...tolerance(dtype, 10), label: `${op} over ${fmt(axes)} ${dtype}` });
        }
      }
    });
  }

  it("casts between float types: packs, tails, and the values that round, overflow or are NaN", async () => {
    const special = [NaN, Infinity, -Infinity, 65520, -65520, 1e-6, 1e-40, 3.3e38, 1.00390625, 1.01171875, -1.00390625, 2049, 0.1];
    for (const n of [8103, 8192, 7]) {
      const base = rng.array(n, 3).map((v) => v || 0.5);
      base.set(special.slice(0, Math.min(n, special.length)));
      for (const from of FLOATS) {
        const x = T.tensor(base, [n], { dtype: from, backend: gpu() });
        const cx = await onCpu(x);
        for (const to of FLOATS) await expectSame(T.cast(x, to), T.cast(cx, to), `cast ${from} → ${to}, n = ${n}`);
      }
    }
    // The integer pairs keep the general kernel.
    const xi = T.tensor(rng.array(37, 300), [37], { backend: gpu() });
    const cx = await onCpu(xi);
    for (const to of ["i32", "u8"] as DType[]) await expectSame(T.cast(xi, to), T.cast(cx, to), `cast f32 → ${to}`);
    const ints = T.cast(xi, "i32");
    for (const to of FLOATS) await expectSame(T.cast(ints, to), T.cast(await onCpu(ints), to), `cast i32 → ${to}`);
  });

  it("i32 and u8 operands: binary, comparisons and where in packs", async () => {
    for (const [sa, sb, path] of PAIRS) {
      const a = T.tensor(Int32Array.from({ length: sa.reduce((p, q) => p * q, 1) }, () => rng.int(2001) - 1000 || 7), sa, { dtype: "i32", backend: gpu() });
      const b = T.tensor(Int32Array.from({ length: sb.reduce((p, q) => p * q, 1) }, () => rng.int(2001) - 1000 || 3), sb, { dtype: "i32", backend: gpu() });
      const [ca, cb] = [await onCpu(a), await onCpu(b)];
      for (const op of ["add", "sub", "mul", "div", "maximum", "less", "equal"] as const) {
        const f = T[op] as (x: Tensor, y: Tensor) => Tensor;
        await expectSame(f(a, b), f(ca, cb), `${op} i32 [${fmt(sa)}]×[${fmt(sb)}]: ${path}`);
      }
      const bytes = (shape: number[]) => T.tensor(Uint8Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => 1 + rng.int(200)), shape, { dtype: "u8", backend: gpu() });
      const [ua, ub] = [bytes(sa), bytes(sb)];
      const [cua, cub] = [await onCpu(ua), await onCpu(ub)];
      await expectSame(T.less(ua, ub), T.less(cua, cub), `less u8 [${fmt(sa)}]×[${fmt(sb)}]`);
      await expectSame(T.where(T.less(a, b), ua, ub), T.where(T.less(ca, cb), cua, cub), `where u8 [${fmt(sa)}]×[${fmt(sb)}]`);
    }
  });
});
