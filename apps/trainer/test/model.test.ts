/**
 * The model a run builds: special-token ids from the tokenizer (GPT-2's among them), presets of
 * the published shapes, and what the run reports: tokens/s, MFU, gradient norm, skipped steps.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createBackend } from "@lightning-ts/backends";
import type { Backend } from "@lightning-ts/tensor";
import { initParams, parameterCount, PRESETS, type TnlParams } from "@lightning-ts/tnl";
import { trainBpe } from "@lightning-ts/tokenizer";
import { describe, expect, it } from "vitest";
import { CLI_FLAGS, resolveConfig } from "../src/config.js";
import { SPECIAL_TOKENS } from "../src/data.js";
import { formatMfu } from "../src/report.js";
import { specialTokens } from "../src/special.js";
import { CUDA_PEAK_TFLOPS, peakTflops } from "../src/throughput.js";
import { modelConfig, train } from "../src/train.js";
import { corpus, quiet, small, tempRoot, writeGpt2Tokenizer } from "./helpers.js";

const root = tempRoot("trainer-model");
const cacheDir = join(root, "cache");
const data = join(root, "corpus.txt");
writeFileSync(data, corpus);
const gpt2File = join(root, "gpt2.json");
const gpt2 = writeGpt2Tokenizer(gpt2File);

async function embeddingRowNorms(params: TnlParams, width: number, rows: number[]): Promise<number[]> {
  const values = await params.embed.data();
  return rows.map((r) => Math.hypot(...values.subarray(r * width, (r + 1) * width)));
}

describe("special tokens", () => {
  it("come from a GPT-2 tokenizer: <|endoftext|> is eos, bos and (with no spare row) pad; '!' and '#' are text", () => {
    expect([gpt2.vocabSize, gpt2.tokenToId("<|endoftext|>"), gpt2.encode("!#")]).toEqual([50257, 50256, [0, 2]]);
    const own = specialTokens(gpt2);
    expect(own.ids).toEqual({ padTokenId: 50256, bosTokenId: 50256, eosTokenId: 50256 });
    expect(own.vocabSize).toBe(50257);
    expect(own.description).toBe("pad 50256 (end of text: the tokenizer has no pad token), bos 50256 (end of text: the tokenizer has no bos token), eos 50256 <|endoftext|>");
    // GPT-2's vocabulary padded to 50,272 rows (as the TNL-385M ablations used it): pad is a row no text encodes to.
    const padded = specialTokens(gpt2, 50_272);
    expect(padded.ids).toEqual({ padTokenId: 50257, bosTokenId: 50256, eosTokenId: 50256 });
    expect(() => specialTokens(gpt2, 50_000)).toThrow(/^--model-vocab 50000: the tokenizer has 50,257 tokens, more than the model's vocab_size of 50,000/);
  });

  it("are the trainer's own for a trained tokenizer, and a spare row for a tokenizer without any", () => {
    const trained = trainBpe(corpus.slice(0, 5000), { vocabSize: 300, specialTokens: SPECIAL_TOKENS });
    expect(specialTokens(trained).ids).toEqual({ padTokenId: 0, bosTokenId: 1, eosTokenId: 2 });
    const bare = trainBpe(corpus.slice(0, 5000), { vocabSize: 280 });
    const s = specialTokens(bare);
    expect([s.vocabSize, s.ids.eosTokenId, s.ids.padTokenId, s.ids.bosTokenId]).toEqual([281, 280, 280, 280]);
    expect(s.description).toMatch(/eos 280 \(a spare row: the tokenizer has no end-of-text token\)/);
    expect(() => specialTokens(bare, 280)).toThrow(/no end-of-text token .* and the model no spare row .* at least 281/);
  });

  it("reach the model a run trains and saves: the '!' row is initialised, the <|endoftext|> row is the zeroed pad", async () => {
    const config = small(data, join(root, "gpt2"), { tokenizerPath: gpt2File, steps: 2, warmupSteps: 1, evalInterval: 2, checkpointInterval: 2 });
    const { config: tnl } = modelConfig(config, gpt2);
    const params = initParams(tnl, { seed: 1 });
    const [bang, hash, eos] = await embeddingRowNorms(params, tnl.dModel, [0, 2, 50256]);
    expect(bang).toBeGreaterThan(0);
    expect(hash).toBeGreaterThan(0);
    expect(eos).toBe(0);

    const result = await train({ ...quiet(cacheDir), config });
    expect(result.summary!.special_tokens).toEqual({ pad: 50256, bos: 50256, eos: 50256 });
    const saved = JSON.parse(readFileSync(join(root, "gpt2", "model", "config.json"), "utf8")) as Record<string, unknown>;
    expect([saved.vocab_size, saved.pad_token_id, saved.bos_token_id, saved.eos_token_id]).toEqual([50257, 50256, 50256, 50256]);
  });
});

describe("presets", () => {
  it("set the published shapes; explicit sizes win; an unknown name lists the known ones", () => {
    const c = resolveConfig({ overrides: { preset: "tnl-385m" } });
    expect(c.model).toEqual({ dModel: 1024, numLayers: 24, numHeads: 8, gluDim: 2816, vocabSize: 50272, tieWordEmbeddings: null });
    expect(resolveConfig({ overrides: { preset: "tnl-1b", "model.numLayers": 2 } }).model).toMatchObject({ dModel: 2048, numLayers: 2 });
    const known = Object.keys(PRESETS);
    expect(known).toEqual(["tnl-385m", "tnl-1b", "tnl2-1b", "tnl2-3b", "tnl-7b", "tnl-tiny", "tnl-micro"]);
    expect(() => resolveConfig({ overrides: { preset: "tnl-9b" } })).toThrow(`--preset expected one of the presets ${known.join(", ")}, got "tnl-9b"`);
    const help = CLI_FLAGS.find((f) => f.key === "preset")!.help;
    for (const name of known) expect(help).toContain(`${name} (d ${PRESETS[name as keyof typeof PRESETS].dModel},`);
    expect(() => resolveConfig({ overrides: { preset: "tnl-385m", "model.numHeads": 3 } })).toThrow(/--heads 3 must divide --d-model \(1024, from --preset tnl-385m\)/);
  });

  it("build the preset's model (its conventions and vocabulary), and refuse a tokenizer larger than its vocabulary", async () => {
    const tiny = resolveConfig({ overrides: { preset: "tnl-tiny", data: [data], steps: 2, warmupSteps: 1, outDir: join(root, "tiny") } });
    expect(() => modelConfig(tiny, gpt2)).toThrow(/^--preset tnl-tiny \(vocab_size 256\): the tokenizer has 50,257 tokens, more than the model's vocab_size of 256/);
    const { config: tnl } = modelConfig({ ...tiny, model: { ...tiny.model, vocabSize: 50_304 } }, gpt2);
    expect(tnl).toMatchObject({ ...PRESETS["tnl-tiny"], vocabSize: 50_304, padTokenId: 50257, bosTokenId: 50256, eosTokenId: 50256 });

    const run = await train({ ...quiet(cacheDir), config: { ...tiny, vocabSize: 300, model: { ...tiny.model, vocabSize: 320 }, seqLen: 24, batchSize: 2, evalSequences: 2, sampleCount: 0, peakTflops: 1 } });
    expect(run.summary!.parameters).toBe(parameterCount({ ...PRESETS["tnl-tiny"], vocabSize: 320 }));
  });
});

describe("--untied-head", () => {
  it("with --preset tnl-385m --model-vocab 50272 gives the 436.4M benchmark shape: untied head, LRPE on layer 0", () => {
    const c = resolveConfig({ overrides: { preset: "tnl-385m", "model.vocabSize": 50_272, "model.tieWordEmbeddings": false } });
    const { config: tnl } = modelConfig(c, gpt2);
    expect(tnl).toMatchObject({ vocabSize: 50_272, dModel: 1024, numLayers: 24, numHeads: 8, gluDim: 2816, tieWordEmbeddings: false, activation: "swish", noScaleEmbedding: false });
    expect(tnl.lrpe).toEqual([true, ...Array<boolean>(23).fill(false)]);
    expect(parameterCount(tnl)).toBe(436_405_248);
    // Without the flag: the preset's tied head (and the tnl-tiny preset's untied one); no preset: tied.
    expect(modelConfig(resolveConfig({ overrides: { preset: "tnl-385m", "model.vocabSize": 50_272 } }), gpt2).config.tieWordEmbeddings).toBe(true);
    expect(modelConfig(resolveConfig({ overrides: { preset: "tnl-tiny", "model.vocabSize": 50_272 } }), gpt2).config.tieWordEmbeddings).toBe(false);
    expect(modelConfig(resolveConfig({}), gpt2).config.tieWordEmbeddings).toBe(true);
    expect(modelConfig(resolveConfig({ overrides: { "model.tieWordEmbeddings": false } }), gpt2).config.tieWordEmbeddings).toBe(false);
    const flag = CLI_FLAGS.find((f) => f.flag === "--untied-head")!;
    expect([flag.key, flag.type, flag.value]).toEqual(["model.tieWordEmbeddings", "flag", false]);
    expect(() => resolveConfig({ overrides: { "model.tieWordEmbeddings": "no" } })).toThrow('--untied-head expected true, false or null, got "no"');
  });
});

describe("throughput and skipped steps", () => {
  it("logs and sums up tokens/s, MFU and the gradient norm, and skips a step whose loss is not finite", async () => {
    const lines: string[] = [];
    const out = join(root, "report");
    const result = await train({ ...quiet(cacheDir), log: (l) => lines.push(l), config: small(data, out, { steps: 4, peakTflops: 0.5, sampleCount: 0 }), nonFiniteSteps: [2] });
    const s = result.summary!;
    expect(result.losses.map((l) => l.step)).toEqual([1, 3, 4]);
    expect(s.skipped_steps).toBe(1);
    expect(lines.some((l) => /warning: step 2 skipped: loss NaN, gradient norm NaN \(1 skipped so far\)/.test(l))).toBe(true);
    expect(lines.some((l) => /trained 4 steps \(1 skipped: loss or gradient not finite\)/.test(l))).toBe(true);
    expect(s.mfu).toBeCloseTo((6 * s.parameters * s.tokens_per_second) / 0.5e12, 12);
    expect([s.peak_tflops, s.peak_tflops_source]).toEqual([0.5, "--peak-tflops"]);
    expect(s.grad_norm).toBeGreaterThan(0);
    const log = readFileSync(join(out, "log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(log.filter((r) => r.kind === "skip")).toMatchObject([{ step: 2, loss: null, grad_norm: null }]);
    for (const r of log.filter((r) => r.kind === "train")) {
      expect(r.mfu).toBeCloseTo((6 * s.parameters * (r.tokens_per_s as number)) / 0.5e12, 12);
      expect(r.grad_norm).toBeGreaterThan(0);
    }
  });

  it("gives up when steps in a row are not finite", async () => {
    const steps = Array.from({ length: 10 }, (_, i) => i + 1);
    await expect(train({ ...quiet(cacheDir), config: small(data, join(root, "nan"), { steps: 12 }), nonFiniteSteps: steps })).rejects.toThrow(
      /training diverged at step 10: 10 steps in a row had a loss or gradient that is not finite; lower the learning rate \(--lr, now 0.003\)/,
    );
  });

  it("takes the peak rate from --peak-tflops, 790 on cuda, and a measured matmul rate elsewhere", async () => {
    const cpu = await createBackend("cpu");
    expect(await peakTflops(cpu, 2)).toEqual({ tflops: 2, source: "--peak-tflops" });
    expect(await peakTflops({ name: "cuda" } as Backend, null)).toMatchObject({ tflops: CUDA_PEAK_TFLOPS });
    const measured = await peakTflops(cpu, null);
    expect(measured.source).toBe("cpu default: f32 512×512 matmul rate measured at start");
    expect(measured.tflops).toBeGreaterThan(1e-4);
    expect([0.5512, 0.0123, 0.0000123, NaN].map(formatMfu)).toEqual(["55.1%", "1.2%", "0.0012%", "-"]);
  });
});
