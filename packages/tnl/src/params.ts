/**
 * TNL parameters as a plain tree of tensors (so autograd and optimisers can walk it), their
 * official Hugging Face names, and the official initialisation (docs/ALGORITHM.md E.8, A.5).
 *
 * Letters: V vocabulary, M model width, F glu_dim, H heads, hd head dim; `hid` = hidden_dim.
 */
import { cast, collectTensors, type DType, mul, randomNormal, scope, type Tensor, tensor } from "@lightning-ts/tensor";
import { headDim, type TnlConfig } from "./config.js";

export interface TnlLayerParams {
  /** [4·hid, M]: q, k, v, u stacked along the output dim, in that order. */
  qkvu: Tensor;
  /** [M, hid] */
  out: Tensor;
  /** LRPE frequencies [H, 1, hd]; present only on layers with LRPE. */
  theta?: Tensor;
  /** Channel mixer: l1, l2 [F, M], l3 [M, F]. */
  l1: Tensor;
  l2: Tensor;
  l3: Tensor;
}

export interface TnlParams {
  /** [V, M] */
  embed: Tensor;
  layers: TnlLayerParams[];
  /** [V, M]; absent when the output embedding is tied to `embed`. */
  lmHead?: Tensor;
}

/** A config and its parameters: what checkpoints load and `generate` runs. */
export interface TnlModel {
  config: TnlConfig;
  params: TnlParams;
}

type LayerKey = keyof TnlLayerParams;

interface ParamSpec {
  /** Official HF name, e.g. `model.layers.0.token_mixer.qkvu_proj.weight`. */
  name: string;
  shape: number[];
  get(p: TnlParams): Tensor | undefined;
  set(p: TnlParams, t: Tensor): void;
}

const LAYER_NAMES: Record<LayerKey, string> = {
  qkvu: "token_mixer.qkvu_proj.weight",
  out: "token_mixer.out_proj.weight",
  theta: "token_mixer.lrpe.theta",
  l1: "channel_mixer.l1.weight",
  l2: "channel_mixer.l2.weight",
  l3: "channel_mixer.l3.weight",
};

/** Every parameter of `config` with its HF name and shape, in the official module order. */
export function parameterSpecs(c: TnlConfig): ParamSpec[] {
  const { vocabSize: V, dModel: M, gluDim: F, hiddenDim: hid, numHeads: H } = c;
  const specs: ParamSpec[] = [
    { name: "model.embed_tokens.weight", shape: [V, M], get: (p) => p.embed, set: (p, t) => (p.embed = t) },
  ];
  c.lrpe.forEach((useLrpe, l) => {
    const shapes: Partial<Record<LayerKey, number[]>> = {
      qkvu: [4 * hid, M],
      out: [M, hid],
      ...(useLrpe ? { theta: [H, 1, headDim(c)] } : {}),
      l1: [F, M],
      l2: [F, M],
      l3: [M, F],
    };
    for (const [key, shape] of Object.entries(shapes) as [LayerKey, number[]][]) {
      specs.push({
        name: `model.layers.${l}.${LAYER_NAMES[key]}`,
        shape,
        get: (p) => p.layers[l]?.[key],
        set: (p, t) => {
          p.layers[l] ??= {} as TnlLayerParams;
          p.layers[l][key] = t;
        },
      });
    }
  });
  if (!c.tieWordEmbeddings) specs.push({ name: "lm_head.weight", shape: [V, M], get: (p) => p.lmHead, set: (p, t) => (p.lmHead = t) });
  return specs;
}

/** LRPE θ_{h,j} = 10000^(−2(h·hd + j)/(H·hd)), shape [H, 1, hd] (A.5). */
export function lrpeTheta(c: TnlConfig, dtype: DType = "f32"): Tensor {
  const H = c.numHeads;
  const hd = headDim(c);
  const values = Array.from({ length: H * hd }, (_, i) => 10000 ** ((-2 * i) / (H * hd)));
  return tensor(values, [H, 1, hd], { dtype });
}

export interface InitOptions {
  /** Seed of the counter-based RNG: the same parameters on every backend. */
  seed?: number;
  dtype?: DType;
}

/**
 * Fresh parameters with the official initialisation: every Linear and Embedding weight
 * ~ N(0, init_std²), the padding row of the embedding zeroed, LRPE θ at its fixed schedule.
 *
 * @example
 * const params = initParams(preset("tnl-tiny"), { seed: 0 });
 */
export function initParams(c: TnlConfig, options: InitOptions = {}): TnlParams {
  const { seed = 0, dtype = "f32" } = options;
  return scope(() => {
    const params = { layers: [] as TnlLayerParams[] } as unknown as TnlParams;
    // One RNG stream, each parameter drawing the next counters, so adding a layer never changes earlier ones.
    let offset = 0;
    for (const spec of parameterSpecs(c)) {
      let t: Tensor;
      if (spec.name.endsWith("lrpe.theta")) {
        t = lrpeTheta(c, dtype);
      } else {
        t = randomNormal(spec.shape, { seed, offset, std: c.initStd, dtype: dtype === "f64" ? "f64" : "f32" });
        offset += t.size;
        if (spec.name === "model.embed_tokens.weight") {
          const keepRows = Array.from({ length: c.vocabSize }, (_, v) => (v === c.padTokenId ? 0 : 1));
          t = mul(t, tensor(keepRows, [c.vocabSize, 1], { dtype: t.dtype }));
        }
        if (t.dtype !== dtype) t = cast(t, dtype);
      }
      spec.set(params, t);
    }
    return params;
  });
}

/** Every tensor of `params` by its HF name (tied lm_head omitted, as HF saves it). */
export function namedParameters(c: TnlConfig, params: TnlParams): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const spec of parameterSpecs(c)) {
    const t = spec.get(params);
    if (!t) throw new Error(`TNL params: "${spec.name}" is missing`);
    out[spec.name] = t;
  }
  return out;
}

/** Checks that `params` has every tensor of `config` with the right shape (and nothing else). */
export function checkParams(c: TnlConfig, params: TnlParams): void {
  const specs = parameterSpecs(c);
  for (const spec of specs) {
    const t = spec.get(params);
    if (!t) throw new Error(`TNL params: "${spec.name}" is missing`);
    if (t.shape.join() !== spec.shape.join()) {
      throw new Error(`TNL params: "${spec.name}" has shape [${t.shape.join(", ")}], the config needs [${spec.shape.join(", ")}]`);
    }
  }
  const count = collectTensors(params).length;
  if (count !== specs.length) throw new Error(`TNL params: ${count} tensors, the config has ${specs.length}`);
}

/** A copy of `params` in another dtype (new tensors; the originals are untouched). */
export function castParams(params: TnlParams, dtype: DType): TnlParams {
  return scope(() => mapParams(params, (t) => cast(t, dtype)));
}

/** `params` with `fn` applied to each tensor (given with its field name), in the same structure. */
export function mapParams(params: TnlParams, fn: (t: Tensor, key: keyof TnlLayerParams | "embed" | "lmHead") => Tensor): TnlParams {
  const layers = params.layers.map((lp) => {
    const out = {} as TnlLayerParams;
    for (const [k, t] of Object.entries(lp) as [LayerKey, Tensor][]) out[k] = fn(t, k);
    return out;
  });
  return { embed: fn(params.embed, "embed"), layers, ...(params.lmHead ? { lmHead: fn(params.lmHead, "lmHead") } : {}) };
}

/** Disposes every tensor of `params`. */
export function disposeParams(params: TnlParams): void {
  for (const t of collectTensors(params)) t.dispose();
}
