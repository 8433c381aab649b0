/**
 * `decodeLayer` on the CPU, which runs its decomposition: bit for bit the five ops of the TNL decode
 * step's layer (decode-layer-suite.ts, shared with the GPU backends), and clear errors for bad
 * arguments.
 */
import { describe, expect, it } from "vitest";
import * as T from "../src/index.js";
import { decodeLayerSuite, layerInputs, stateOf, type LayerCase } from "./decode-layer-suite.js";

const cpu = T.createCpuBackend({ threads: 1 });

describe("decodeLayer [cpu]", () => decodeLayerSuite(() => cpu, { exact: true }));

describe("decodeLayer refuses bad arguments, naming them", () => {
  // B 1, H 2, hd 8 (hid 16), M 40, G 56; with LRPE, D = 16.
  const c: LayerCase = { B: 1, H: 2, hd: 8, M: 40, G: 56, lrpe: true, activation: "silu" };

  it("shapes of each weight, of the state and of the slopes, with what they follow from", () => {
    T.scope(() => {
      const x = layerInputs(cpu, c, "f32", 3);
      const state = stateOf(x, cpu);
      const rope = { theta: x.theta, positions: x.positions };
      const run = (weights: Partial<T.DecodeLayerWeights>, options: Partial<T.DecodeLayerOptions> = {}, s = state, slopes = x.slopes) =>
        () => T.decodeLayer(x.h, { ...x.weights, ...weights }, s, slopes, { heads: 2, ...rope, ...options });
      const w = (rows: number, cols: number, dtype: T.DType = "f32") => T.ones([rows, cols], { dtype, backend: cpu });
      expect(run({})).not.toThrow();
      expect(run({ qkvu: w(64, 48) })).toThrow(/^decodeLayer: argument 'qkvu' expected shape \[4·H·hd, 40\] \(h is \[1, 40\]\), got \[64, 48\]$/);
      expect(run({ qkvu: w(60, 40) })).toThrow(/^decodeLayer: argument 'qkvu' expected a row count that is a positive multiple of 4·heads = 8, got \[60, 40\]$/);
      expect(run({ out: w(40, 24) })).toThrow(/^decodeLayer: argument 'out' expected shape \[40, 16\] \(\[M, H·hd\]: M = 40 from h, H·hd = 2·8 from qkvu\), got \[40, 24\]$/);
      expect(run({ out: w(16, 40) })).toThrow(/^decodeLayer: argument 'out' expected shape \[40, 16\]/);
      expect(run({ l1: w(56, 48) })).toThrow(/^decodeLayer: argument 'l1' expected shape \[G, 40\] \(h is \[1, 40\]\), got \[56, 48\]$/);
      expect(run({ l2: w(48, 40) })).toThrow(/^decodeLayer: argument 'l2' expected shape \[56, 40\] \(as l1 \[56, 40\]\), got \[48, 40\]$/);
      expect(run({ l3: w(56, 40) })).toThrow(/^decodeLayer: argument 'l3' expected shape \[40, 56\] \(\[M, G\]: M = 40 from h, G = 56 from l1\), got \[56, 40\]$/);
      expect(run({ l3: T.ones([40, 56, 1], { backend: cpu }) })).toThrow(/^decodeLayer: argument 'l3' expected rank 2, got rank 3/);
      // Without LRPE the state's D is hd, so an LRPE-sized state is refused, and the other way round.
      expect(run({}, { theta: undefined, positions: undefined })).toThrow(
        /^decodeLayer: argument 'state' expected shape \[1, 2, 8, 8\] \(\[B, H, D, E\]: B = 1 from h, H = 2, D = hd = 8, E = hd = 8\), got \[1, 2, 16, 8\]$/,
      );
      const small = T.ones([1, 2, 8, 8], { backend: cpu });
      expect(run({}, {}, small)).toThrow(/^decodeLayer: argument 'state' expected shape \[1, 2, 16, 8\] \(\[B, H, D, E\]: B = 1 from h, H = 2, D = 2·hd = 16 with LRPE, E = hd = 8\), got \[1, 2, 8, 8\]$/);
      expect(run({}, {}, T.ones([3, 2, 16, 8], { backend: cpu }))).toThrow(/^decodeLayer: argument 'state' expected shape \[1, 2, 16, 8\].*B = 1 from h/);
      // heads = 4 reads the same 64 rows as 4 heads of 4: the state's H and D follow.
      expect(run({}, { heads: 4, theta: T.ones([4, 4], { backend: cpu }) })).toThrow(/^decodeLayer: argument 'state' expected shape \[1, 4, 8, 4\]/);
      expect(run({}, {}, state, T.tensor([0.5, 0.25, 0.125], [3], { backend: cpu }))).toThrow(/^decodeLayer: argument 'slopes' expected shape \[2\], got \[3\]$/);
    });
  });

  it("dtypes: the weights as h, the state as lightningStep's (f32 for bf16), slopes f32, a float h", () => {
    T.scope(() => {
      const x = layerInputs(cpu, c, "bf16", 4);
      const state = stateOf(x, cpu);
      const rope = { theta: x.theta, positions: x.positions };
      const run = (weights: Partial<T.DecodeLayerWeights>, s = state, slopes = x.slopes, h = x.h) => () => T.decodeLayer(h, { ...x.weights, ...weights }, s, slopes, { heads: 2, ...rope });
      expect(run({})).not.toThrow();
      for (const name of ["qkvu", "out", "l1", "l2", "l3"] as const) {
        const wrong = T.cast(x.weights[name], "f32");
        expect(run({ [name]: wrong }), name).toThrow(new RegExp(`^decodeLayer: argument '${name}' expected dtype bf16 \\(as the first input\\), got f32$`));
      }
      expect(run({}, T.cast(state, "bf16"))).toThrow(/^decodeLayer: argument 'state' expected dtype f32, got bf16 \[1, 2, 16, 8\]$/);
      expect(run({}, state, T.cast(x.slopes, "bf16"))).toThrow(/^decodeLayer: argument 'slopes' expected dtype f32, got bf16 \[2\]$/);
      expect(run({}, state, x.slopes, T.ones([1, 40], { dtype: "i32", backend: cpu }))).toThrow(/^decodeLayer: argument 'h' expected a float tensor/);
      expect(run({}, state, x.slopes, T.ones([1, 1, 40], { dtype: "bf16", backend: cpu }))).toThrow(/^decodeLayer: argument 'h' expected rank 2, got rank 3/);
    });
  });

  it("options: theta and positions together and of their shapes, heads, eps, activation, inPlace; the weights object", () => {
    T.scope(() => {
      const x = layerInputs(cpu, c, "f32", 5);
      const state = stateOf(x, cpu);
      const run = (options: Partial<T.DecodeLayerOptions>, weights: unknown = x.weights, s = state) => () =>
        T.decodeLayer(x.h, weights as T.DecodeLayerWeights, s, x.slopes, { heads: 2, theta: x.theta, positions: x.positions, ...options });
      expect(run({ positions: undefined })).toThrow(/^decodeLayer: argument 'options.positions' expected theta and positions together \(or neither\), got theta alone$/);
      expect(run({ theta: undefined })).toThrow(/^decodeLayer: argument 'options.theta' expected theta and positions together \(or neither\), got positions alone$/);
      expect(run({ theta: T.ones([2, 4], { backend: cpu }) })).toThrow(/^decodeLayer: argument 'theta' expected shape \[2, 8\], got \[2, 4\]$/);
      expect(run({ positions: T.ones([1], { dtype: "f64", backend: cpu }) })).toThrow(/^decodeLayer: argument 'positions' expected dtype f32/);
      expect(run({ positions: T.ones([2], { backend: cpu }) })).toThrow(/^decodeLayer: argument 'positions' expected shape \[1\], got \[2\]$/);
      expect(run({ heads: 0 })).toThrow(/^decodeLayer: argument 'heads' expected a positive integer, got 0$/);
      expect(run({ heads: 1.5 })).toThrow(/^decodeLayer: argument 'heads' expected a positive integer, got 1.5$/);
      expect(run({ eps: 0 })).toThrow(/^decodeLayer: argument 'eps' expected a positive finite number, got 0$/);
      expect(run({ eps: "1e-6" as never })).toThrow(/^decodeLayer: argument 'options.eps' expected a number, got string$/);
      expect(run({ activation: "gelu" as never })).toThrow(/^decodeLayer: argument 'options.activation' expected one of 'silu', 'relu', '1\+elu', 'none', 'swish', got gelu$/);
      expect(run({ inPlace: 1 as never })).toThrow(/^decodeLayer: argument 'options.inPlace' expected a boolean, got 1$/);
      expect(run({}, { ...x.weights, out: undefined })).toThrow(/^decodeLayer: argument 'out' expected a Tensor, got undefined$/);
      expect(run({}, null)).toThrow(/^decodeLayer: argument 'weights' expected an object \{ qkvu, out, l1, l2, l3 \}, got null$/);
      expect(() => T.decodeLayer(x.h, x.weights, state, x.slopes, null as never)).toThrow(/^decodeLayer: argument 'options' expected an object/);
      const gone = stateOf(x, cpu);
      gone.dispose();
      expect(run({ inPlace: true }, x.weights, gone)).toThrow(/^decodeLayer: argument 'state' expected a live tensor, got tensor #\d+ that was disposed$/);
      // "swish" is silu, as in the model's configs.
      const [a, b] = [run({ activation: "swish" })(), run({ activation: "silu" })()];
      expect(Array.from(a.h.dataSync())).toEqual(Array.from(b.h.dataSync()));
    });
  });
});
