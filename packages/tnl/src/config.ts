/**
 * TNL model configuration: the Hugging Face `config.json` of TransNormerLLM (docs/ALGORITHM.md E.5)
 * as OpenNLPLab publishes it. Every `TransnormerConfig` key and the standard `PretrainedConfig` keys
 * are known; a key we do not know is a warning naming it (published configs carry bookkeeping of
 * their training code). Model variants we do not implement (15B's `gate_dim`, a LayerNorm, biases)
 * and values out of range are errors naming the file and the key, so they never load and then
 * produce plausible-looking garbage.
 *
 * Letters: V vocabulary, M model width (decoder_embed_dim), L layers, H heads, F glu_dim.
 */

/** A config we cannot read or cannot honour. The message names the offending key. */
export class TnlConfigError extends Error {
  override name = "TnlConfigError";
}

/** q/k feature map φ (`linear_act_fun`); "swish" is the released models' name for SiLU. */
export type TnlActivation = "silu" | "swish" | "relu" | "1+elu" | "none";
const ACTIVATIONS: readonly TnlActivation[] = ["silu", "swish", "relu", "1+elu", "none"];

export interface TnlConfig {
  vocabSize: number;
  /** M: `decoder_embed_dim`. */
  dModel: number;
  numLayers: number;
  numHeads: number;
  /** Width of q, k, v, u (`hidden_dim`); head dim = hiddenDim / numHeads. */
  hiddenDim: number;
  /** F: width of the SGLU channel mixer. */
  gluDim: number;
  activation: TnlActivation;
  /** One entry per layer: apply LRPE to that layer's q and k. Released models: [true, false, …]. */
  lrpe: boolean[];
  /** Multiply embeddings by 1 instead of √M. */
  noScaleEmbedding: boolean;
  /** lm_head shares the embedding matrix (the released models do). */
  tieWordEmbeddings: boolean;
  initStd: number;
  padTokenId: number;
  bosTokenId: number;
  eosTokenId: number;
  addBosToken: boolean;
  /** HF `torch_dtype` of the stored weights, when known. */
  torchDtype?: string;
  /** Generic Hugging Face keys we carry through unchanged (architectures, auto_map, …). */
  extra: Record<string, unknown>;
}

/**
 * Generic `PretrainedConfig` keys: accepted, carried through on write, and otherwise ignored.
 * They describe HF bookkeeping or `generate()` defaults, never the network.
 */
const PASSTHROUGH_KEYS = new Set([
  "_name_or_path", "_commit_hash", "_attn_implementation", "_attn_implementation_autoset", "architectures", "auto_map",
  "transformers_version", "id2label", "label2id", "return_dict", "output_hidden_states", "output_attentions",
  "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder",
  "is_decoder", "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "max_length",
  "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature",
  "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
  "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
  "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
  "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "finetuning_task",
  "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params", "problem_type",
  "use_cache", "model_max_length", "dtype", "num_labels", "gradient_checkpointing", "_attn_implementation_internal",
  "output_past", "xla_device", "torch_dtype_auto", "use_return_dict", "base_model_tp_plan", "base_model_pp_plan",
  "keys_to_ignore_at_inference", "attribute_map", "_auto_class",
]);

export interface ConfigOptions {
  /** The file the JSON came from, named in errors and warnings (default "config.json"). */
  source?: string;
  /** Receives a warning for each key nobody defined (default `console.warn`). */
  warn?: (message: string) => void;
}

/** What a standard HF name would mean here; accepted only when it agrees with the TNL key. */
const ALIASES: Record<string, keyof TnlConfig> = {
  hidden_size: "dModel",
  num_hidden_layers: "numLayers",
  num_attention_heads: "numHeads",
  intermediate_size: "gluDim",
};

function fail(message: string): never {
  throw new TnlConfigError(message);
}

function int(json: Record<string, unknown>, key: string, source: string, fallback?: number, min = 1): number {
  const v = json[key] ?? fallback;
  if (v === undefined) fail(`${source}: "${key}" is missing`);
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) fail(`${source}: "${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

function bool(json: Record<string, unknown>, key: string, source: string, fallback: boolean): boolean {
  const v = json[key] ?? fallback;
  if (typeof v !== "boolean") fail(`${source}: "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * A `TnlConfig` from the parsed `config.json` of a TransNormerLLM checkpoint. Missing TNL keys take
 * the defaults of the official `TransnormerConfig`; unknown keys are a warning naming them;
 * contradictions, values out of range and variants we do not implement are a `TnlConfigError`
 * naming the file and the key.
 *
 * @example
 * const config = configFromHf(JSON.parse(readFileSync("TransNormerLLM-1B/config.json", "utf8")));
 */
export function configFromHf(json: unknown, options: ConfigOptions = {}): TnlConfig {
  const src = options.source ?? "config.json";
  const warn = options.warn ?? ((m: string) => console.warn(m));
  if (typeof json !== "object" || json === null || Array.isArray(json)) fail(`${src}: expected a JSON object`);
  const j = json as Record<string, unknown>;
  const int_ = (key: string, fallback?: number, min?: number): number => int(j, key, src, fallback, min);
  const bool_ = (key: string, fallback: boolean): boolean => bool(j, key, src, fallback);

  if (j.model_type !== undefined && j.model_type !== "transnormer") {
    fail(`${src}: model_type is ${JSON.stringify(j.model_type)}, expected "transnormer"`);
  }
  if ("gate_dim" in j) {
    // TransNormerLLM3-15B. Its token mixer has separate q/k/v projections and a low-rank output gate
    // whose module names and nonlinearity were never read from code (docs/ALGORITHM.md E.2, H.2), so any
    // port would be a guess: refuse rather than load it wrongly.
    fail(
      `${src}: "gate_dim" (${JSON.stringify(j.gate_dim)}) marks the TransNormerLLM3-15B token mixer ` +
        "(low-rank output gate, separate q/k/v), whose module layout is unverified; it is not supported",
    );
  }
  if ((j.norm_type ?? "simplermsnorm") !== "simplermsnorm") {
    fail(`${src}: norm_type ${JSON.stringify(j.norm_type)} is not supported (only "simplermsnorm"; the official code would use a LayerNorm)`);
  }
  if (bool_("bias", false)) fail(`${src}: "bias": true is not supported (released TNL models have no biases)`);

  const known = new Set([
    "model_type", "vocab_size", "decoder_embed_dim", "decoder_layers", "decoder_attention_heads", "hidden_dim",
    "glu_dim", "linear_act_fun", "linear_use_lrpe_list", "linear_use_lrpe", "no_scale_embedding",
    "tie_word_embeddings", "init_std", "pad_token_id", "bos_token_id", "eos_token_id", "add_bos_token",
    "norm_type", "bias", "torch_dtype", ...Object.keys(ALIASES),
  ]);
  const unknown = Object.keys(j).filter((k) => !known.has(k) && !PASSTHROUGH_KEYS.has(k));
  for (const k of unknown) warn(`${src}: unknown key "${k}" (${JSON.stringify(j[k])}) ignored; neither TransnormerConfig nor PretrainedConfig defines it`);

  const numLayers = int_("decoder_layers", 24);
  const act = j.linear_act_fun ?? "silu";
  if (!ACTIVATIONS.includes(act as TnlActivation)) fail(`${src}: linear_act_fun ${JSON.stringify(act)} is not one of ${ACTIVATIONS.join(", ")}`);

  const list = j.linear_use_lrpe_list ?? [];
  if (!Array.isArray(list) || list.some((x) => x !== 0 && x !== 1 && typeof x !== "boolean")) {
    fail(`${src}: linear_use_lrpe_list must be a list of 0/1, got ${JSON.stringify(list)}`);
  }
  // The official constructor indexes this list by layer; a short list would crash there.
  if (list.length !== numLayers) fail(`${src}: linear_use_lrpe_list has ${list.length} entries but decoder_layers is ${numLayers}`);
  // `linear_use_lrpe` (a scalar) is a leftover the model constructor overwrites per layer (fixture README), so it is ignored.

  const dtypes = [j.torch_dtype, j.dtype].filter((x) => x !== undefined && x !== null);
  if (dtypes.length === 2 && dtypes[0] !== dtypes[1]) fail(`${src}: torch_dtype ${JSON.stringify(j.torch_dtype)} contradicts dtype ${JSON.stringify(j.dtype)}`);

  const extra: Record<string, unknown> = {};
  // `dtype` is transformers 5's name for `torch_dtype`: kept as `torchDtype`, not carried twice.
  for (const k of Object.keys(j)) if (PASSTHROUGH_KEYS.has(k) && k !== "dtype") extra[k] = j[k];

  const config: TnlConfig = {
    vocabSize: int_("vocab_size", 64000),
    dModel: int_("decoder_embed_dim", 1024),
    numLayers,
    numHeads: int_("decoder_attention_heads", 8),
    hiddenDim: int_("hidden_dim", 1024),
    gluDim: int_("glu_dim", 2816),
    activation: act as TnlActivation,
    lrpe: list.map((x) => x === 1 || x === true),
    noScaleEmbedding: bool_("no_scale_embedding", false),
    tieWordEmbeddings: bool_("tie_word_embeddings", true),
    initStd: typeof j.init_std === "number" && j.init_std > 0 ? j.init_std : j.init_std === undefined ? 0.02 : fail(`${src}: init_std must be a positive number, got ${JSON.stringify(j.init_std)}`),
    padTokenId: int_("pad_token_id", 0, 0),
    bosTokenId: int_("bos_token_id", 1, 0),
    eosTokenId: int_("eos_token_id", 2, 0),
    addBosToken: bool_("add_bos_token", false),
    extra,
  };
  const dtype = dtypes[0];
  if (dtype !== undefined) config.torchDtype = typeof dtype === "string" ? dtype : JSON.stringify(dtype);
  for (const [alias, field] of Object.entries(ALIASES)) {
    if (j[alias] !== undefined && j[alias] !== config[field]) {
      fail(`${src}: "${alias}" (${JSON.stringify(j[alias])}) contradicts the TNL value ${JSON.stringify(config[field])}`);
    }
  }
  return validateConfig(config, src);
}

/** Checks the relations between fields (errors name `source`); returns the config for chaining. */
export function validateConfig(c: TnlConfig, source = "config"): TnlConfig {
  if (c.hiddenDim % c.numHeads !== 0) fail(`${source}: hidden_dim ${c.hiddenDim} is not divisible by decoder_attention_heads ${c.numHeads}`);
  if (c.lrpe.length !== c.numLayers) fail(`${source}: ${c.lrpe.length} LRPE flags for ${c.numLayers} layers`);
  for (const [key, id] of [["pad_token_id", c.padTokenId], ["bos_token_id", c.bosTokenId], ["eos_token_id", c.eosTokenId]] as const) {
    if (id >= c.vocabSize) fail(`${source}: ${key} ${id} is outside the vocabulary (vocab_size ${c.vocabSize})`);
  }
  return c;
}

/**
 * The Hugging Face `config.json` object for `config`, with the keys the official
 * `TransnormerConfig` writes; the exact inverse of `configFromHf`. Carried-through keys (`extra`)
 * come first so TNL keys win.
 *
 * @example
 * writeFileSync("out/config.json", JSON.stringify(configToHf(PRESETS["tnl-1b"]), null, 2));
 */
export function configToHf(c: TnlConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    ...c.extra,
    model_type: "transnormer",
    vocab_size: c.vocabSize,
    decoder_embed_dim: c.dModel,
    decoder_layers: c.numLayers,
    decoder_attention_heads: c.numHeads,
    hidden_dim: c.hiddenDim,
    glu_dim: c.gluDim,
    linear_act_fun: c.activation,
    linear_use_lrpe_list: c.lrpe.map((x) => (x ? 1 : 0)),
    no_scale_embedding: c.noScaleEmbedding,
    tie_word_embeddings: c.tieWordEmbeddings,
    init_std: c.initStd,
    norm_type: "simplermsnorm",
    bias: false,
    pad_token_id: c.padTokenId,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    add_bos_token: c.addBosToken,
  };
  delete out.dtype;
  if (c.torchDtype !== undefined) out.torch_dtype = c.torchDtype;
  return out;
}

/** Head dim of q/k/v (`hidden_dim / heads`). */
export const headDim = (c: TnlConfig): number => c.hiddenDim / c.numHeads;

/** Parameter count: V·M (twice if untied) + Σ_l (4·hid·M + M·hid + 3·M·F) + LRPE θ (H·hd per LRPE layer). */
export function parameterCount(c: TnlConfig): number {
  const embed = c.vocabSize * c.dModel * (c.tieWordEmbeddings ? 1 : 2);
  const perLayer = 5 * c.hiddenDim * c.dModel + 3 * c.dModel * c.gluDim;
  return embed + c.numLayers * perLayer + c.lrpe.filter(Boolean).length * c.hiddenDim;
}

/** Bytes of the recurrent state per sequence (f32): per layer H·D·E with D doubled by LRPE. */
export function stateBytesPerSequence(c: TnlConfig): number {
  const hd = headDim(c);
  return c.lrpe.reduce((sum, on) => sum + c.numHeads * (on ? 2 * hd : hd) * hd * 4, 0);
}

interface Shape {
  vocabSize: number;
  dModel: number;
  numLayers: number;
  numHeads: number;
  gluDim: number;
  activation?: TnlActivation;
  noScaleEmbedding?: boolean;
  tieWordEmbeddings?: boolean;
  hiddenDim?: number;
  lrpeLayers?: number[];
  bosTokenId?: number;
  eosTokenId?: number;
}

/** A config from its sizes, with the released models' conventions for everything else. */
export function makeConfig(s: Shape): TnlConfig {
  const lrpeLayers = s.lrpeLayers ?? [0];
  return validateConfig({
    vocabSize: s.vocabSize,
    dModel: s.dModel,
    numLayers: s.numLayers,
    numHeads: s.numHeads,
    hiddenDim: s.hiddenDim ?? s.dModel,
    gluDim: s.gluDim,
    activation: s.activation ?? "swish",
    lrpe: Array.from({ length: s.numLayers }, (_, l) => lrpeLayers.includes(l)),
    noScaleEmbedding: s.noScaleEmbedding ?? false,
    tieWordEmbeddings: s.tieWordEmbeddings ?? true,
    initStd: 0.02,
    padTokenId: 0,
    bosTokenId: s.bosTokenId ?? 1,
    eosTokenId: s.eosTokenId ?? 2,
    addBosToken: false,
    extra: {},
  });
}

/**
 * Released sizes (docs/ALGORITHM.md E.5) and tiny sizes for tests. TransNormerLLM3-15B is absent on
 * purpose: its `gate_dim` token mixer has an unverified module layout (see `configFromHf`).
 *
 * @example
 * const config = PRESETS["tnl-1b"]; // 2048 wide, 16 layers, 1.02B parameters
 */
export const PRESETS = {
  // The 385M ablation models as published (docs/ALGORITHM.md E.5): the `TransnormerConfig` default
  // sizes with the GPT-2 BPE (vocab 50272, bos = eos = 50260), which gives the 385M of the name.
  "tnl-385m": makeConfig({ vocabSize: 50272, dModel: 1024, numLayers: 24, numHeads: 8, gluDim: 2816, bosTokenId: 50260, eosTokenId: 50260 }),
  "tnl-1b": makeConfig({ vocabSize: 64000, dModel: 2048, numLayers: 16, numHeads: 16, gluDim: 5632 }),
  "tnl2-1b": makeConfig({ vocabSize: 64000, dModel: 2048, numLayers: 16, numHeads: 16, gluDim: 5632, noScaleEmbedding: true }),
  "tnl2-3b": makeConfig({ vocabSize: 64000, dModel: 2560, numLayers: 32, numHeads: 20, gluDim: 6912, noScaleEmbedding: true }),
  "tnl-7b": { ...makeConfig({ vocabSize: 64000, dModel: 4096, numLayers: 30, numHeads: 32, gluDim: 11008, noScaleEmbedding: true }), extra: { model_max_length: 8192 } },
  /** The shape of the official-code fixture (test/fixtures/tnl-tiny): untied, SiLU, LRPE on layer 0. */
  "tnl-tiny": makeConfig({ vocabSize: 256, dModel: 64, numLayers: 2, numHeads: 4, gluDim: 176, activation: "silu", tieWordEmbeddings: false }),
  /** Small enough for float64 finite-difference gradient checks of the whole model. */
  "tnl-micro": makeConfig({ vocabSize: 11, dModel: 8, numLayers: 2, numHeads: 2, gluDim: 12, activation: "silu" }),
} satisfies Record<string, TnlConfig>;

export type PresetName = keyof typeof PRESETS;

/** A copy of a preset's config (callers may change it without touching the table). */
export function preset(name: PresetName): TnlConfig {
  const c = PRESETS[name];
  if (!c) fail(`unknown preset ${JSON.stringify(name)}; known: ${Object.keys(PRESETS).join(", ")}`);
  return structuredClone(c);
}
