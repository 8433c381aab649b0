/**
 * The in-place primitives on one backend (shared by the CPU, WebGPU and CUDA test files):
 * lightningStep with inPlace against the same step out of place (bit for bit) and a float64
 * recurrence on the host; copyInto and copyIntoMany against the same copies done on the host bytes; leadingRows read
 * and written through kernels. Seeded random inputs, odd sizes, never zeros.
 *
 * Letters: B batch, H heads, D query/key head dim, E value head dim, N rows of a capacity buffer.
 */
import * as T from "@lightning-ts/tensor";
import type { Backend, DType, Tensor } from "@lightning-ts/tensor";
import { assertClose, seeded } from "@lightning-ts/tensor/testing";
import { expect, it } from "vitest";

const bytesOf = (t: Tensor) => t.bytes();

/** Fails with the first differing byte unless `a` and `b` are equal (toEqual walks big arrays slowly). */
function expectSameBytes(a: Uint8Array, b: Uint8Array, label: string): void {
  expect(a.byteLength, `${label}: byte length`).toBe(b.byteLength);
  const i = a.findIndex((x, j) => x !== b[j]);
  expect(i, `${label}: first differing byte (of ${a.byteLength})`).toBe(-1);
}
const values = async (t: Tensor) => Float64Array.from(await t.data());

/** Float dtypes the backend stores, in the order the tests run them. */
function floatDTypes(be: Backend): DType[] {
  return (["f32", "bf16", "f16", "f64"] as const).filter((d) => be.capabilities.dtypes.includes(d));
}

interface StepCase {
  B: number;
  H: number;
  D: number;
  E: number;
}

/** The head dims a decoder runs, and odd ones that take the kernels' general paths. */
const STEP_CASES: StepCase[] = [
  { B: 2, H: 3, D: 64, E: 64 },
  { B: 1, H: 5, D: 128, E: 128 },
  { B: 3, H: 2, D: 256, E: 128 },
  { B: 3, H: 5, D: 24, E: 40 },
  { B: 2, H: 3, D: 17, E: 33 },
];

/** o and the new state of S ← λS + kᵀv, o = qS in float64, from the values the tensors hold. */
function stepOracle(c: StepCase, q: Float64Array, k: Float64Array, v: Float64Array, slopes: readonly number[], S: Float64Array) {
  const { B, H, D, E } = c;
  const next = new Float64Array(S.length);
  const out = new Float64Array(B * H * E);
  for (let bh = 0; bh < B * H; bh++) {
    const lambda = Math.exp(-Math.fround(slopes[bh % H]));
    for (let d = 0; d < D; d++) {
      for (let e = 0; e < E; e++) {
        const i = (bh * D + d) * E + e;
        next[i] = lambda * S[i] + k[bh * D + d] * v[bh * E + e];
        out[bh * E + e] += q[bh * D + d] * next[i];
      }
    }
  }
  return { out, next };
}

/** Relative RMS bound of a step against the float64 oracle, by input dtype (the output is rounded to it). */
const STEP_BOUND: Record<string, number> = { f64: 1e-12, f32: 1e-5, bf16: 6e-3, f16: 1e-3 };

function stepInputs(be: Backend, c: StepCase, dtype: DType, seed: number) {
  const rng = seeded(seed);
  const stateDType = dtype === "f64" ? "f64" : "f32";
  const slopeValues = T.tnlSlopes(c.H, rng.int(6), 6);
  return {
    q: rng.tensor([c.B, c.H, c.D], { std: 0.5, dtype, backend: be }),
    k: rng.tensor([c.B, c.H, c.D], { std: 0.5, dtype, backend: be }),
    v: rng.tensor([c.B, c.H, c.E], { std: 0.5, dtype, backend: be }),
    slopeValues,
    slopes: T.tensor(slopeValues, [c.H], { backend: be }),
    state: rng.array(c.B * c.H * c.D * c.E, 0.5),
    stateDType,
  } as const;
}

/** lightningStep with inPlace: the same bits as out of place, over the given state's storage. */
export function lightningStepInPlaceSuite(backend: () => Backend): void {
  for (const c of STEP_CASES) {
    it(`lightningStep in place == out of place, bit for bit, B=${c.B} H=${c.H} D×E=${c.D}×${c.E}, every float dtype`, async () => {
      const be = backend();
      for (const [n, dtype] of floatDTypes(be).entries()) {
        const frame = T.beginScope();
        try {
          const x = stepInputs(be, c, dtype, c.D * 1009 + c.E * 31 + n);
          const shape = [c.B, c.H, c.D, c.E];
          const before = T.tensor(x.state, shape, { dtype: x.stateDType, backend: be });
          const over = T.tensor(x.state, shape, { dtype: x.stateDType, backend: be });
          const oldBytes = await bytesOf(before);

          const ref = T.lightningStep(x.q, x.k, x.v, x.slopes, before);
          const got = T.lightningStep(x.q, x.k, x.v, x.slopes, over, { inPlace: true });
          expect(got.state).not.toBe(over);
          expect(got.state.handle).toBe(over.handle);
          expect(ref.state.handle).not.toBe(before.handle);
          const label = `${dtype} ${c.D}×${c.E}`;
          expectSameBytes(await bytesOf(before), oldBytes, `${label}: out of place leaves the state alone`);
          expectSameBytes(await bytesOf(got.output), await bytesOf(ref.output), `${label}: output`);
          expectSameBytes(await bytesOf(got.state), await bytesOf(ref.state), `${label}: new state`);
          expectSameBytes(await bytesOf(over), await bytesOf(ref.state), `${label}: the given handle sees the new state`);

          // Both against the float64 recurrence on the values the tensors hold.
          const want = stepOracle(c, await values(x.q), await values(x.k), await values(x.v), x.slopeValues, await values(before));
          assertClose(await values(got.output), want.out, { atol: 1, rtol: STEP_BOUND[dtype], label: `${label} output vs float64` });
          assertClose(await values(over), want.next, { atol: 1e-3, rtol: STEP_BOUND[dtype === "f64" ? "f64" : "f32"], label: `${label} state vs float64` });

          // A second step chained on each: the in-place one reads the state the first one wrote.
          const y = stepInputs(be, c, dtype, c.D * 7919 + n);
          const ref2 = T.lightningStep(y.q, y.k, y.v, y.slopes, ref.state);
          const got2 = T.lightningStep(y.q, y.k, y.v, y.slopes, over, { inPlace: true });
          expectSameBytes(await bytesOf(got2.output), await bytesOf(ref2.output), `${label}: second output`);
          expectSameBytes(await bytesOf(over), await bytesOf(ref2.state), `${label}: second state`);
        } finally {
          T.endScope(frame);
        }
      }
    });
  }

  it("lightningStep in place on the first rows of a capacity buffer (leadingRows) updates those rows only", async () => {
    const be = backend();
    const c: StepCase = { B: 3, H: 2, D: 24, E: 40 };
    const N = 5;
    const rows = c.H * c.D * c.E;
    for (const [n, dtype] of floatDTypes(be).entries()) {
      const frame = T.beginScope();
      try {
        const x = stepInputs(be, c, dtype, 4243 + n);
        const all = seeded(77 + n).array(N * rows, 0.5);
        const cap = T.tensor(all, [N, c.H, c.D, c.E], { dtype: x.stateDType, backend: be });
        const capBefore = await bytesOf(cap);
        const alone = T.tensor(all.subarray(0, c.B * rows), [c.B, c.H, c.D, c.E], { dtype: x.stateDType, backend: be });

        const active = T.leadingRows(cap, c.B);
        const got = T.lightningStep(x.q, x.k, x.v, x.slopes, active, { inPlace: true });
        const ref = T.lightningStep(x.q, x.k, x.v, x.slopes, alone);
        expectSameBytes(await bytesOf(got.output), await bytesOf(ref.output), `${dtype}: output`);
        const capAfter = await bytesOf(cap);
        const split = c.B * rows * T.byteSize(x.stateDType);
        expectSameBytes(capAfter.subarray(0, split), await bytesOf(ref.state), `${dtype}: rows 0..${c.B - 1}`);
        expectSameBytes(capAfter.subarray(split), capBefore.subarray(split), `${dtype}: rows ${c.B}..${N - 1} untouched`);
      } finally {
        T.endScope(frame);
      }
    }
  });

  it("lightningStep refuses inPlace that is not a boolean, and a state it cannot write over", () => {
    const be = backend();
    T.scope(() => {
      const x = stepInputs(be, { B: 1, H: 2, D: 3, E: 5 }, "f32", 5);
      const state = T.tensor(x.state, [1, 2, 3, 5], { backend: be });
      expect(() => T.lightningStep(x.q, x.k, x.v, x.slopes, state, { inPlace: 1 as never })).toThrow(/lightningStep.*options\.inPlace.*a boolean.*1/);
      const other = T.tensor(x.state, [1, 2, 3, 5], { backend: be });
      other.dispose();
      expect(() => T.lightningStep(x.q, x.k, x.v, x.slopes, other, { inPlace: true })).toThrow(/lightningStep.*state.*a live tensor/);
    });
  });
}

/** The bytes of `dst` after copying `count` elements of `src` from `srcOffset` to `dstOffset`. */
function copiedOnHost(dst: Uint8Array, src: Uint8Array, size: number, dstOffset: number, srcOffset: number, count: number): Uint8Array {
  const out = dst.slice();
  out.set(src.subarray(srcOffset * size, (srcOffset + count) * size), dstOffset * size);
  return out;
}

function randomTensor(be: Backend, dtype: DType, shape: number[], seed: number): Tensor {
  const rng = seeded(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === "i32") return T.tensor(Int32Array.from({ length: n }, () => rng.int(2_000_001) - 1_000_000), shape, { dtype, backend: be });
  if (dtype === "u8") return T.tensor(Uint8Array.from({ length: n }, () => 1 + rng.int(255)), shape, { dtype, backend: be });
  return rng.tensor(shape, { dtype, backend: be });
}

/** copyInto: on the device, bounds checked, equal to the same copy of the host bytes. */
export function copyIntoSuite(backend: () => Backend): void {
  const dtypes = (be: Backend) => (["f32", "bf16", "f16", "i32", "u8", "f64"] as const).filter((d) => be.capabilities.dtypes.includes(d));

  it("copyInto with every dtype, offsets odd and even, into another tensor and within one", async () => {
    const be = backend();
    for (const [n, dtype] of dtypes(be).entries()) {
      const frame = T.beginScope();
      try {
        const size = T.byteSize(dtype);
        const src = randomTensor(be, dtype, [7, 11], 100 + n);
        const dst = randomTensor(be, dtype, [9, 13], 200 + n);
        // (dstOffset, srcOffset, count): defaults, odd offsets and counts (unaligned 16- and 8-bit words), one element, ends.
        const cases: [number | undefined, number | undefined, number | undefined][] = [
          [undefined, undefined, undefined],
          [3, 5, 17],
          [1, 0, 76],
          [116, 76, 1],
          [40, 2, 33],
          [0, 77, 0],
        ];
        for (const [dstOffset, srcOffset, count] of cases) {
          const want = copiedOnHost(await bytesOf(dst), await bytesOf(src), size, dstOffset ?? 0, srcOffset ?? 0, count ?? 77 - (srcOffset ?? 0));
          const handle = dst.handle;
          T.copyInto(dst, src, { dstOffset, srcOffset, count });
          expect(dst.handle).toBe(handle);
          expectSameBytes(await bytesOf(dst), want, `${dtype} dst ${dstOffset} src ${srcOffset} count ${count}`);
        }
        // Within one storage (ranges apart, also through a second handle to it).
        for (const [dstOffset, srcOffset, count] of [
          [60, 1, 43],
          [2, 57, 29],
          [103, 100, 3],
        ]) {
          const want = copiedOnHost(await bytesOf(dst), await bytesOf(dst), size, dstOffset, srcOffset, count);
          const rows = T.leadingRows(dst, 8);
          T.copyInto(dst, rows, { dstOffset, srcOffset, count });
          rows.dispose();
          expectSameBytes(await bytesOf(dst), want, `${dtype} within: dst ${dstOffset} src ${srcOffset} count ${count}`);
        }
      } finally {
        T.endScope(frame);
      }
    }
  });

  it("copyInto is ordered after the ops that wrote its source and before the ops that read its destination", async () => {
    const be = backend();
    T.scope(() => undefined);
    const frame = T.beginScope();
    try {
      const rng = seeded(9);
      const a = rng.tensor([5, 37], { backend: be });
      const b = rng.tensor([5, 37], { backend: be });
      const dst = rng.tensor([6, 37], { backend: be });
      const sum = T.add(a, b);
      T.copyInto(dst, sum, { dstOffset: 37 });
      const twice = T.mul(dst, T.scalar(2, { backend: be }));
      T.copyInto(dst, a, { count: 37 });
      const [va, vs, vt] = [await values(a), await values(sum), await values(twice)];
      const got = await values(dst);
      expect(Array.from(got.subarray(0, 37))).toEqual(Array.from(va.subarray(0, 37)));
      expect(Array.from(got.subarray(37))).toEqual(Array.from(vs));
      expect(Array.from(vt.subarray(37))).toEqual(Array.from(vs, (x) => Math.fround(2 * x)));
    } finally {
      T.endScope(frame);
    }
  });

  it("copyInto moves a sequence's state into a row of a batch state and back out", async () => {
    const be = backend();
    const frame = T.beginScope();
    try {
      const [N, H, D, E] = [5, 3, 24, 40];
      const row = H * D * E;
      const batch = seeded(31).tensor([N, H, D, E], { backend: be });
      const seq = seeded(32).tensor([1, H, D, E], { backend: be });
      const seqBytes = await bytesOf(seq);
      const before = await bytesOf(batch);
      T.copyInto(batch, seq, { dstOffset: 3 * row });
      const after = await bytesOf(batch);
      expectSameBytes(after.subarray(3 * row * 4, 4 * row * 4), seqBytes, "row 3");
      expectSameBytes(after.subarray(0, 3 * row * 4), before.subarray(0, 3 * row * 4), "rows 0..2");
      expectSameBytes(after.subarray(4 * row * 4), before.subarray(4 * row * 4), "row 4");
      const out = seeded(33).tensor([1, H, D, E], { backend: be });
      T.copyInto(out, batch, { srcOffset: 1 * row, count: row });
      expectSameBytes(await bytesOf(out), before.subarray(row * 4, 2 * row * 4), "row 1 copied out");
    } finally {
      T.endScope(frame);
    }
  });

  it("copyInto refuses bad arguments, naming them", () => {
    const be = backend();
    T.scope(() => {
      const x = seeded(1).tensor([4, 5], { backend: be });
      const y = seeded(2).tensor([3, 5], { backend: be });
      const h = seeded(3).tensor([3, 5], { dtype: "bf16", backend: be });
      expect(() => T.copyInto(x, h)).toThrow(/copyInto.*'src'.*a f32 tensor.*bf16\[3, 5\]/);
      expect(() => T.copyInto(y, x)).toThrow(/copyInto.*options\.count.*at most 20.*|copyInto.*options\.dstOffset/);
      expect(() => T.copyInto(x, y, { dstOffset: 6 })).toThrow(/copyInto.*options\.dstOffset.*at most 5.*6/);
      expect(() => T.copyInto(x, y, { srcOffset: 16 })).toThrow(/copyInto.*options\.srcOffset.*at most 15.*16/);
      expect(() => T.copyInto(x, y, { srcOffset: 4, count: 12 })).toThrow(/copyInto.*options\.count.*at most 11.*12/);
      expect(() => T.copyInto(x, y, { count: -1 })).toThrow(/copyInto.*options\.count.*a non-negative integer.*-1/);
      expect(() => T.copyInto(x, y, { dstOffset: 1.5 })).toThrow(/copyInto.*options\.dstOffset.*a non-negative integer.*1\.5/);
      expect(() => T.copyInto(x, x, { srcOffset: 0, dstOffset: 4, count: 5 })).toThrow(/copyInto.*'src'.*does not overlap.*\[0, 5\) over \[4, 9\)/);
      expect(() => T.copyInto(x, 3 as never)).toThrow(/copyInto.*'src'.*a Tensor.*number/);
      const gone = seeded(4).tensor([2], { backend: be });
      gone.dispose();
      expect(() => T.copyInto(gone, y)).toThrow(/copyInto.*'dst'.*a live tensor/);
      const cpu = T.createCpuBackend({ threads: 1 });
      const other = seeded(5).tensor([3, 5], { backend: cpu });
      expect(() => T.copyInto(x, other)).toThrow(/copyInto.*'src'.*a tensor on dst's backend/);
      other.dispose();
      cpu.dispose();
    });
  });
}

/**
 * copyIntoMany: one launch of several copies and zero fills, equal to the same copies done one by
 * one on the host bytes; ranges of several dtypes, odd offsets and counts, copies within one storage
 * and between storages, and more ranges than one CUDA launch holds.
 */
export function copyIntoManySuite(backend: () => Backend): void {
  const dtypes = (be: Backend) => (["f32", "bf16", "f16", "i32", "u8", "f64"] as const).filter((d) => be.capabilities.dtypes.includes(d));

  it("copyIntoMany with every dtype, zero fills and copies at odd offsets, within and between tensors", async () => {
    const be = backend();
    const frame = T.beginScope();
    try {
      const rng = seeded(61);
      const tensors = dtypes(be).flatMap((dtype, n) => [randomTensor(be, dtype, [7, 11], 300 + n), randomTensor(be, dtype, [5, 13], 400 + n)]);
      const host = await Promise.all(tensors.map(bytesOf));
      const copies: T.TensorCopy[] = [];
      for (let i = 0; i < tensors.length; i += 2) {
        const [a, b] = [tensors[i], tensors[i + 1]];
        const size = T.byteSize(a.dtype);
        // In a (77 elements): zeros at [3, 3 + z), a's [40, 40 + m) moved to [20, 20 + m), b's [1, 1 + k) into [60, 60 + k).
        const z = 1 + rng.int(15);
        const m = 1 + rng.int(19);
        const k = 1 + rng.int(16);
        copies.push({ dst: a, src: null, dstOffset: 3, count: z }, { dst: a, src: a, dstOffset: 20, srcOffset: 40, count: m }, { dst: a, src: b, dstOffset: 60, srcOffset: 1, count: k });
        // In b (65 elements): a's [41, 50) (read by the move in a too) at 50, zeros over [20, 49).
        copies.push({ dst: b, src: a, dstOffset: 50, srcOffset: 41, count: 9 }, { dst: b, src: null, dstOffset: 20, count: 29 });
        const [ha, hb] = [host[i].slice(), host[i + 1].slice()];
        ha.fill(0, 3 * size, (3 + z) * size);
        ha.set(host[i].subarray(40 * size, (40 + m) * size), 20 * size);
        ha.set(host[i + 1].subarray(size, (1 + k) * size), 60 * size);
        hb.set(host[i].subarray(41 * size, 50 * size), 50 * size);
        hb.fill(0, 20 * size, 49 * size);
        [host[i], host[i + 1]] = [ha, hb];
      }
      const handles = tensors.map((t) => t.handle);
      T.copyIntoMany(copies);
      for (const [i, t] of tensors.entries()) {
        expect(t.handle).toBe(handles[i]);
        expectSameBytes(await bytesOf(t), host[i], `${t.dtype} tensor ${i}`);
      }
    } finally {
      T.endScope(frame);
    }
  });

  it("copyIntoMany clears and moves one row of every layer of a batch state, many layers at once", async () => {
    const be = backend();
    const frame = T.beginScope();
    try {
      // More layers than one CUDA launch takes (64 ranges), rows of odd sizes, f32 states.
      const [N, H, D, E, L] = [5, 3, 17, 9, 71];
      const row = H * D * E;
      const layers = Array.from({ length: L }, (_, l) => seeded(500 + l).tensor([N, H, D, E], { backend: be }));
      const before = await Promise.all(layers.map(bytesOf));
      T.copyIntoMany(layers.map((t) => ({ dst: t, src: null, dstOffset: 3 * row, count: row })));
      T.copyIntoMany(layers.map((t) => ({ dst: t, src: t, dstOffset: 1 * row, srcOffset: 4 * row, count: row })));
      for (const [l, t] of layers.entries()) {
        const want = before[l].slice();
        want.fill(0, 3 * row * 4, 4 * row * 4);
        want.set(before[l].subarray(4 * row * 4, 5 * row * 4), row * 4);
        expectSameBytes(await bytesOf(t), want, `layer ${l}`);
      }
    } finally {
      T.endScope(frame);
    }
  });

  it("copyIntoMany is ordered after the ops before it and before the ops after it", async () => {
    const be = backend();
    const frame = T.beginScope();
    try {
      const rng = seeded(71);
      const a = rng.tensor([3, 29], { backend: be });
      const b = rng.tensor([3, 29], { backend: be });
      const dst = rng.tensor([4, 29], { backend: be });
      const sum = T.add(a, b);
      T.copyIntoMany([
        { dst, src: sum, dstOffset: 29 },
        { dst, src: null, dstOffset: 0, count: 29 },
      ]);
      const twice = T.mul(dst, T.scalar(2, { backend: be }));
      const [vs, vt, got] = [await values(sum), await values(twice), await values(dst)];
      expect(Array.from(got.subarray(0, 29))).toEqual(new Array(29).fill(0));
      expect(Array.from(got.subarray(29))).toEqual(Array.from(vs));
      expect(Array.from(vt.subarray(29))).toEqual(Array.from(vs, (x) => Math.fround(2 * x)));
    } finally {
      T.endScope(frame);
    }
  });

  it("copyIntoMany refuses bad arguments and ranges that meet, naming them", () => {
    const be = backend();
    T.scope(() => {
      const x = seeded(1).tensor([4, 5], { backend: be });
      const y = seeded(2).tensor([3, 5], { backend: be });
      const h = seeded(3).tensor([3, 5], { dtype: "bf16", backend: be });
      expect(() => T.copyIntoMany(x as never)).toThrow(/copyIntoMany.*'copies'.*an array/);
      expect(() => T.copyIntoMany([null as never])).toThrow(/copyIntoMany.*'copies\[0\]'.*an object/);
      expect(() => T.copyIntoMany([{ dst: x, src: y }, { dst: x, src: h }])).toThrow(/copyIntoMany.*'copies\[1\]\.src'.*a f32 tensor.*bf16\[3, 5\]/);
      expect(() => T.copyIntoMany([{ dst: x, src: null }])).toThrow(/copyIntoMany.*'copies\[0\]\.count'.*the elements to zero/);
      expect(() => T.copyIntoMany([{ dst: x, src: null, count: 3, srcOffset: 1 }])).toThrow(/copyIntoMany.*'copies\[0\]\.srcOffset'.*nothing where src is null/);
      expect(() => T.copyIntoMany([{ dst: x, src: null, dstOffset: 18, count: 3 }])).toThrow(/copyIntoMany.*'copies\[0\]\.dstOffset'.*at most 17.*18/);
      expect(() => T.copyIntoMany([{ dst: x, src: y, srcOffset: 4, count: 12 }])).toThrow(/copyIntoMany.*'copies\[0\]\.count'.*at most 11.*12/);
      expect(() => T.copyIntoMany([{ dst: x, src: x, srcOffset: 0, dstOffset: 4, count: 5 }])).toThrow(/copyIntoMany.*'copies\[0\]\.src'.*does not overlap/);
      // Two destinations that meet, and a destination over another copy's source.
      expect(() => T.copyIntoMany([{ dst: x, src: null, count: 5 }, { dst: x, src: y, dstOffset: 4, count: 2 }])).toThrow(/copyIntoMany.*'copies\[1\]\.dstOffset'.*apart from copies\[0\]'s destination/);
      expect(() => T.copyIntoMany([{ dst: y, src: x, count: 5 }, { dst: x, src: null, dstOffset: 4, count: 2 }])).toThrow(/copyIntoMany.*'copies\[1\]\.dstOffset'.*apart from copies\[0\]'s source/);
      const gone = seeded(4).tensor([2], { backend: be });
      gone.dispose();
      expect(() => T.copyIntoMany([{ dst: gone, src: null, count: 1 }])).toThrow(/copyIntoMany.*'copies\[0\]\.dst'.*a live tensor/);
      const cpu = T.createCpuBackend({ threads: 1 });
      const other = seeded(5).tensor([3, 5], { backend: cpu });
      expect(() => T.copyIntoMany([{ dst: y, src: null, count: 1 }, { dst: other, src: null, count: 1 }])).toThrow(/copyIntoMany.*'copies\[1\]\.dst'.*a tensor on copies\[0\]'s backend/);
      other.dispose();
      cpu.dispose();
      // Nothing was written by the refused calls, and an empty list is nothing to do.
      T.copyIntoMany([]);
    });
  });
}

/** leadingRows: a handle to the first rows, read by every read path and kernel at its own size. */
export function leadingRowsSuite(backend: () => Backend): void {
  it("leadingRows shares storage and its reference count, and reads only its rows", async () => {
    const be = backend();
    const live = T.liveTensorCount();
    const x = seeded(41).tensor([7, 3, 5], { backend: be });
    const all = await values(x);
    const view = T.leadingRows(x, 4);
    expect(view.shape).toEqual([4, 3, 5]);
    expect(view.handle).toBe(x.handle);
    x.dispose();
    // The storage lives while the view does.
    expect(Array.from(await values(view))).toEqual(Array.from(all.subarray(0, 60)));
    expect((await view.bytes()).byteLength).toBe(60 * 4);
    if (be.capabilities.syncRead) expect(Array.from(view.dataSync())).toEqual(Array.from(all.subarray(0, 60)));
    const none = T.leadingRows(view, 0);
    expect(none.shape).toEqual([0, 3, 5]);
    expect((await none.data()).length).toBe(0);
    none.dispose();
    view.dispose();
    expect(T.liveTensorCount()).toBe(live);
  });

  it("kernels read a leadingRows handle as the tensor of its rows, and write through it", async () => {
    const be = backend();
    for (const dtype of (["f32", "bf16"] as const).filter((d) => be.capabilities.dtypes.includes(d))) {
      const frame = T.beginScope();
      try {
        const x = seeded(51).tensor([9, 13], { dtype, backend: be });
        const w = seeded(52).tensor([13, 6], { dtype, backend: be });
        const view = T.leadingRows(x, 5);
        const copy = T.slice(x, [0, 0], [5, 13]);
        const pairs: [string, (t: Tensor) => Tensor][] = [
          ["add", (t) => T.add(t, t)],
          ["exp", (t) => T.exp(t)],
          ["sum", (t) => T.sum(t, 0)],
          ["max", (t) => T.max(t)],
          ["matmul", (t) => T.matmul(t, w)],
          ["softmax", (t) => T.softmax(t, -1)],
          ["transpose", (t) => T.transpose(t)],
          ["reshape", (t) => T.add(T.reshape(t, [13, 5]), T.scalar(1, { dtype, backend: be }))],
          ["cast", (t) => T.cast(t, "f32")],
          ["concat", (t) => T.concat([t, t], 0)],
        ];
        for (const [name, f] of pairs) {
          expectSameBytes(await bytesOf(f(view)), await bytesOf(f(copy)), `${dtype} ${name}`);
        }
        // A write through the view lands in x's first rows.
        const rows = seeded(53).tensor([2, 13], { dtype, backend: be });
        T.copyInto(T.leadingRows(x, 2), rows);
        expectSameBytes((await bytesOf(x)).subarray(0, 2 * 13 * T.byteSize(dtype)), await bytesOf(rows), `${dtype}: written through leadingRows`);
      } finally {
        T.endScope(frame);
      }
    }
  });

  it("leadingRows refuses a row count out of range and a scalar, naming the argument", () => {
    const be = backend();
    T.scope(() => {
      const x = seeded(61).tensor([4, 2], { backend: be });
      expect(() => T.leadingRows(x, 5)).toThrow(/leadingRows.*'n'.*an integer in \[0, 4\].*5/);
      expect(() => T.leadingRows(x, -1)).toThrow(/leadingRows.*'n'.*-1/);
      expect(() => T.leadingRows(x, 1.5)).toThrow(/leadingRows.*'n'.*1\.5/);
      expect(() => T.leadingRows(T.scalar(1, { backend: be }), 0)).toThrow(/leadingRows.*'x'.*rank 1 or more/);
    });
  });
}
