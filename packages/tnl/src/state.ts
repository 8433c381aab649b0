/**
 * The recurrent state as a value (docs/ALGORITHM.md D): per layer the Lightning state
 * S = Σ_s λ^{n−s} k_sᵀ v_s, [B, H, D, E] (D = 2·hd on LRPE layers), plus the number of tokens seen,
 * which is the absolute LRPE position of the next token. States are never changed in place: `step`
 * and `prefill` return new ones, so a state can be kept, forked, saved and compared freely.
 *
 * Letters: B batch, H heads, D q/k head dim, E value head dim.
 */
import {
  type Backend,
  copy,
  encodeSafetensors,
  gather,
  loadSafetensors,
  scope,
  SafetensorsError,
  type Tensor,
  tensor,
  zeros,
} from "@lightning-ts/tensor";
import { headDim, type TnlConfig } from "./config.js";
import { TnlInputError } from "./errors.js";

export interface TnlState {
  /** Tokens consumed so far; the next token sits at this absolute position. */
  readonly position: number;
  /** One Lightning state per layer, [B, H, D, E], f32 (f64 for a float64 model). */
  readonly kv: readonly Tensor[];
}

/** Batch size of a state. */
export const stateBatch = (s: TnlState): number => s.kv[0]?.shape[0] ?? 0;

/** State shape of layer `l`: [B, H, D, E]. */
function layerShape(c: TnlConfig, l: number, batch: number): number[] {
  const hd = headDim(c);
  return [batch, c.numHeads, c.lrpe[l] ? 2 * hd : hd, hd];
}

/**
 * The state before any token: zeros at position 0.
 *
 * @example
 * const s0 = initState(config, 2);
 */
export function initState(c: TnlConfig, batch: number, options: { dtype?: "f32" | "f64"; backend?: Backend } = {}): TnlState {
  const dtype = options.dtype ?? "f32";
  return { position: 0, kv: c.lrpe.map((_, l) => zeros(layerShape(c, l, batch), { dtype, backend: options.backend })) };
}

/** Throws unless `s` fits `c` with batch size `batch`. */
export function checkStateFor(s: TnlState, c: TnlConfig, batch: number): void {
  if (s.kv.length !== c.numLayers) throw new TnlInputError(`TNL state has ${s.kv.length} layers, the model has ${c.numLayers}`);
  s.kv.forEach((t, l) => {
    const want = layerShape(c, l, batch);
    if (t.shape.join() !== want.join()) {
      throw new TnlInputError(`TNL state layer ${l} is [${t.shape.join(", ")}], expected [${want.join(", ")}] (batch ${batch})`);
    }
  });
}

/** A deep copy (new tensors), e.g. to continue one prompt in two ways. */
export function cloneState(s: TnlState): TnlState {
  return { position: s.position, kv: s.kv.map((t) => copy(t)) };
}

/**
 * A state made of the given batch rows of `s`, in that order (rows may repeat): fork one
 * prompt into several samples, or drop finished sequences.
 *
 * @example
 * const four = selectRows(state, [0, 0, 0, 0]);
 */
export function selectRows(s: TnlState, rows: readonly number[]): TnlState {
  const B = stateBatch(s);
  for (const r of rows) if (!Number.isInteger(r) || r < 0 || r >= B) throw new RangeError(`selectRows: row ${r} is outside [0, ${B})`);
  return scope(() => {
    const idx = tensor(rows, [rows.length], { dtype: "i32" });
    return { position: s.position, kv: s.kv.map((t) => gather(t, idx, 0)) };
  });
}

export function disposeState(s: TnlState): void {
  for (const t of s.kv) t.dispose();
}

/**
 * Largest |Δ| between two states' tensors, or Infinity when positions or shapes differ.
 */
export async function stateDistance(a: TnlState, b: TnlState): Promise<number> {
  if (a.position !== b.position || a.kv.length !== b.kv.length) return Infinity;
  let worst = 0;
  for (let l = 0; l < a.kv.length; l++) {
    const x = a.kv[l];
    const y = b.kv[l];
    if (x.shape.join() !== y.shape.join() || x.dtype !== y.dtype) return Infinity;
    const [dx, dy] = [await x.data(), await y.data()];
    for (let i = 0; i < dx.length; i++) {
      const d = Math.abs(dx[i] - dy[i]);
      if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
    }
  }
  return worst;
}

/**
 * Whether two states are equal: same position and shapes, values within `atol` (default exact).
 *
 * @example
 * expect(await statesEqual(restored, state)).toBe(true);
 */
export async function statesEqual(a: TnlState, b: TnlState, options: { atol?: number } = {}): Promise<boolean> {
  return (await stateDistance(a, b)) <= (options.atol ?? 0);
}

const STATE_FORMAT = "tnl-state/1";

/**
 * The state as bytes: a safetensors file (`layers.{l}.kv`) whose metadata holds the position, so
 * any safetensors reader can inspect it.
 *
 * @example
 * await writeFile("session.state", await serializeState(state));
 */
export async function serializeState(s: TnlState): Promise<Uint8Array> {
  const tensors: Record<string, Tensor> = {};
  s.kv.forEach((t, l) => (tensors[`layers.${l}.kv`] = t));
  return encodeSafetensors(tensors, { format: STATE_FORMAT, position: String(s.position), layers: String(s.kv.length) });
}

/**
 * A state from `serializeState` bytes; with a config, also checks that it fits that model.
 *
 * @example
 * const state = deserializeState(await readFile("session.state"), config);
 */
export function deserializeState(bytes: Uint8Array, config?: TnlConfig): TnlState {
  const { tensors, metadata } = loadSafetensors(bytes, { source: "TNL state" });
  const free = () => Object.values(tensors).forEach((t) => t.dispose());
  const position = Number(metadata.position);
  const layers = Number(metadata.layers);
  if (metadata.format !== STATE_FORMAT || !Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(layers)) {
    free();
    throw new SafetensorsError("TNL state", `not a ${STATE_FORMAT} file (metadata ${JSON.stringify(metadata)})`);
  }
  const kv: Tensor[] = [];
  for (let l = 0; l < layers; l++) {
    const t = tensors[`layers.${l}.kv`];
    if (!t) {
      free();
      throw new SafetensorsError("TNL state", `missing tensor layers.${l}.kv`);
    }
    kv.push(t);
  }
  const state = { position, kv };
  if (config) {
    try {
      checkStateFor(state, config, stateBatch(state));
    } catch (err) {
      free();
      throw err;
    }
  }
  return state;
}
