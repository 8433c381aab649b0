import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { configFromHf, configToHf, parameterCount, preset, PRESETS, stateBytesPerSequence, TnlConfigError } from "../src/index.js";
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

  it("rejects unknown keys, naming them", () => {
    expect(() => configFromHf({ ...fixtureJson, rope_theta: 10000 })).toThrow(/unknown key\(s\) "rope_theta"/);
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
    expect({ ...c, extra: {} }).toEqual({ ...preset("tnl-385m"), activation: "silu" });
  });
});

describe("presets", () => {
  it("match the published parameter counts (tied embeddings)", () => {
    expect(parameterCount(PRESETS["tnl-1b"]) / 1e9).toBeCloseTo(1.02, 2);
    expect(parameterCount(PRESETS["tnl-7b"]) / 1e9).toBeCloseTo(6.84, 2);
    // 0.399B with the assumed 64k vocabulary; the 385M of the name is what GPT-2's 50272 would give.
    expect(parameterCount(PRESETS["tnl-385m"]) / 1e9).toBeCloseTo(0.399, 3);
    expect(parameterCount({ ...PRESETS["tnl-385m"], vocabSize: 50272 }) / 1e6).toBeCloseTo(385, 0);
    expect(parameterCount(preset("tnl-tiny"))).toBe(141_376); // the fixture's 13 tensors
  });

  it("describe the released conventions", () => {
    expect(PRESETS["tnl-7b"]).toMatchObject({ noScaleEmbedding: true, tieWordEmbeddings: true, activation: "swish", extra: { model_max_length: 8192 } });
    expect(PRESETS["tnl-1b"].lrpe.filter(Boolean)).toHaveLength(1);
    expect(PRESETS["tnl-1b"].lrpe[0]).toBe(true);
    // Per sequence, whatever its length: L layers of H·hd·hd f32, doubled on the LRPE layer.
    expect(stateBytesPerSequence(PRESETS["tnl-1b"])).toBe(17 * 16 * 128 * 128 * 4);
  });

  it("preset() returns a copy", () => {
    const c = preset("tnl-tiny");
    c.lrpe[0] = false;
    expect(PRESETS["tnl-tiny"].lrpe[0]).toBe(true);
  });
});
