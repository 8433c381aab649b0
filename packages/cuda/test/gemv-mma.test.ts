/**
 * `fusedLinear` on the tensor-core kernel of native/gemv_mma.cu (5–64 rows of f16/bf16, where
 * LIGHTNING_CUDA_GEMV_MMA=1; off by default), at 5, 8, 17, 33 and 64 rows (every tile count of 8
 * tokens, full and partial) and at 65, above the range, where the op must run its fallback bit for
 * bit (the chain of ops; for a residual without a second weight, cuBLASLt with the residual as C). Shapes of the 436M TNL's decode step (1,024 → 4,096 normed: 128-row tiles in clusters of
 * 4; 1,024 → 2,816 twice with the product: clusters of 3; 2,816 → 1,024 with the residual and 1,024 →
 * 1,024 with norm·gate and residual: 64-row tiles in clusters of 8), a wide N (128-row tiles, no
 * cluster, a ring shorter than the k loop) and odd ones (N not a whole tile, K not a whole stage,
 * shares of k that differ by a stage, K with no whole 16-byte packs: the chain).
 *
 * The kernel applies SRMSNorm's factor r = 1/√(mean(x²) + eps) to its f32 sums (y = r·((x ⊙ gate)·wᵀ))
 * instead of rounding x·r (and then ·gate) to the dtype before the product as the chain does, so
 * normed products are not the chain's bits. They are checked twice against float64: (1) element by
 * element against `kernelReference` — the kernel's own arithmetic in float64 (x ⊙ gate rounded to
 * the dtype once, exact sums and factor) — within the forward error bound of f32 sums and one
 * rounding of the output; (2) as a whole against the exact float64 value of the op (no rounding
 * anywhere): the kernel's relative RMS error is at most the chain's (run on CUDA with the switch
 * off, and on the CPU) plus one unit roundoff of the dtype. The chain rounds the output once too and
 * rounds x·r (and ·gate) before it, so its error already holds everything the kernel's has but the
 * f32 sums' order; the one unit roundoff is slack for the sampling of two random errors, and larger
 * than any rounding the kernel could add (an error in r or a lost slice would exceed it by orders).
 * Products without a norm keep the chain's rounding points (one rounding of the f32 sum, the
 * residual in f32): there the float64 bound of packages/tensor/test/fused-linear-oracle.ts applies
 * as before. Every case also gives the same bits on a second run (a fixed order of sums).
 *
 * `qkvuProjection` on the same kernel with splitQkvu as its epilogue against fusedLinear then
 * splitQkvu, bit for bit (both on the kernel: the same plan and sums). BatchDecoder at 5–7 rows (the
 * fixture model: d 64, GLU 176): graph replays with the eager bits, logits within bf16 rounding of
 * the CPU's. Then a layer's four in a recorded CUDA graph, with programmatic dependent launch on and
 * off: the replay's bits are the eager run's. Skipped, with the reason printed, where the CUDA
 * backend cannot start; under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 *
 * Letters: x [R, K], w and w2 [N, K], gate [R, K], residual [R, N], y [R, N].
 */
import * as T from "@lightning-ts/tensor";
import { assertClose, closeness, describeBackends, seeded } from "@lightning-ts/testing";
import { FIXTURE_DIR } from "@lightning-ts/testing/tnl-fixture";
import { BatchDecoder, disposeParams, disposeState, loadCheckpoint, prefill, type TnlState } from "@lightning-ts/tnl";
import { afterEach, beforeEach, expect, it } from "vitest";
import { chain, EPS, expectWithin, type FusedInputs, makeInputs, optionsOf, reference, type Reference, VARIANTS, type Variant } from "../../tensor/test/fused-linear-oracle.js";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import "./setup.js";

const cpu = T.createCpuBackend();
type Half = "bf16" | "f16";
type Switch = "LIGHTNING_CUDA_GEMV_MMA" | "LIGHTNING_CUDA_PDL";

/** Sets environment variables the native side reads at each launch, for the calls of `fn`. */
function withEnv<R>(vars: Partial<Record<Switch, string>>, fn: () => R): R {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(before)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
const MMA = { LIGHTNING_CUDA_GEMV_MMA: "1" } as const;

const UNIT: Record<Half, number> = { bf16: 2 ** -8, f16: 2 ** -11 };
const F32 = 2 ** -24;
const rounding = T.createCpuBackend({ threads: 1 });

/** `values` rounded to `dtype` as a tensor of it stores them. */
function roundTo(values: Float64Array, dtype: T.DType): Float64Array {
  const t = T.tensor(values, [values.length], { dtype, backend: rounding });
  const r = Float64Array.from(t.dataSync());
  t.dispose();
  return r;
}

interface Operands {
  x: Float64Array;
  w: Float64Array;
  gate?: Float64Array;
  w2?: Float64Array;
  residual?: Float64Array;
  R: number;
  K: number;
  N: number;
}

async function operands(i: FusedInputs): Promise<Operands> {
  const read = async (t?: T.Tensor) => (t ? Float64Array.from(await t.data()) : undefined);
  const [x, w, gate, w2, residual] = await Promise.all([read(i.x), read(i.w), read(i.gate), read(i.w2), read(i.residual)]);
  const [R, K] = i.x.shape as [number, number];
  return { x: x!, w: w!, gate, w2, residual, R, K, N: i.w.shape[0] };
}

/** SRMSNorm's factor of each row of x, in float64. */
function factors(o: Operands): Float64Array {
  const r = new Float64Array(o.R);
  for (let m = 0; m < o.R; m++) {
    let ss = 0;
    for (let k = 0; k < o.K; k++) ss += o.x[m * o.K + k] ** 2;
    r[m] = 1 / Math.sqrt(ss / o.K + EPS);
  }
  return r;
}

/**
 * The normed op as the kernel computes it, in float64: q = x ⊙ gate rounded to the dtype once (x
 * without a gate), y = (r·q·wᵀ) ⊙ (r·q·w2ᵀ) + residual. The bound on |got − y| of each element: f32
 * sums in chains of at most K + 8 additions, (K + 8)·u₃₂·r·Σ|q·w| (for the product, of each factor
 * times the other); r from f32 partial sums of squares (positive terms: relative error at most
 * (K + 8)·u₃₂, once a factor); the f32 multiplies and residual add, 4·u₃₂·(|value| + |y|); one
 * rounding of the output, u·|y|.
 */
function kernelReference(o: Operands, dtype: Half): Reference {
  const { R, K, N } = o;
  const q = o.gate ? roundTo(o.x.map((v, j) => v * o.gate![j]), dtype) : o.x;
  const r = factors(o);
  const u = UNIT[dtype];
  const y = new Float64Array(R * N);
  const bound = new Float64Array(R * N);
  const dot = (wt: Float64Array, m: number, n: number) => {
    let s = 0;
    let abs = 0;
    for (let k = 0; k < K; k++) {
      const t = q[m * K + k] * wt[n * K + k];
      s += t;
      abs += Math.abs(t);
    }
    return { s: s * r[m], abs: abs * r[m] };
  };
  const chainLength = (K + 8) * F32;
  for (let m = 0; m < R; m++) {
    for (let n = 0; n < N; n++) {
      const a = dot(o.w, m, n);
      const b = o.w2 ? dot(o.w2, m, n) : { s: 1, abs: 0 };
      const value = a.s * b.s;
      const scale = o.w2 ? a.abs * Math.abs(b.s) + b.abs * Math.abs(a.s) : a.abs;
      const out = o.residual ? o.residual[m * N + n] + value : value;
      y[m * N + n] = out;
      bound[m * N + n] = chainLength * scale + chainLength * (o.w2 ? 2 : 1) * Math.abs(value) + 4 * F32 * (Math.abs(value) + Math.abs(out)) + u * Math.abs(out);
    }
  }
  return { y, bound };
}

/** The op's exact value in float64: no rounding of x·r, of the gate's product or of the output. */
function exact(o: Operands): Float64Array {
  const { R, K, N } = o;
  const r = factors(o);
  const y = new Float64Array(R * N);
  for (let m = 0; m < R; m++) {
    const p = new Float64Array(K);
    for (let k = 0; k < K; k++) p[k] = o.x[m * K + k] * r[m] * (o.gate ? o.gate[m * K + k] : 1);
    for (let n = 0; n < N; n++) {
      let a = 0;
      let b = 0;
      for (let k = 0; k < K; k++) {
        a += p[k] * o.w[n * K + k];
        if (o.w2) b += p[k] * o.w2[n * K + k];
      }
      y[m * N + n] = (o.residual ? o.residual[m * N + n] : 0) + (o.w2 ? a * b : a);
    }
  }
  return y;
}

/** Whether the tensor-core kernel takes the op: 5–64 rows of f16/bf16, K a whole number of 16-byte packs. */
function mmaApplies(R: number, K: number): boolean {
  return R >= 5 && R <= 64 && K % 8 === 0;
}

async function expectSameBits(got: T.Tensor, want: T.Tensor, label: string): Promise<void> {
  expect([got.dtype, got.shape], label).toEqual([want.dtype, want.shape]);
  const [a, b] = [await got.bytes(), await want.bytes()];
  expect(a.findIndex((x, j) => x !== b[j]), `${label}: first differing byte`).toBe(-1);
}

async function onCpu(i: FusedInputs): Promise<FusedInputs> {
  const copy = async (t?: T.Tensor) => (t ? T.tensor(await t.data(), t.shape, { dtype: t.dtype, backend: cpu }) : undefined);
  const [x, w, gate, w2, residual] = await Promise.all([copy(i.x), copy(i.w), copy(i.gate), copy(i.w2), copy(i.residual)]);
  return { x: x!, w: w!, gate, w2, residual };
}

await describeBackends("fusedLinear on tensor cores (native/gemv_mma.cu, LIGHTNING_CUDA_GEMV_MMA=1)", (backend) => {
  const gpu = () => backend() as CudaBackend;
  const rng = seeded(7411);
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });

  /** What one case measured: whether it differs from the switch-off run, and for a normed product in the kernel's range the relative RMS errors against exact float64. */
  interface Outcome {
    differs: boolean;
    errors?: { kernel: number; chain: number };
  }

  /**
   * One case with the switch on: a normed product in the kernel's range against the kernel's
   * arithmetic in float64 element by element and against the exact value as accurately as the
   * chain (on CUDA, and with `withCpu` on the CPU: the host's float64 sums and its chain take
   * seconds at the model's shapes); any other within the float64 bound of the chain's rounding
   * points (and within the CPU decomposition's); the same bits on a second run (a fixed order of
   * sums); where the kernel does not apply, the bits of the chain on CUDA.
   */
  async function check(R: number, N: number, K: number, v: Variant, dtype: Half, withCpu: boolean): Promise<Outcome> {
    const frame = T.beginScope();
    try {
      const label = `R ${R}, [N, K] [${N}, ${K}], ${v.name}, ${dtype}`;
      const i = makeInputs(rng, R, K, N, v, dtype, gpu());
      const [y, again] = withEnv(MMA, () => [T.fusedLinear(i.x, i.w, optionsOf(i, v)), T.fusedLinear(i.x, i.w, optionsOf(i, v))]);
      const off = withEnv({ LIGHTNING_CUDA_GEMV_MMA: "0" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, v)));
      expect([y.dtype, y.shape], label).toEqual([dtype, [R, N]]);
      const fused = mmaApplies(R, K);
      const got = Float64Array.from(await y.data());
      let errors: Outcome["errors"];
      if (fused && v.norm) {
        const o = await operands(i);
        expectWithin(got, kernelReference(o, dtype), `${label}: vs the kernel's arithmetic in float64`);
        const want = exact(o);
        errors = { kernel: closeness(got, want).relRms, chain: closeness(await off.data(), want).relRms };
        expect(errors.kernel, `${label}: relative RMS error vs exact float64, the chain's on CUDA ${errors.chain} + u`).toBeLessThanOrEqual(errors.chain + UNIT[dtype]);
        if (withCpu) {
          const host = await onCpu(i);
          const cpuError = closeness(await T.fusedLinear(host.x, host.w, optionsOf(host, v)).data(), want).relRms;
          expect(errors.kernel, `${label}: relative RMS error vs exact float64, the CPU chain's ${cpuError} + u`).toBeLessThanOrEqual(cpuError + UNIT[dtype]);
        }
      } else {
        const gpuRef = await reference(i, v, fused ? "fused" : "chain");
        expectWithin(got, gpuRef, `${label}: vs float64`);
        if (withCpu) {
          const host = await onCpu(i);
          const hostY = T.fusedLinear(host.x, host.w, optionsOf(host, v));
          const hostRef = await reference(host, v, "chain");
          expectWithin(got, { y: Float64Array.from(await hostY.data()), bound: hostRef.bound.map((b, j) => b + gpuRef.bound[j]) }, `${label}: vs the CPU`);
        }
      }
      await expectSameBits(again, y, `${label}: a second run`);
      // Outside the kernel's range the op takes its fallback, as with the switch off: the chain on
      // CUDA, or at 5–256 rows of a residual without a second weight cuBLASLt with the residual as C.
      if (!fused) await expectSameBits(y, off, `${label}: outside the kernel's range, the bits of the switch at 0`);
      if (!fused && !(v.residual && !v.product && R <= 256)) await expectSameBits(y, chain(i, v), `${label}: outside the kernel's range, the chain on CUDA`);
      const [a, b] = [await y.bytes(), await off.bytes()];
      return { differs: a.some((x, j) => x !== b[j]), errors };
    } finally {
      T.endScope(frame);
    }
  }

  /** One line naming the kernel and the worst errors of normed products, so that a run's log shows the kernel ran. */
  function report(what: string, outcomes: Outcome[]): void {
    const measured = outcomes.flatMap((o) => (o.errors ? [o.errors] : []));
    const worst = (key: "kernel" | "chain") => Math.max(...measured.map((e) => e[key])).toExponential(2);
    console.log(
      `native/gemv_mma.cu (LIGHTNING_CUDA_GEMV_MMA=1), ${what}: ${outcomes.length} cases, ${outcomes.filter((o) => o.differs).length} with other bits than the chain; ` +
        `normed products, worst relative RMS error vs exact float64: kernel ${worst("kernel")}, chain ${worst("chain")}`,
    );
  }

  // Every count of 8-token tiles, full and partial, and one row above the range.
  const ROWS = [5, 8, 17, 33, 64, 65];
  const MODEL_ROWS: Record<Half, number[]> = { bf16: ROWS, f16: [5, 17, 64, 65] };
  // [N, K, variant]: the decode step's four matmuls at their shapes and parts.
  const MODEL: [number, number, Variant][] = [
    [4096, 1024, VARIANTS[1]],
    [2816, 1024, VARIANTS[4]],
    [1024, 2816, VARIANTS[3]],
    [1024, 1024, VARIANTS[5]],
  ];
  // [N, K]: N not a whole tile with K shorter than a stage; a tile of 37 rows with k split over a
  // cluster of 8 in shares of one and two stages; a lone row; K of one pack; K > 4,096 in shares of
  // six and seven stages; K with no whole packs (the chain); N and K odd multiples of 8.
  const ODD: [number, number][] = [[1031, 40], [37, 1032], [1, 264], [45, 8], [19, 6152], [45, 1031], [1032, 776]];
  for (const dtype of ["bf16", "f16"] as const) {
    it(`the 436M decode step's four at ${MODEL_ROWS[dtype].join(", ")} rows (${dtype})`, async () => {
      const outcomes: Outcome[] = [];
      for (const R of MODEL_ROWS[dtype]) for (const [N, K, v] of MODEL) outcomes.push(await check(R, N, K, v, dtype, false));
      report(`the 436M decode step (${dtype})`, outcomes);
      // The switch must choose the kernel: its sums and one rounding give other bits than the chain somewhere.
      expect(outcomes.some((o) => o.differs), "some output differs from LIGHTNING_CUDA_GEMV_MMA=0's").toBe(true);
    }, 600_000);
    // Each variant and odd shape at one row count, the counts taken in turn: every pair of the
    // three lists meets.
    it(`every part on and off, odd sizes, 5–65 rows (${dtype})`, async () => {
      const outcomes: Outcome[] = [];
      for (const [vi, v] of VARIANTS.entries())
        for (const [si, [N, K]] of ODD.entries()) outcomes.push(await check(ROWS[(vi + si) % ROWS.length], N, K, v, dtype, true));
      report(`odd sizes (${dtype})`, outcomes);
    }, 600_000);
  }

  // 16,008 rows of 1,032: 126 tiles of 128 rows (63 of 64 outputs with the product) fill the SMs
  // without a cluster, so each block runs all 17 stages of k through a ring shorter than that (the
  // vocabulary head's case), N an odd multiple of 8.
  it("a wide N without a cluster: the ring wraps, the norm (head) and norm with product (bf16 at 9 and 64 rows, f16 at 33)", async () => {
    const outcomes: Outcome[] = [];
    for (const [R, dtype] of [[9, "bf16"], [64, "bf16"], [33, "f16"]] as const)
      for (const v of [VARIANTS[1], VARIANTS[4], VARIANTS[7]]) outcomes.push(await check(R, 16008, 1032, v, dtype, false));
    report("a wide N", outcomes);
  }, 600_000);

  for (const dtype of ["bf16", "f16"] as const) {
    it(`qkvuProjection: the kernel with splitQkvu as its epilogue gives fusedLinear then splitQkvu bit for bit, 5–65 rows (${dtype})`, async () => {
      // [K, H, hd]: the 436M's (K 1,024, 8 heads of 128: N 4,096) and odd ones; every activation
      // with and without LRPE, the row counts taken in turn.
      const shapes: [number, number, number][] = [[1024, 8, 128], [40, 3, 5], [1032, 2, 7], [1031, 2, 7]];
      let turn = 0;
      for (const [K, H, hd] of shapes)
        for (const withLrpe of [false, true])
          for (const activation of K === 1024 ? (["silu"] as const) : T.QKV_ACTIVATIONS) {
            const B = ROWS[turn++ % ROWS.length];
            const frame = T.beginScope();
            try {
              const x = rng.tensor([B, K], { dtype, std: 2, backend: gpu() });
              const w = rng.tensor([4 * H * hd, K], { dtype, std: 1 / Math.sqrt(K), backend: gpu() });
              const rope = withLrpe
                ? {
                    theta: T.tensor(Array.from({ length: H * hd }, () => 10000 ** -rng.next()), [H, hd], { backend: gpu() }),
                    positions: T.tensor(Array.from({ length: B }, () => rng.int(5000)), [B], { backend: gpu() }),
                  }
                : {};
              const [got, want] = withEnv(MMA, () => [
                T.qkvuProjection(x, w, { heads: H, activation, ...rope }),
                T.splitQkvu(T.fusedLinear(x, w, { norm: {} }), { heads: H, activation, ...rope }),
              ]);
              for (const key of ["q", "k", "v", "u"] as const)
                await expectSameBits(got[key], want[key], `${key}: B ${B}, K ${K}, H ${H}, hd ${hd}, ${activation}, ${withLrpe ? "LRPE" : "no LRPE"}, ${dtype}`);
            } finally {
              T.endScope(frame);
            }
          }
    }, 300_000);
  }

  it("off by default (the bits of the switch at 0; in f32 the chain's); f32 and 65 rows stay off the kernel; other values are refused", async () => {
    for (const [R, dtype] of [[8, "bf16"], [64, "f16"], [8, "f32"], [65, "bf16"]] as const) {
      const v = VARIANTS[5];
      const i = makeInputs(rng, R, 1024, 1024, v, dtype, gpu());
      // Off, a 16-bit residual at these rows is cuBLASLt's C operand (test/fused-linear.test.ts checks it against float64).
      const want = withEnv({ LIGHTNING_CUDA_GEMV_MMA: "0" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, v)));
      if (dtype === "f32") await expectSameBits(want, chain(i, v), `R ${R} ${dtype}, 0: the chain's bits`);
      await expectSameBits(withEnv({ LIGHTNING_CUDA_GEMV_MMA: "" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, v))), want, `R ${R} ${dtype}, unset`);
      if (dtype === "f32" || R > 64) await expectSameBits(withEnv(MMA, () => T.fusedLinear(i.x, i.w, optionsOf(i, v))), want, `R ${R} ${dtype}, 1`);
    }
    const i = makeInputs(rng, 8, 64, 40, VARIANTS[1], "bf16", gpu());
    expect(() => withEnv({ LIGHTNING_CUDA_GEMV_MMA: "yes" }, () => T.fusedLinear(i.x, i.w, optionsOf(i, VARIANTS[1])))).toThrow(
      /LIGHTNING_CUDA_GEMV_MMA: expected 0 or 1, got 'yes'/,
    );
  });

  it("BatchDecoder at 5–7 rows: graph replays give the eager bits, the CPU's logits within bf16 rounding", async () => {
    const floats = async (t: T.Tensor) => Float64Array.from(await t.data());
    const model = await loadCheckpoint(FIXTURE_DIR, { dtype: "bf16", backend: gpu() });
    const host = await loadCheckpoint(FIXTURE_DIR, { dtype: "bf16", backend: cpu });
    const V = model.config.vocabSize;
    /** `fn` with the CPU as the default backend (the token ids a step makes go there). */
    const onCpu = <R>(fn: () => R): R => {
      const was = T.getBackend();
      T.setBackend(cpu);
      try {
        return fn();
      } finally {
        T.setBackend(was);
      }
    };
    const prompts = [[5, 9, 14], [2], [7, 7, 30, 41], [3, 11], [99, 100, 4], [8], [12, 13, 1]];
    const prefilled = (p: number[], params: typeof model.params): TnlState => {
      const r = prefill(params, model.config, [p], { logits: "last" });
      r.logits.dispose();
      return r.state;
    };
    const defaultBackend = T.getBackend();
    T.setBackend(gpu());
    const withGraphs = new BatchDecoder(model.params, model.config, { capacity: 8 });
    const eager = new BatchDecoder(model.params, model.config, { capacity: 8, graphs: false });
    // One CPU decoder a row, so that each row's reference is the plain batch-1 step.
    const hosts = prompts.map(() => onCpu(() => new BatchDecoder(host.params, host.config, { capacity: 1, graphs: false })));
    const refs = prompts.map((p) => prefilled(p, model.params));
    for (const [r, s] of refs.entries()) {
      withGraphs.add(s);
      eager.add(s);
      onCpu(() => {
        const state = prefilled(prompts[r], host.params);
        hosts[r].add(state);
        disposeState(state);
      });
    }
    for (let k = 0; k < 4; k++) {
      if (k === 2) {
        // 7 rows → 6: the rows move, the bucket stays.
        withGraphs.remove(0);
        eager.remove(0);
        hosts.splice(0, 1, hosts.pop()!)[0].dispose();
      }
      const tokens = hosts.map((_, r) => (17 * k + 5 * r + 1) % V);
      const [a, b] = withEnv(MMA, () => [withGraphs.step(tokens), eager.step(tokens)]);
      const la = await floats(a.logits);
      expect(Array.from(la), `step ${k}: graph vs eager`).toEqual(Array.from(await floats(b.logits)));
      for (const [r, h] of hosts.entries()) {
        const want = await floats(onCpu(() => h.step([tokens[r]])).logits);
        const big = Math.max(...Array.from(want, Math.abs));
        assertClose(la.subarray(r * V, (r + 1) * V), want, { atol: 0.05 * big, rtol: 4e-2, label: `step ${k} row ${r} vs the CPU` });
      }
    }
    refs.forEach(disposeState);
    hosts.forEach((h) => h.dispose());
    withGraphs.dispose();
    eager.dispose();
    disposeParams(model.params);
    disposeParams(host.params);
    T.setBackend(defaultBackend);
  }, 120_000);

  for (const R of [8, 64]) {
    it(`a layer's four in a recorded graph, with and without PDL: replays read the inputs written before them, the eager bits (bf16, ${R} rows)`, async () => {
      const [M, F, hid] = [1024, 2816, 1024];
      const dtype = "bf16";
      const t = (shape: number[], std = 1) => rng.tensor(shape, { dtype, std, backend: gpu() });
      const [o, u, h] = [t([R, hid]), t([R, hid]), t([R, M], 2)];
      const [wOut, w1, w2, w3, wq] = [t([M, hid], 0.03), t([F, M], 0.03), t([F, M], 0.03), t([M, F], 0.02), t([4 * hid, M], 0.03)];
      const theta = T.tensor(Array.from({ length: hid }, () => 10000 ** -rng.next()), [8, 128], { backend: gpu() });
      const positions = T.tensor(Array.from({ length: R }, () => rng.int(5000)), [R], { backend: gpu() });
      // out (norm·gate, residual) → l1·l2 (norm, product) → l3 (residual) → the next layer's
      // projection with its split: each reads what the one before wrote, so a missing wait would
      // read stale values.
      const run = () =>
        T.scope(() => {
          const h1 = T.fusedLinear(o, wOut, { norm: { gate: u }, residual: h });
          const g = T.fusedLinear(h1, w1, { norm: {}, second: w2 });
          const h2 = T.fusedLinear(g, w3, { residual: h1 });
          const next = T.qkvuProjection(h2, wq, { heads: 8, theta, positions });
          return [h1, g, h2, next.q, next.k, next.v, next.u];
        });
      for (const pdl of ["1", "0"]) {
        withEnv({ ...MMA, LIGHTNING_CUDA_PDL: pdl }, () => T.scope(() => void run())); // warm-up outside the recording
        const graph = withEnv({ ...MMA, LIGHTNING_CUDA_PDL: pdl }, () => gpu().captureGraph(run));
        for (let round = 0; round < 3; round++) {
          for (const input of [o, u, h]) {
            const fresh = T.tensor(rng.array(input.size).map((x) => x || 0.5), input.shape, { dtype, backend: cpu });
            gpu().write(input.handle.storage as CudaStorage, await fresh.bytes());
            fresh.dispose();
          }
          graph.replay();
          const eager = withEnv({ ...MMA, LIGHTNING_CUDA_PDL: pdl === "1" ? "0" : "1" }, run);
          for (const [k, r] of graph.result.entries()) await expectSameBits(r, eager[k], `PDL ${pdl}, replay ${round}, output ${k} vs eager with PDL ${pdl === "1" ? "0" : "1"}`);
          const ref = kernelReference(await operands({ x: o, w: wOut, gate: u, residual: h }), dtype);
          expectWithin(Float64Array.from(await graph.result[0].data()), ref, `PDL ${pdl}, replay ${round}: h1 vs the kernel's arithmetic in float64`);
        }
        graph.dispose();
      }
    }, 300_000);
  }
});
