import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { configFromHf, configToHf, parameterCount, preset, PRESETS, publishedModels, stateBytesPerSequence, TnlConfigError } from "../src/index.js";
import { FIXTURE_DIR } from "./fixture.js";

const fixtureJson = JSON.parse(readFileSync(join(FIXTURE_DIR, "config.json"), "utf8")) as Record<string, unknown>;

describe("TnlConfig from and to config.json", () => {
  it("reads the fixture config (written by transformers 5)", () => {
    const c = configFromHf(fixtureJson);
    expect(c).toMatchObject({
      vocabSize: 256,
      dModel: 64,
      numLayers: 2,
      numHeads: 4,
      hiddenDim: 64,
      gluDim: 176,
      activation: "silu",
      lrpe: [true, false],
      noScaleEmbedding: false,
      tieWordEmbeddings: false,
      padTokenId: 0,
      eosTokenId: 2,
    });
    expect(c.extra.transformers_version).toBe("5.17.0");
  });

  it("round trips: config → json → config, and json → config → json keeps every TNL key", () => {
    const c = configFromHf(fixtureJson);
    expect(configFromHf(JSON.parse(JSON.stringify(configToHf(c))))).toEqual(c);
    const back = configToHf(c);
    for (const k of ["vocab_size", "decoder_embed_dim", "decoder_layers", "decoder_attention_heads", "hidden_dim", "glu_dim", "linear_act_fun", "linear_use_lrpe_list", "tie_word_embeddings", "no_scale_embedding", "id2label"]) {
      expect(back[k], k).toEqual(fixtureJson[k]);
    }
    for (const name of Object.keys(PRESETS) as (keyof typeof PRESETS)[]) {
      expect(configFromHf(configToHf(preset(name))), name).toEqual(preset(name));
    }
  });

  it("warns about unknown keys, naming them and the file, and reads the rest", () => {
    const warnings: string[] = [];
    const c = configFromHf({ ...fixtureJson, rope_theta: 10000 }, { source: "m/config.json", warn: (m) => warnings.push(m) });
    expect(warnings).toEqual([expect.stringMatching(/^m\/config.json: unknown key "rope_theta" \(10000\) ignored/)]);
    expect(c.dModel).toBe(64);
  });

  it("accepts every key of a published TransnormerConfig and the standard HF keys, without a warning", () => {
    const published = {
      architectures: ["TransnormerForCausalLM"],
      auto_map: { AutoConfig: "configuration_transnormer.TransnormerConfig", AutoModelForCausalLM: "modeling_transnormer.TransnormerForCausalLM" },
      pad_token_id: 0, bos_token_id: 1, eos_token_id: 2, vocab_size: 64000, use_cache: true, init_std: 0.02,
      decoder_embed_dim: 2048, decoder_layers: 16, decoder_attention_heads: 16, no_scale_embedding: false, add_bos_token: false,
      norm_type: "simplermsnorm", linear_use_lrpe_list: [1, ...Array<number>(15).fill(0)], hidden_dim: 2048, linear_act_fun: "swish",
      glu_dim: 5632, bias: false, model_type: "transnormer", torch_dtype: "bfloat16", transformers_version: "4.31.0",
      tie_word_embeddings: true, gradient_checkpointing: false, num_labels: 2, output_past: true,
    };
    const warnings: string[] = [];
    const c = configFromHf(published, { warn: (m) => warnings.push(m) });
    expect(warnings).toEqual([]);
    expect(c).toEqual({ ...preset("tnl-1b"), torchDtype: "bfloat16", extra: expect.any(Object) as unknown });
  });

  it("errors for values out of range name the file and the key", () => {
    const opts = { source: "m/config.json" };
    expect(() => configFromHf({ ...fixtureJson, decoder_attention_heads: 5 }, opts)).toThrow(/^m\/config.json: hidden_dim 64 is not divisible by decoder_attention_heads 5$/);
    expect(() => configFromHf({ ...fixtureJson, glu_dim: 0 }, opts)).toThrow(/^m\/config.json: "glu_dim" must be an integer >= 1, got 0$/);
    expect(() => configFromHf({ ...fixtureJson, eos_token_id: 300 }, opts)).toThrow(/^m\/config.json: eos_token_id 300 is outside the vocabulary \(vocab_size 256\)$/);
    expect(() => configFromHf({ ...fixtureJson, init_std: -1 }, opts)).toThrow(/^m\/config.json: init_std must be a positive number/);
  });

  it("rejects contradictory keys", () => {
    expect(() => configFromHf({ ...fixtureJson, linear_use_lrpe_list: [1, 0, 0] })).toThrow(/3 entries but decoder_layers is 2/);
    expect(() => configFromHf({ ...fixtureJson, num_hidden_layers: 3 })).toThrow(/"num_hidden_layers" \(3\) contradicts/);
    expect(configFromHf({ ...fixtureJson, hidden_size: 64 }).dModel).toBe(64); // agreeing aliases are fine
    expect(() => configFromHf({ ...fixtureJson, torch_dtype: "bfloat16", dtype: "float32" })).toThrow(/torch_dtype .* contradicts dtype/);
    expect(() => configFromHf({ ...fixtureJson, decoder_attention_heads: 5 })).toThrow(/hidden_dim 64 is not divisible by decoder_attention_heads 5/);
    expect(() => configFromHf({ ...fixtureJson, pad_token_id: 256 })).toThrow(/pad_token_id 256 is outside the vocabulary/);
  });

  it("rejects configs it cannot honour: 15B gate_dim, LayerNorm, biases, other models", () => {
    expect(() => configFromHf({ ...fixtureJson, gate_dim: 16 })).toThrow(/"gate_dim".*TransNormerLLM3-15B.*unverified/);
    expect(() => configFromHf({ ...fixtureJson, norm_type: "layernorm" })).toThrow(/norm_type "layernorm" is not supported/);
    expect(() => configFromHf({ ...fixtureJson, bias: true })).toThrow(/"bias": true is not supported/);
    expect(() => configFromHf({ ...fixtureJson, model_type: "llama" })).toThrow(/model_type is "llama"/);
    expect(() => configFromHf({ ...fixtureJson, linear_act_fun: "gelu" })).toThrow(/linear_act_fun "gelu"/);
    expect(() => configFromHf({ ...fixtureJson, vocab_size: "256" })).toThrow(TnlConfigError);
    expect(() => configFromHf([])).toThrow(/expected a JSON object/);
  });

  it("fills missing keys with the official TransnormerConfig defaults", () => {
    const c = configFromHf({ linear_use_lrpe_list: Array.from({ length: 24 }, (_, i) => (i === 0 ? 1 : 0)) });
    // The published 385M models use the GPT-2 vocabulary; the class default is 64000 (and bos 1, eos 2).
    expect({ ...c, extra: {} }).toEqual({ ...preset("tnl-385m"), vocabSize: 64000, bosTokenId: 1, eosTokenId: 2, activation: "silu" });
  });
});

describe("presets", () => {
  it("match the published parameter counts (tied embeddings)", () => {
    expect(parameterCount(PRESETS["tnl-1b"]) / 1e9).toBeCloseTo(1.02, 2);
    expect(parameterCount(PRESETS["tnl-7b"]) / 1e9).toBeCloseTo(6.84, 2);
    // The GPT-2 vocabulary of the published 385M models gives the 385M of the name.
    expect(parameterCount(PRESETS["tnl-385m"]) / 1e6).toBeCloseTo(385, 0);
    expect(parameterCount(preset("tnl-tiny"))).toBe(141_376); // the fixture's 13 tensors
  });

  it("describe the released conventions", () => {
    expect(PRESETS["tnl-7b"]).toMatchObject({ noScaleEmbedding: true, tieWordEmbeddings: true, activation: "swish", extra: { model_max_length: 8192 } });
    expect(PRESETS["tnl-1b"].lrpe.filter(Boolean)).toHaveLength(1);
    expect(PRESETS["tnl-1b"].lrpe[0]).toBe(true);
    // Per sequence, whatever its length: L layers of H·hd·hd f32, doubled on the LRPE layer.
    expect(stateBytesPerSequence(PRESETS["tnl-1b"])).toBe(17 * 16 * 128 * 128 * 4);
  });

  it("the published shapes, TNL3-15B included as a shape we cannot build", () => {
    const byName = Object.fromEntries(publishedModels().map((m) => [m.name, m]));
    expect(Object.keys(byName)).toEqual(["tnl-385m", "tnl-1b", "tnl2-1b", "tnl2-3b", "tnl-7b", "tnl3-15b"]);
    expect(byName["tnl-1b"]).toMatchObject({ dModel: 2048, numLayers: 16, numHeads: 16, gluDim: 5632, vocabSize: 64000 });
    // The 2.04 GB bf16 pytorch_model.bin of TransNormerLLM-1B.
    expect(byName["tnl-1b"].bf16Bytes / 1e9).toBeCloseTo(2.04, 2);
    expect(byName["tnl-7b"].parameters / 1e9).toBeCloseTo(6.84, 2);
    expect(byName["tnl3-15b"]).toMatchObject({ dModel: 5120, numLayers: 42, numHeads: 40, vocabSize: 100280 });
    expect(byName["tnl3-15b"].preset).toBeUndefined();
    expect(byName["tnl3-15b"].parameters / 1e9).toBeCloseTo(14.83, 2);
    // 43 H·hd·hd f32 blocks: 42 layers, layer 0 doubled by LRPE.
    expect(byName["tnl3-15b"].stateBytesPerSequence).toBe(43 * 40 * 128 * 128 * 4);
    for (const m of Object.values(byName)) expect(m.bf16Bytes).toBe(2 * m.parameters);
  });

  it("preset() returns a copy", () => {
    const c = preset("tnl-tiny");
    c.lrpe[0] = false;
    expect(PRESETS["tnl-tiny"].lrpe[0]).toBe(true);
  });
});
