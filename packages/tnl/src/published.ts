/**
 * The models OpenNLPLab publishes, by shape (docs/ALGORITHM.md E.5, E.9): what each needs in memory
 * before a token is read (parameters in bf16) and per sequence while decoding (the recurrent state,
 * whatever the length). `tnl presets` prints this table.
 */
import { parameterCount, PRESETS, type PresetName, stateBytesPerSequence, type TnlConfig } from "./config.js";

export interface PublishedModel {
  /** Our name (a `PRESETS` key where we can build the model). */
  name: string;
  /** The model's published name (OpenNLPLab on Hugging Face). */
  title: string;
  /** The preset with this shape; absent when we cannot build the model (TNL3-15B). */
  preset?: PresetName;
  dModel: number;
  numLayers: number;
  numHeads: number;
  gluDim: number;
  vocabSize: number;
  parameters: number;
  /** f32 recurrent state of one sequence: per layer H·hd·hd, doubled on the LRPE layer. */
  stateBytesPerSequence: number;
  /** Parameters × 2. */
  bf16Bytes: number;
  /** How the weights are published, where docs/ALGORITHM.md E.9 records it. */
  files?: string;
  note?: string;
}

function fromPreset(name: PresetName, title: string, files?: string, note?: string): PublishedModel {
  const c: TnlConfig = PRESETS[name];
  const parameters = parameterCount(c);
  return {
    name,
    title,
    preset: name,
    dModel: c.dModel,
    numLayers: c.numLayers,
    numHeads: c.numHeads,
    gluDim: c.gluDim,
    vocabSize: c.vocabSize,
    parameters,
    stateBytesPerSequence: stateBytesPerSequence(c),
    bf16Bytes: 2 * parameters,
    ...(files ? { files } : {}),
    ...(note ? { note } : {}),
  };
}

/**
 * TNL3-15B by the formula of docs/ALGORITHM.md E.5: V·d + L·(3d² + d² + 2·16·d + 3·d·glu) plus the
 * LRPE θ of layer 0. Its token mixer (separate q/k/v, a rank-16 output gate) is not implemented.
 */
function tnl3_15b(): PublishedModel {
  const [V, d, L, H, glu, gate] = [100280, 5120, 42, 40, 15360, 16];
  const parameters = V * d + L * (4 * d * d + 2 * gate * d + 3 * d * glu) + d;
  const hd = d / H;
  return {
    name: "tnl3-15b",
    title: "TransNormerLLM3-15B (intermediate checkpoints)",
    dModel: d,
    numLayers: L,
    numHeads: H,
    gluDim: glu,
    vocabSize: V,
    parameters,
    stateBytesPerSequence: (L + 1) * H * hd * hd * 4,
    bf16Bytes: 2 * parameters,
    files: "11 .bin shards + index, tiktoken ~100k vocabulary",
    note: "shape only: its gate_dim token mixer is not implemented, so it cannot be loaded",
  };
}

/**
 * Every published shape, smallest first.
 *
 * @example
 * for (const m of publishedModels()) console.log(m.name, m.parameters, m.bf16Bytes, m.stateBytesPerSequence);
 */
export function publishedModels(): PublishedModel[] {
  return [
    fromPreset("tnl-385m", "TransNormerLLM-385M", undefined, "sizes of the ablation configs (GPT-2 BPE); the main 385M config.json was not read"),
    fromPreset("tnl-1b", "TransNormerLLM-1B", "one bf16 pytorch_model.bin (2.04 GB)"),
    fromPreset("tnl2-1b", "TransNormerLLM2-1B"),
    fromPreset("tnl2-3b", "TransNormerLLM2-3B"),
    fromPreset("tnl-7b", "TransNormerLLM-7B", "3 .bin shards + pytorch_model.bin.index.json"),
    tnl3_15b(),
  ];
}
