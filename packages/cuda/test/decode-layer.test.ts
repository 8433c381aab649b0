/**
 * `decodeLayer` on CUDA: the persistent kernel of native/decode_layer.cu (1–4 rows of f16/bf16,
 * the layer's weights in the SMs' shared memory, or streamed from global memory through L2 with the
 * next layer prefetching beside it) against the five ops of its chain run explicitly
 * on CUDA (qkvuProjection, lightningStep, three fusedLinear: the kernels a layer ran before) and
 * against a float64 run of that chain on the host. Bits equal to the chain are not asked (the
 * kernel sums in another order); its relative RMS error against float64 must be at most the
 * chain's own plus one rounding of an intermediate to the dtype. Odd sizes (M = 200, G = 344,
 * H = 3, hd = 64), the 436M layer (1,024, 2,816, 8 × 128) and, streamed, G = 4,096 at the 436M
 * widths, B = 1…4, bf16 and f16, with and without LRPE, in place and not. Every case runs in both
 * modes (LIGHTNING_CUDA_DECODE_LAYER=resident, or =1 where the shares do not fit, and
 * =stream), which must give the same bits: their sums are the same, in the same order; the streamed
 * runs go through the switches of its trigger point, barrier and prefetch in turn, none of which may
 * change a bit. Then, in both modes: many calls in a row
 * (the grid barrier resets itself), a recorded CUDA graph (replays give the eager bits), a
 * BatchDecoder with graphs on a model of the 436M layer shape (logits with the kernel against the
 * same decoder without it, both against an f32 run of the same weights), and the calls the launcher
 * declines (5 rows, f32, a block's staged rows over its shared memory), which give the chain's
 * bits; a bad value of a switch, which fails the call naming it; and the op's shared suite of
 * packages/tensor at its tiny sizes. Each case prints the mode it ran; with LIGHTNING_CUDA_DEBUG=1
 * the native side prints each launch's path too. Whether the kernel ran
 * is seen in the kernel table: where it declines, src/kernels.ts runs the chain through the
 * table's own entries. Skipped, with the reason printed, where the CUDA backend cannot start;
 * under LIGHTNING_CUDA_REQUIRED=1 that is a failure.
 *
 * Letters: B rows, H heads, hd head dim, hid = H·hd, M width, G SGLU width, D q/k head dim (hd, or
 * 2·hd with LRPE).
 */
import * as T from "@lightning-ts/tensor";
import { closeness, describeBackends, seeded } from "@lightning-ts/testing";
import { BatchDecoder, disposeParams, disposeState, initParams, makeConfig, mapParams, prefill, type TnlState } from "@lightning-ts/tnl";
import { afterEach, beforeEach, expect, it } from "vitest";
import { decodeLayerSuite } from "../../tensor/test/decode-layer-suite.js";
import { LAUNCHERS } from "../src/codes.js";
import type { CudaBackend, CudaStorage } from "../src/index.js";
import "./setup.js";

const cpu = T.createCpuBackend();
const EPS = 1e-6;
type Float = "bf16" | "f16" | "f32";
type Rng = ReturnType<typeof seeded>;

interface Shape {
  M: number;
  G: number;
  H: number;
  hd: number;
}
const SMALL: Shape = { M: 200, G: 344, H: 3, hd: 64 };
const TNL_436M: Shape = { M: 1024, G: 2816, H: 8, hd: 128 };
// (4·1,024 + 1,024 + 3·4,096)·1,024 bf16 weights over 132 SMs: 280 KB a block, over the 227 KB a
// block may take, so the kernel streams them (fewer SMs only make the share larger).
const STREAMED: Shape = { M: 1024, G: 4096, H: 8, hd: 128 };
const ACTIVATIONS = ["silu", "relu", "1+elu", "none"] as const;

type Switch =
  | "LIGHTNING_CUDA_DECODE_LAYER"
  | "LIGHTNING_CUDA_DECODE_LAYER_TRIGGER"
  | "LIGHTNING_CUDA_DECODE_LAYER_BARRIER"
  | "LIGHTNING_CUDA_DECODE_LAYER_PREFETCH"
  | "LIGHTNING_CUDA_DECODE_LAYER_PREFETCH_MB"
  | "LIGHTNING_CUDA_FOLD_NORM"
  | "LIGHTNING_CUDA_PRODUCT_PAIR";
type Env = Partial<Record<Switch, string>>;

/** Sets environment variables the native side reads at each call until `restore` is called. */
function setEnv(vars: Env): () => void {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return () => {
    for (const [k, v] of Object.entries(before)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}
function withEnv<R>(vars: Env, fn: () => R): R {
  const restore = setEnv(vars);
  try {
    return fn();
  } finally {
    restore();
  }
}
async function withEnvAsync<R>(vars: Env, fn: () => Promise<R>): Promise<R> {
  const restore = setEnv(vars);
  try {
    return await fn();
  } finally {
    restore();
  }
}

const RESIDENT: Env = { LIGHTNING_CUDA_DECODE_LAYER: "resident" };
const STREAM: Env = { LIGHTNING_CUDA_DECODE_LAYER: "stream" };
/** The streamed mode's switches, taken in turn: none may change a bit. */
const STREAM_VARIANTS: Env[] = [
  {},
  { LIGHTNING_CUDA_DECODE_LAYER_BARRIER: "red" },
  { LIGHTNING_CUDA_DECODE_LAYER_TRIGGER: "wait", LIGHTNING_CUDA_DECODE_LAYER_PREFETCH: "lines" },
  { LIGHTNING_CUDA_DECODE_LAYER_TRIGGER: "end", LIGHTNING_CUDA_DECODE_LAYER_BARRIER: "red", LIGHTNING_CUDA_DECODE_LAYER_PREFETCH: "none" },
  { LIGHTNING_CUDA_DECODE_LAYER_PREFETCH_MB: "5", LIGHTNING_CUDA_DECODE_LAYER_BARRIER: "atomic" },
];
/** The resident mode's: its trigger at entry too (nothing of the next kernel fits beside it, which is only slower). */
const RESIDENT_VARIANTS: Env[] = [{}, { LIGHTNING_CUDA_DECODE_LAYER_BARRIER: "red" }, { LIGHTNING_CUDA_DECODE_LAYER_TRIGGER: "entry" }];
const envText = (e: Env) =>
  Object.entries(e)
    .map(([k, v]) => `${k.replace("LIGHTNING_CUDA_DECODE_LAYER", "") || "mode"}=${v}`)
    .join(" ");

/**
 * The margin over the chain's error: the unit roundoff of the dtype. The kernel stores the same
 * intermediates as the chain (q, k, v, u, o, h1, g and the normed rows, each rounded to the dtype
 * once); its sums run in another order, so an element of one of them may round to the neighbour
 * of the chain's value. One rounding moves an element by at most u relative to it, so it moves the
 * relative RMS error by at most u; both paths are near that level themselves (checked below).
 */
const UNIT: Record<"bf16" | "f16", number> = { bf16: 2 ** -8, f16: 2 ** -11 };

interface Case {
  shape: Shape;
  B: number;
  lrpe: boolean;
  activation: (typeof ACTIVATIONS)[number];
}

interface Inputs {
  h: T.Tensor;
  slopes: T.Tensor;
  theta?: T.Tensor;
  positions?: T.Tensor;
  /** The state as host values, so that each run gets a tensor of its own. */
  state: Float64Array;
  stateShape: number[];
}

/** Weights of std 1/√(fan-in), as a trained layer's are in scale. */
function makeWeights(rng: Rng, s: Shape, dtype: Float, be: T.Backend): T.DecodeLayerWeights {
  const hid = s.H * s.hd;
  const w = (rows: number, cols: number) => rng.tensor([rows, cols], { std: 1 / Math.sqrt(cols), dtype, backend: be });
  return { qkvu: w(4 * hid, s.M), out: w(s.M, hid), l1: w(s.G, s.M), l2: w(s.G, s.M), l3: w(s.M, s.G) };
}

function makeInputs(rng: Rng, c: Case, dtype: Float, be: T.Backend): Inputs {
  const { H, hd, M } = c.shape;
  const D = c.lrpe ? 2 * hd : hd;
  return {
    h: rng.tensor([c.B, M], { dtype, backend: be }),
    slopes: T.tensor(T.tnlSlopes(H, rng.int(24), 24), [H], { backend: be }),
    // θ in multiples of 2⁻¹⁰ (none zero) and positions below 512: θp is exact in f32, so the phases
    // the GPU computes in f32 are those of the float64 reference.
    theta: c.lrpe ? T.tensor(Array.from({ length: H * hd }, () => Math.max(1, Math.round(1024 * 10000 ** -rng.next())) / 1024), [H, hd], { backend: be }) : undefined,
    positions: c.lrpe ? T.tensor(Array.from({ length: c.B }, () => 1 + rng.int(500)), [c.B], { backend: be }) : undefined,
    state: rng.array(c.B * H * D * hd, 0.5),
    stateShape: [c.B, H, D, hd],
  };
}

const stateOf = (x: Inputs, be: T.Backend, dtype: "f32" | "f64" = "f32") => T.tensor(x.state, x.stateShape, { dtype, backend: be });
const optionsOf = (x: Inputs, c: Case) => ({ heads: c.shape.H, activation: c.activation, eps: EPS, ...(c.lrpe ? { theta: x.theta, positions: x.positions } : {}) });

/** The layer as five ops (packages/tnl's decode step before the op), on the inputs' backend. */
function chain(x: Inputs, w: T.DecodeLayerWeights, c: Case, state: T.Tensor, inPlace: boolean): { h: T.Tensor; state: T.Tensor } {
  const { q, k, v, u } = T.qkvuProjection(x.h, w.qkvu, optionsOf(x, c));
  const r = T.lightningStep(q, k, v, x.slopes, state, { inPlace });
  const h1 = T.fusedLinear(T.reshape(r.output, [c.B, c.shape.H * c.shape.hd]), w.out, { norm: { eps: EPS, gate: u }, residual: x.h });
  const g = T.fusedLinear(h1, w.l1, { norm: { eps: EPS }, second: w.l2 });
  return { h: T.fusedLinear(g, w.l3, { residual: h1 }), state: r.state };
}

const f64 = async (t: T.Tensor) => T.tensor(Float64Array.from(await t.data()), t.shape, { dtype: "f64", backend: cpu });

async function weights64(w: T.DecodeLayerWeights): Promise<T.DecodeLayerWeights> {
  return { qkvu: await f64(w.qkvu), out: await f64(w.out), l1: await f64(w.l1), l2: await f64(w.l2), l3: await f64(w.l3) };
}

/** The chain in float64 on the host, from the values the inputs hold. */
async function float64Layer(x: Inputs, w64: T.DecodeLayerWeights, c: Case): Promise<{ h: Float64Array; state: Float64Array }> {
  const y: Inputs = {
    ...x,
    h: await f64(x.h),
    slopes: T.tensor(await x.slopes.data(), [c.shape.H], { backend: cpu }),
    theta: x.theta && (await f64(x.theta)),
    positions: x.positions && (await f64(x.positions)),
  };
  const r = chain(y, w64, c, stateOf(x, cpu, "f64"), false);
  return { h: Float64Array.from(await r.h.data()), state: Float64Array.from(await r.state.data()) };
}

/** `fn`'s result and how many times the chain ran inside it (src/kernels.ts runs it through the table). */
function countingChain<R>(be: T.Backend, fn: () => R): [R, number] {
  const kernels = be.kernels as unknown as Record<string, (args: unknown) => void>;
  const original = kernels.qkvuProjection;
  let calls = 0;
  kernels.qkvuProjection = (args) => {
    calls++;
    original(args);
  };
  try {
    return [fn(), calls];
  } finally {
    kernels.qkvuProjection = original;
  }
}

async function expectSameBits(got: T.Tensor, want: T.Tensor, label: string): Promise<void> {
  expect([got.dtype, got.shape], label).toEqual([want.dtype, want.shape]);
  const [a, b] = [await got.bytes(), await want.bytes()];
  expect(a.findIndex((v, j) => v !== b[j]), `${label}: first differing byte (of ${a.byteLength})`).toBe(-1);
}

await describeBackends("decodeLayer: one persistent kernel for a TNL decode layer", (backend) => {
  const gpu = () => backend() as CudaBackend;
  let before = new Set<T.Tensor>();
  beforeEach(() => {
    before = new Set(T.liveTensors());
  });
  afterEach(() => {
    for (const t of T.liveTensors()) if (!before.has(t)) t.dispose();
  });

  // The op's shared suite (tiny odd shapes, every activation, h placed by runOp's into): f32 runs
  // the chain, bf16 the kernel, so not bit for bit but within its float64 bound.
  decodeLayerSuite(backend, { exact: false });

  for (const [name, shape] of [["M 200, G 344, H 3, hd 64", SMALL], ["the 436M layer", TNL_436M], ["G 4,096, streamed", STREAMED]] as const) {
    for (const dtype of ["bf16", "f16"] as const) {
      it(`against the chain and float64, B 1–4, LRPE or not, in place or not, resident and streamed with the same bits (${name}, ${dtype})`, async () => {
        const rng = seeded(shape.M * 7 + (dtype === "bf16" ? 1 : 2));
        const w = makeWeights(rng, shape, dtype, gpu());
        const w64 = await weights64(w);
        const u = UNIT[dtype];
        // Where a block's shares do not fit its shared memory, resident mode declines: =1 (which
        // streams them) is the first run then.
        const fits = shape !== STREAMED;
        let n = 0;
        for (const B of [1, 2, 3, 4]) {
          for (const lrpe of [false, true]) {
            for (const inPlace of [false, true]) {
              const c: Case = { shape, B, lrpe, activation: ACTIVATIONS[n % ACTIVATIONS.length] };
              const first: Env = fits ? { ...RESIDENT, ...RESIDENT_VARIANTS[n % RESIDENT_VARIANTS.length] } : { LIGHTNING_CUDA_DECODE_LAYER: "1" };
              const second: Env = { ...STREAM, ...STREAM_VARIANTS[n % STREAM_VARIANTS.length] };
              n++;
              const label = `${name} ${dtype} B ${B} ${c.activation}${lrpe ? " LRPE" : ""}${inPlace ? " in place" : ""}`;
              const frame = T.beginScope();
              try {
                const x = makeInputs(rng, c, dtype, gpu());
                const state = stateOf(x, gpu());
                const [got, calls] = withEnv(first, () => countingChain(gpu(), () => T.decodeLayer(x.h, w, state, x.slopes, { ...optionsOf(x, c), inPlace })));
                expect(calls, `${label}, ${envText(first)}: the persistent kernel ran (the chain did not)`).toBe(0);
                if (inPlace) expect(got.state.handle, `${label}: the state's storage`).toBe(state.handle);
                else expect(Array.from(await state.data()), `${label}: the input state is left alone`).toEqual(Array.from(Float32Array.from(x.state)));
                const streamState = stateOf(x, gpu());
                const [streamed, streamCalls] = withEnv(second, () =>
                  countingChain(gpu(), () => T.decodeLayer(x.h, w, streamState, x.slopes, { ...optionsOf(x, c), inPlace })),
                );
                expect(streamCalls, `${label}, ${envText(second)}: the streamed kernel ran (the chain did not)`).toBe(0);
                await expectSameBits(streamed.h, got.h, `${label}: h2, ${envText(second)} vs ${envText(first)}`);
                await expectSameBits(streamed.state, got.state, `${label}: state, ${envText(second)} vs ${envText(first)}`);
                const want = chain(x, w, c, stateOf(x, gpu()), inPlace);
                const ref = await float64Layer(x, w64, c);
                const [kh, ks] = [closeness(await got.h.data(), ref.h).relRms, closeness(await got.state.data(), ref.state).relRms];
                const [ch, cs] = [closeness(await want.h.data(), ref.h).relRms, closeness(await want.state.data(), ref.state).relRms];
                console.log(
                  `${label} [ran ${envText(first)}, then ${envText(second)}: same bits]: relative RMS vs float64, h2 ${kh.toExponential(2)} (chain ${ch.toExponential(2)}), state ${ks.toExponential(2)} (chain ${cs.toExponential(2)})`,
                );
                // The chain near its rounding level: else the comparison below would prove little.
                expect(ch, `${label}: the chain's h2 error`).toBeLessThan(8 * u);
                expect(cs, `${label}: the chain's state error`).toBeLessThan(8 * u);
                expect(kh, `${label}: h2 error against the chain's + u`).toBeLessThanOrEqual(ch + u);
                expect(ks, `${label}: state error against the chain's + u`).toBeLessThanOrEqual(cs + u);
              } finally {
                T.endScope(frame);
              }
            }
          }
        }
      }, 300_000);
    }
  }

  it("resident mode declines a shape whose shares do not fit: the chain runs", () => {
    const rng = seeded(3301);
    const c: Case = { shape: STREAMED, B: 1, lrpe: false, activation: "silu" };
    const frame = T.beginScope();
    try {
      const w = makeWeights(rng, STREAMED, "bf16", gpu());
      const x = makeInputs(rng, c, "bf16", gpu());
      const [, calls] = withEnv(RESIDENT, () => countingChain(gpu(), () => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c))));
      expect(calls, "the chain ran").toBe(1);
    } finally {
      T.endScope(frame);
    }
  });

  it("unset, empty or 0, the switch leaves the layer to the chain (the default), with its bits; 1 runs the kernel", async () => {
    const rng = seeded(3303);
    const c: Case = { shape: TNL_436M, B: 1, lrpe: false, activation: "silu" };
    const frame = T.beginScope();
    try {
      const w = makeWeights(rng, TNL_436M, "bf16", gpu());
      const x = makeInputs(rng, c, "bf16", gpu());
      const want = chain(x, w, c, stateOf(x, gpu()), false);
      const before = process.env.LIGHTNING_CUDA_DECODE_LAYER;
      delete process.env.LIGHTNING_CUDA_DECODE_LAYER;
      let unset: ReturnType<typeof T.decodeLayer>, calls: number;
      try {
        [unset, calls] = countingChain(gpu(), () => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c)));
      } finally {
        if (before !== undefined) process.env.LIGHTNING_CUDA_DECODE_LAYER = before;
      }
      expect(calls, "unset: the chain ran").toBe(1);
      await expectSameBits(unset.h, want.h, "unset: h2 vs the chain");
      for (const off of ["", "0"]) {
        const [, n] = withEnv({ LIGHTNING_CUDA_DECODE_LAYER: off }, () => countingChain(gpu(), () => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c))));
        expect(n, `'${off}': the chain ran`).toBe(1);
      }
      const [, on] = withEnv({ LIGHTNING_CUDA_DECODE_LAYER: "1" }, () => countingChain(gpu(), () => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c))));
      expect(on, "1: the persistent kernel ran").toBe(0);
    } finally {
      T.endScope(frame);
    }
  });

  it("a bad value of a switch fails the call, naming the switch, what it takes and what came", () => {
    const rng = seeded(3307);
    const c: Case = { shape: SMALL, B: 1, lrpe: false, activation: "silu" };
    const frame = T.beginScope();
    try {
      const w = makeWeights(rng, SMALL, "bf16", gpu());
      const x = makeInputs(rng, c, "bf16", gpu());
      const call = (e: Env) => () => withEnv(e, () => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c)));
      expect(call({ LIGHTNING_CUDA_DECODE_LAYER: "fast" })).toThrow(/LIGHTNING_CUDA_DECODE_LAYER: expected 0, 1, resident or stream, got 'fast'/);
      expect(call({ ...STREAM, LIGHTNING_CUDA_DECODE_LAYER_TRIGGER: "start" })).toThrow(/LIGHTNING_CUDA_DECODE_LAYER_TRIGGER: expected entry, wait or end, got 'start'/);
      expect(call({ ...STREAM, LIGHTNING_CUDA_DECODE_LAYER_BARRIER: "spin" })).toThrow(/LIGHTNING_CUDA_DECODE_LAYER_BARRIER: expected atomic or red, got 'spin'/);
      expect(call({ ...STREAM, LIGHTNING_CUDA_DECODE_LAYER_PREFETCH: "all" })).toThrow(/LIGHTNING_CUDA_DECODE_LAYER_PREFETCH: expected none, lines or bulk, got 'all'/);
      expect(call({ ...STREAM, LIGHTNING_CUDA_DECODE_LAYER_PREFETCH_MB: "-3" })).toThrow(/LIGHTNING_CUDA_DECODE_LAYER_PREFETCH_MB: expected a whole number of MB, got '-3'/);
      // The chain's switches above 4 rows (the fold of the SRMSNorms, the GLU's product pair).
      const c5: Case = { ...c, B: 5 };
      const x5 = makeInputs(rng, c5, "bf16", gpu());
      const call5 = (e: Env) => () => withEnv(e, () => T.decodeLayer(x5.h, w, stateOf(x5, gpu()), x5.slopes, optionsOf(x5, c5)));
      expect(call5({ LIGHTNING_CUDA_FOLD_NORM: "yes" })).toThrow(/LIGHTNING_CUDA_FOLD_NORM: expected 0 or 1, got 'yes'/);
      expect(call5({ LIGHTNING_CUDA_PRODUCT_PAIR: "yes" })).toThrow(/LIGHTNING_CUDA_PRODUCT_PAIR: expected 0 or 1, got 'yes'/);
    } finally {
      T.endScope(frame);
    }
  });

  it("many calls in a row, in both modes: every one gives the first one's bits; ten steps in place give those out of place; the modes give the same bits (436M layer, bf16, B 1 and 4)", async () => {
    for (const B of [1, 4]) {
      const firsts: T.Tensor[] = [];
      const frame = T.beginScope();
      try {
        for (const mode of [RESIDENT, STREAM]) {
          // The same draws in both modes.
          const rng = seeded(4421 + B);
          const w = makeWeights(rng, TNL_436M, "bf16", gpu());
          const c: Case = { shape: TNL_436M, B, lrpe: true, activation: "silu" };
          const x = makeInputs(rng, c, "bf16", gpu());
          const label = `B ${B}, ${envText(mode)}`;
          await withEnvAsync(mode, async () => {
            const state = stateOf(x, gpu());
            const [first, calls] = countingChain(gpu(), () => T.decodeLayer(x.h, w, state, x.slopes, optionsOf(x, c)));
            expect(calls, `${label}: the persistent kernel ran`).toBe(0);
            firsts.push(first.h);
            for (let i = 0; i < 60; i++) {
              const r = T.decodeLayer(x.h, w, state, x.slopes, optionsOf(x, c));
              if (i % 10 === 9) {
                await expectSameBits(r.h, first.h, `${label}: call ${i + 2}, h2`);
                await expectSameBits(r.state, first.state, `${label}: call ${i + 2}, state`);
              }
              r.h.dispose();
              r.state.dispose();
            }
            // Each step feeds the next its h2 and state: a barrier that let a block run ahead would
            // show as a difference somewhere along the way.
            let [hOut, sOut] = [x.h, stateOf(x, gpu())];
            const sIn = stateOf(x, gpu());
            let hIn = x.h;
            for (let i = 0; i < 10; i++) {
              const a = T.decodeLayer(hOut, w, sOut, x.slopes, optionsOf(x, c));
              const b = T.decodeLayer(hIn, w, sIn, x.slopes, { ...optionsOf(x, c), inPlace: true });
              [hOut, sOut, hIn] = [a.h, a.state, b.h];
            }
            await expectSameBits(hIn, hOut, `${label}: h2 after ten steps in place`);
            await expectSameBits(sIn, sOut, `${label}: state after ten steps in place`);
            console.log(`many calls, ${label}: ran the persistent kernel 81 times, every result as expected`);
          });
        }
        await expectSameBits(firsts[1], firsts[0], `B ${B}: h2, streamed vs resident`);
      } finally {
        T.endScope(frame);
      }
    }
  }, 180_000);

  it("in a recorded graph, in both modes: three layers in place, replayed with new h and states, give the eager bits, the same in both modes", async () => {
    const dtype = "bf16";
    const c: Case = { shape: TNL_436M, B: 2, lrpe: true, activation: "silu" };
    const replays: Uint8Array[][] = [];
    for (const mode of [RESIDENT, STREAM]) {
      // The same draws in both modes.
      const rng = seeded(9151);
      const outs: Uint8Array[] = [];
      const frame = T.beginScope();
      // The graph records the launches the switch chose while it was set; the eager runs read it again.
      const restore = setEnv(mode);
      try {
        const layers = [0, 1, 2].map(() => makeWeights(rng, TNL_436M, dtype, gpu()));
        const x = makeInputs(rng, c, dtype, gpu());
        const states = layers.map(() => stateOf(x, gpu()));
        const run = () =>
          T.scope(() => {
            let h = x.h;
            for (const [l, w] of layers.entries()) h = T.decodeLayer(h, w, states[l], x.slopes, { ...optionsOf(x, c), inPlace: true }).h;
            return [h];
          });
        const [, calls] = countingChain(gpu(), () => T.scope(run)); // warm-up outside the recording
        expect(calls, `${envText(mode)}: the persistent kernel ran`).toBe(0);
        const graph = gpu().captureGraph(run);
        const write = (t: T.Tensor, bytes: Uint8Array) => gpu().write(t.handle.storage as CudaStorage, bytes);
        for (let round = 0; round < 4; round++) {
          const h0 = await rng.tensor([c.B, c.shape.M], { dtype, backend: cpu }).bytes();
          const s0 = await Promise.all(states.map(() => T.tensor(rng.array(x.state.length, 0.5), x.stateShape, { backend: cpu }).bytes()));
          const load = () => {
            write(x.h, h0);
            states.forEach((s, l) => write(s, s0[l]));
          };
          load();
          graph.replay();
          const replayed = await graph.result[0].bytes();
          const replayedStates = await Promise.all(states.map((s) => s.bytes()));
          load();
          const [eager] = run();
          const got = await eager.bytes();
          expect(got.findIndex((v, j) => v !== replayed[j]), `${envText(mode)}, round ${round}: h out of the third layer, replay vs eager`).toBe(-1);
          for (const [l, s] of states.entries()) {
            const b = await s.bytes();
            expect(b.findIndex((v, j) => v !== replayedStates[l][j]), `${envText(mode)}, round ${round}: state of layer ${l}, replay vs eager`).toBe(-1);
          }
          outs.push(replayed, ...replayedStates);
          eager.dispose();
        }
        graph.dispose();
        console.log(`graph, ${envText(mode)}: 4 replays of 3 layers, each the eager bits`);
      } finally {
        restore();
        T.endScope(frame);
      }
      replays.push(outs);
    }
    replays[1].forEach((b, i) => expect(b.findIndex((v, j) => v !== replays[0][i][j]), `replayed output ${i}: streamed vs resident`).toBe(-1));
  }, 180_000);

  it("BatchDecoder with graphs (3 layers of the 436M shape, bf16): logits with the kernel, streamed and resident (the same bits), within one rounding of those without it, against f32", async () => {
    const config = makeConfig({ vocabSize: 3001, dModel: 1024, numLayers: 3, numHeads: 8, gluDim: 2816 });
    const be = gpu();
    const defaultBackend = T.getBackend();
    T.setBackend(be);
    const params = initParams(config, { seed: 17, dtype: "bf16" });
    const host = mapParams(params, (t) => T.cast(T.copyTo(t, cpu), "f32"));
    const kernels = be.kernels as unknown as Record<string, unknown>;
    const decodeLayerKernel = kernels.decodeLayer;
    /** `fn` with the op's kernel out of the table: the engine runs its decomposition, the chain. */
    const withoutKernel = <R>(fn: () => R): R => {
      delete kernels.decodeLayer;
      try {
        return fn();
      } finally {
        kernels.decodeLayer = decodeLayerKernel;
      }
    };
    const onCpu = <R>(fn: () => R): R => {
      T.setBackend(cpu);
      try {
        return fn();
      } finally {
        T.setBackend(be);
      }
    };
    const prompts = [[5, 9, 14, 2000], [2, 77], [7, 7, 30, 41, 1500]];
    // The embedding before the first layer and the head after the last chain to the layers' kernels
    // by programmatic dependent launch, inside the decoder's graphs.
    const on = new BatchDecoder(params, config, { capacity: 4 });
    const resident = new BatchDecoder(params, config, { capacity: 4 });
    const off = new BatchDecoder(params, config, { capacity: 4 });
    const ref = onCpu(() => new BatchDecoder(host, config, { capacity: 4, graphs: false }));
    try {
      for (const p of prompts) {
        const r = prefill(params, config, [p], { logits: "last" });
        r.logits.dispose();
        on.add(r.state);
        resident.add(r.state);
        off.add(r.state);
        const copy: TnlState = { position: r.state.position, kv: r.state.kv.map((t) => T.copyTo(t, cpu)) };
        onCpu(() => ref.add(copy));
        disposeState(copy);
        disposeState(r.state);
      }
      // Three layers each add at most one rounding of difference to the logits' relative RMS error.
      const margin = config.numLayers * UNIT.bf16;
      for (let k = 0; k < 5; k++) {
        const tokens = prompts.map((_, r) => (97 * k + 31 * r + 3) % config.vocabSize);
        const streamed = withEnv(STREAM, () => countingChain(be, () => on.step(tokens)));
        const kept = withEnv(RESIDENT, () => countingChain(be, () => resident.step(tokens)));
        // Counted at the steps that record the graphs; replays launch nothing through the table.
        if (k === 0) {
          expect(streamed[1], `step ${k}: the streamed kernel ran`).toBe(0);
          expect(kept[1], `step ${k}: the resident kernel ran`).toBe(0);
        }
        await expectSameBits(streamed[0].logits, kept[0].logits, `step ${k}: logits, streamed vs resident`);
        const a = Float64Array.from(await streamed[0].logits.data());
        const b = Float64Array.from(await withoutKernel(() => off.step(tokens)).logits.data());
        const want = Float64Array.from(await onCpu(() => ref.step(tokens)).logits.data());
        const [ea, eb] = [closeness(a, want).relRms, closeness(b, want).relRms];
        console.log(`BatchDecoder step ${k}: logits' relative RMS vs f32, kernel ${ea.toExponential(2)} (streamed, the resident bits), chain ${eb.toExponential(2)}`);
        expect(eb, `step ${k}: the chain's error`).toBeLessThan(8 * UNIT.bf16);
        expect(ea, `step ${k}: the kernel's error against the chain's + ${config.numLayers}u`).toBeLessThanOrEqual(eb + margin);
      }
    } finally {
      on.dispose();
      resident.dispose();
      off.dispose();
      onCpu(() => ref.dispose());
      disposeParams(params);
      disposeParams(host);
      T.setBackend(defaultBackend);
    }
  }, 180_000);

  it("declines 5 rows, f32 and staged rows over a block's shared memory, in every mode: the chain runs, with its bits", async () => {
    const rng = seeded(2719);
    const cases: [string, Case, Float][] = [
      ["5 rows", { shape: SMALL, B: 5, lrpe: true, activation: "silu" }, "bf16"],
      ["f32", { shape: SMALL, B: 2, lrpe: false, activation: "relu" }, "f32"],
      // Stage 5 stages g, 4 × 29,696 bf16 (232 KB): over the 227 KB a block may take.
      ["G 29,696 at 4 rows", { shape: { M: 256, G: 29696, H: 2, hd: 128 }, B: 4, lrpe: false, activation: "silu" }, "bf16"],
    ];
    for (const [name, c, dtype] of cases) {
      // (Above 4 rows in bf16 the chain folds its norms unless told not to: the next test.)
      for (const mode of [{ LIGHTNING_CUDA_DECODE_LAYER: "1" }, RESIDENT, STREAM].map((m): Env => ({ ...m, LIGHTNING_CUDA_FOLD_NORM: "0" }))) {
        for (const inPlace of [false, true]) {
          const label = `${name}, ${envText(mode)}${inPlace ? ", in place" : ""}`;
          const frame = T.beginScope();
          try {
            const w = makeWeights(rng, c.shape, dtype, gpu());
            const x = makeInputs(rng, c, dtype, gpu());
            const state = stateOf(x, gpu());
            const [got, calls] = withEnv(mode, () => countingChain(gpu(), () => T.decodeLayer(x.h, w, state, x.slopes, { ...optionsOf(x, c), inPlace })));
            expect(calls, `${label}: the chain ran`).toBe(1);
            const want = withEnv(mode, () => chain(x, w, c, stateOf(x, gpu()), inPlace));
            await expectSameBits(got.h, want.h, `${label}: h2 vs the chain`);
            await expectSameBits(got.state, want.state, `${label}: state vs the chain`);
            if (inPlace) expect(got.state.handle).toBe(state.handle);
          } finally {
            T.endScope(frame);
          }
        }
      }
    }
  }, 180_000);
  it("above 4 rows in bf16 the chain folds its two SRMSNorms out of the products: within the unfolded chain's error of float64 + u; LIGHTNING_CUDA_FOLD_NORM=0 unfolds it", async () => {
    // The folded chain reads the raw h into qkvu's product and h1 into l1's and l2's, and scales each
    // output row by 1/rms of its input row in the kernel after the product (the split; the GLU's
    // product). Odd sizes and the 436M layer, 5 to 64 rows, LRPE or not, every activation, in place
    // or not; the unfolded chain (the five ops) and float64 on the host from the same inputs.
    const rng = seeded(2903);
    const u = UNIT.bf16;
    let n = 0;
    for (const shape of [SMALL, TNL_436M]) {
      const w = makeWeights(rng, shape, "bf16", gpu());
      const w64 = await weights64(w);
      for (const B of shape === SMALL ? [5, 9, 33] : [5, 64]) {
        for (const lrpe of [false, true]) {
          const inPlace = n % 2 === 1;
          const c: Case = { shape, B, lrpe, activation: ACTIVATIONS[n++ % ACTIVATIONS.length] };
          const label = `M ${shape.M}, G ${shape.G}, B ${B} ${c.activation}${lrpe ? " LRPE" : ""}${inPlace ? " in place" : ""}`;
          const frame = T.beginScope();
          try {
            const x = makeInputs(rng, c, "bf16", gpu());
            const state = stateOf(x, gpu());
            const [got, calls] = countingChain(gpu(), () => T.decodeLayer(x.h, w, state, x.slopes, { ...optionsOf(x, c), inPlace }));
            expect(calls, `${label}: folded (qkvuProjection did not run)`).toBe(0);
            if (inPlace) expect(got.state.handle, `${label}: the state's storage`).toBe(state.handle);
            const unfoldedState = stateOf(x, gpu());
            const [unfolded, unfoldedCalls] = withEnv({ LIGHTNING_CUDA_FOLD_NORM: "0" }, () =>
              countingChain(gpu(), () => T.decodeLayer(x.h, w, unfoldedState, x.slopes, { ...optionsOf(x, c), inPlace })),
            );
            expect(unfoldedCalls, `${label}: LIGHTNING_CUDA_FOLD_NORM=0 runs the five ops`).toBe(1);
            const want = chain(x, w, c, stateOf(x, gpu()), inPlace);
            await expectSameBits(unfolded.h, want.h, `${label}: unfolded h2 vs the chain`);
            await expectSameBits(unfolded.state, want.state, `${label}: unfolded state vs the chain`);
            const ref = await float64Layer(x, w64, c);
            const [fh, fs] = [closeness(await got.h.data(), ref.h).relRms, closeness(await got.state.data(), ref.state).relRms];
            const [ch, cs] = [closeness(await want.h.data(), ref.h).relRms, closeness(await want.state.data(), ref.state).relRms];
            console.log(`${label}: relative RMS vs float64, folded h2 ${fh.toExponential(2)} (chain ${ch.toExponential(2)}), state ${fs.toExponential(2)} (chain ${cs.toExponential(2)})`);
            expect(ch, `${label}: the chain's h2 error`).toBeLessThan(8 * u);
            expect(cs, `${label}: the chain's state error`).toBeLessThan(8 * u);
            expect(fh, `${label}: folded h2 error against the chain's + u`).toBeLessThanOrEqual(ch + u);
            expect(fs, `${label}: folded state error against the chain's + u`).toBeLessThanOrEqual(cs + u);
          } finally {
            T.endScope(frame);
          }
        }
      }
    }
  }, 180_000);
  it("the folded chain runs l1's and l2's products as one launch, whichever weight lies first in memory: within the unfolded chain's error of float64 + u; LIGHTNING_CUDA_PRODUCT_PAIR=0 runs two", async () => {
    // native/matmul.cu productPair: one cuBLASLt strided batch of two, x's stride 0 and the weights'
    // their address difference. The launches are seen by wrapping the runtime's launch: the pair
    // is asked for once a call, and accepted, or declined under the switch (two products then).
    const rng = seeded(2917);
    const u = UNIT.bf16;
    const pairCode = LAUNCHERS.indexOf("productPair");
    const rt = gpu().runtime as { launch: (code: number, ptrs: number[], ints: number[], floats: number[]) => boolean };
    const pairLaunches = <R>(fn: () => R): [R, boolean[]] => {
      const answers: boolean[] = [];
      // The addon's methods are read-only properties of its prototype: an own property defined
      // over them shadows the method, and deleting it brings the method back.
      const own = Object.getOwnPropertyDescriptor(rt, "launch");
      const launch = rt.launch;
      Object.defineProperty(rt, "launch", {
        configurable: true,
        writable: true,
        value(this: typeof rt, code: number, ptrs: number[], ints: number[], floats: number[]): boolean {
          const ran = launch.call(this, code, ptrs, ints, floats);
          if (code === pairCode) answers.push(ran);
          return ran;
        },
      });
      try {
        return [fn(), answers];
      } finally {
        if (own) Object.defineProperty(rt, "launch", own);
        else delete (rt as Partial<typeof rt>).launch;
      }
    };
    let n = 0;
    for (const shape of [SMALL, TNL_436M]) {
      const made = makeWeights(rng, shape, "bf16", gpu());
      // The same weights with l1 and l2 swapped: the pair's first weight then lies above its second.
      for (const w of [made, { ...made, l1: made.l2, l2: made.l1 }]) {
        const w64 = await weights64(w);
        for (const B of shape === SMALL ? [7, 33] : [5, 64]) {
          const c: Case = { shape, B, lrpe: n % 2 === 1, activation: ACTIVATIONS[n++ % ACTIVATIONS.length] };
          const label = `M ${shape.M}, G ${shape.G}, B ${B} ${c.activation}${c.lrpe ? " LRPE" : ""}, l1 ${w === made ? "below" : "above"} l2`;
          const frame = T.beginScope();
          try {
            const x = makeInputs(rng, c, "bf16", gpu());
            const ref = await float64Layer(x, w64, c);
            const error = async (r: { h: T.Tensor; state: T.Tensor }) => [closeness(await r.h.data(), ref.h).relRms, closeness(await r.state.data(), ref.state).relRms];
            const [paired, asked] = pairLaunches(() => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c)));
            expect(asked, `${label}: one pair launch, accepted`).toEqual([true]);
            const [two, declined] = withEnv({ LIGHTNING_CUDA_PRODUCT_PAIR: "0" }, () => pairLaunches(() => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c))));
            expect(declined, `${label}: LIGHTNING_CUDA_PRODUCT_PAIR=0 declines the pair`).toEqual([false]);
            const unfolded = withEnv({ LIGHTNING_CUDA_FOLD_NORM: "0" }, () => T.decodeLayer(x.h, w, stateOf(x, gpu()), x.slopes, optionsOf(x, c)));
            const [[ph, ps], [th, ts], [ch, cs]] = [await error(paired), await error(two), await error(unfolded)];
            console.log(`${label}: relative RMS vs float64, h2 paired ${ph.toExponential(2)}, two products ${th.toExponential(2)}, unfolded ${ch.toExponential(2)}; state ${ps.toExponential(2)} / ${ts.toExponential(2)} / ${cs.toExponential(2)}`);
            expect(ch, `${label}: the unfolded chain's h2 error`).toBeLessThan(8 * u);
            for (const [e, want, what] of [[ph, ch, "paired h2"], [ps, cs, "paired state"], [th, ch, "two-product h2"], [ts, cs, "two-product state"]] as const) {
              expect(e, `${label}: ${what} error against the unfolded chain's + u`).toBeLessThanOrEqual(want + u);
            }
          } finally {
            T.endScope(frame);
          }
        }
      }
    }
  }, 180_000);
});
