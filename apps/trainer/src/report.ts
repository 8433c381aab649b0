/** What a user sees: a progress bar, a JSON-lines log, the loss chart (SVG and PNG) and summary.json. */
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Resvg } from "@resvg/resvg-js";
import { Presets, SingleBar } from "cli-progress";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export type LogRecord =
  | {
      kind: "train";
      step: number;
      loss: number;
      lr: number;
      grad_norm: number;
      tokens_per_s: number;
      mfu: number;
      seconds: number;
      /** The backend's peak bytes held by tensors so far, and how often its cache was given back for want of memory. */
      peak_bytes?: number;
      cache_releases?: number;
      gpus?: number;
      mode?: string;
      T?: number;
    }
  | { kind: "skip"; step: number; loss: number; grad_norm: number }
  | { kind: "eval"; step: number; loss: number; perplexity: number; bits_per_byte: number; seconds: number }
  | { kind: "checkpoint" | "init"; step: number; dir: string }
  | { kind: "start" | "resume" | "end"; step: number; [key: string]: unknown };

export class RunLog {
  constructor(readonly file: string) {}

  write(record: LogRecord): void {
    appendFileSync(this.file, JSON.stringify({ time: new Date().toISOString(), ...record }) + "\n");
  }
}

/**
 * A duration for people: "42s", "4m05s", "1h02m". Rounded once, before it is split into units, so
 * 299.6 s reads "5m00s", never "4m60s".
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/**
 * The held-out figure of the progress line. Evaluations during training read a fixed subset of the
 * held-out text (`evalSequences` windows), the final one all of it, so the line says which.
 */
export function progressHeldout(e: { loss: number; bitsPerByte: number; tokens: number }): string {
  return `${e.loss.toFixed(3)} (${e.bitsPerByte.toFixed(2)} bits/byte, subset of ${e.tokens.toLocaleString("en")} tokens)`;
}

/** MFU for people: "12.3%", or "0.0012%" for the small fractions of a CPU run of a tiny model. */
export function formatMfu(mfu: number): string {
  if (!Number.isFinite(mfu)) return "-";
  const percent = mfu * 100;
  return `${percent >= 1 ? percent.toFixed(1) : percent.toPrecision(2)}%`;
}

export function progressBar(total: number, start: number): SingleBar {
  const bar = new SingleBar(
    {
      format: "train {bar} step {value}/{total} | loss {loss} | held-out {heldout} | {tps} tok/s | MFU {mfu} | grad norm {gnorm} | {eta_formatted} left",
      // cli-progress's own formatter rounds the seconds after splitting off the minutes ("4m60s").
      // Its ETA is a number of seconds, or "NULL"/"INF" before it can tell.
      formatTime: (t) => formatDuration(Number(t)),
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 20,
      // Without a terminal (CI, pipes) print a plain line now and then instead of redrawing.
      noTTYOutput: true,
      notTTYSchedule: 15_000,
    },
    Presets.shades_classic,
  );
  bar.start(total, start, { loss: "-", heldout: "-", tps: "-", mfu: "-", gnorm: "-" });
  return bar;
}

/** Train loss per step and held-out loss per evaluation, as SVG and PNG. */
export async function writeLossChart(dir: string, train: { step: number; loss: number }[], heldout: { step: number; loss: number }[]): Promise<{ svg: string; png: string }> {
  const values = [...train.map((p) => ({ ...p, split: "train" })), ...heldout.map((p) => ({ ...p, split: "held-out" }))];
  const spec: TopLevelSpec = {
    title: "TNL training loss",
    width: 640,
    height: 320,
    data: { values },
    mark: { type: "line", point: { size: 20 } },
    encoding: {
      x: { field: "step", type: "quantitative", title: "step" },
      y: { field: "loss", type: "quantitative", title: "cross-entropy (nats per token)", scale: { zero: false } },
      color: { field: "split", type: "nominal", title: null },
    },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  const svg = await view.toSVG();
  const svgFile = join(dir, "loss.svg");
  const pngFile = join(dir, "loss.png");
  writeFileSync(svgFile, svg);
  const png = new Resvg(svg, { fitTo: { mode: "width", value: 1400 }, background: "white", font: { loadSystemFonts: true } }).render().asPng();
  writeFileSync(pngFile, png);
  return { svg: svgFile, png: pngFile };
}

export interface Summary {
  heldout_bits_per_byte: number;
  unigram_bits_per_byte: number;
  heldout_loss: number;
  heldout_perplexity: number;
  /** Tokens of the whole group (every rank's) per second of training. */
  tokens_per_second: number;
  /** 6 · parameters · tokens/s ÷ (the peak rate × gpus) (throughput.ts). */
  mfu: number;
  /** Processes (GPUs) that trained: 1 without --gpus. */
  gpus: number;
  /** "sp" with --sequence-parallel above 1, else "dp" (data parallel, or one process). */
  mode: "dp" | "sp";
  /** Tokens per sequence (--seq-len). */
  T: number;
  peak_tflops: number;
  peak_tflops_source: string;
  /** The gradient norm (before clipping) of the last step taken; null if none was. */
  grad_norm: number | null;
  /** Steps skipped because their loss or gradient was not finite. */
  skipped_steps: number;
  tokens_per_step: number;
  /** Sequences per forward/backward pass. */
  micro_batch: number;
  train_seconds: number;
  steps: number;
  parameters: number;
  backend: string;
  device: string;
  /** The dtype the model computed and stored its weights in (--dtype, or the backend's default). */
  dtype: string;
  corpus: string;
  /** The tokenizer's vocabulary. */
  vocab_size: number;
  /** Rows of the model's embedding (≥ vocab_size). */
  model_vocab_size: number;
  special_tokens: { pad: number; bos: number; eos: number };
  samples: string[];
}

export function writeSummary(dir: string, summary: Summary): string {
  const file = join(dir, "summary.json");
  writeFileSync(file, JSON.stringify(summary, null, 2) + "\n");
  return file;
}
