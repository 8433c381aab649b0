#!/usr/bin/env node
/**
 * Compares the per-step training losses of our trainer (its log.jsonl) with those of the PyTorch run
 * (torch-tnl-train.py's JSON): the mean over steps FROM..TO of |Δloss| / loss, the PyTorch loss
 * being the reference. Exits 1 above --max (default 2%), or when a step of the range is missing
 * on either side; 2 on bad arguments.
 *
 *   node tools/compare/compare-losses.mjs --ours runs/compare/ours/log.jsonl --torch runs/compare/torch.json
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const USAGE = "usage: compare-losses.mjs --ours LOG.jsonl --torch TORCH.json [--from 100] [--to 200] [--max 0.02]";

function fail(message, code = 1) {
  process.stderr.write(`compare-losses: ${message}\n`);
  process.exit(code);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      ours: { type: "string" },
      torch: { type: "string" },
      from: { type: "string", default: "100" },
      to: { type: "string", default: "200" },
      max: { type: "string", default: "0.02" },
    },
  }));
} catch (err) {
  fail(`${err.message}\n${USAGE}`, 2);
}
if (!args.ours || !args.torch) fail(USAGE, 2);
const [from, to, max] = [Number(args.from), Number(args.to), Number(args.max)];
if (!Number.isInteger(from) || !Number.isInteger(to) || from > to || !(max >= 0)) fail(`bad --from/--to/--max\n${USAGE}`, 2);

/** Step → training loss from our log.jsonl; a resumed run repeats steps, and the last record wins. */
function oursLosses(file) {
  const losses = new Map();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    const r = JSON.parse(line);
    if (r.kind === "train") losses.set(r.step, r.loss);
    else if (r.kind === "skip") losses.delete(r.step);
  }
  return losses;
}

/** Step → training loss from torch-tnl-train.py's JSON ({ losses: [{ step, loss }, …] }). */
function torchLosses(file) {
  const json = JSON.parse(readFileSync(file, "utf8"));
  if (!Array.isArray(json.losses)) fail(`${file}: no "losses" list`);
  return new Map(json.losses.map((r) => [r.step, r.loss]));
}

const ours = oursLosses(args.ours);
const torch = torchLosses(args.torch);
const rows = [];
const missing = [];
for (let step = from; step <= to; step++) {
  const a = ours.get(step);
  const b = torch.get(step);
  if (!Number.isFinite(a) || !Number.isFinite(b)) missing.push(step);
  else rows.push({ step, ours: a, torch: b, rel: Math.abs(a - b) / b });
}
if (missing.length > 0) fail(`steps ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ", …" : ""} lack a finite loss in ${args.ours} or ${args.torch} (${missing.length} of ${to - from + 1})`);

const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;
const meanRel = mean(rows.map((r) => r.rel));
const meanAbs = mean(rows.map((r) => Math.abs(r.ours - r.torch)));
const worst = rows.reduce((w, r) => (r.rel > w.rel ? r : w));
const pct = (x) => `${(100 * x).toFixed(2)}%`;
console.log("step      ours     torch    |Δ|/loss");
for (const r of rows.filter((r, i) => i % 10 === 0 || r === rows[rows.length - 1])) {
  console.log(`${String(r.step).padStart(4)}  ${r.ours.toFixed(4).padStart(8)}  ${r.torch.toFixed(4).padStart(8)}  ${pct(r.rel).padStart(8)}`);
}
console.log(`steps ${from}–${to}: mean |Δloss|/loss ${pct(meanRel)} (mean |Δloss| ${meanAbs.toFixed(4)}; worst ${pct(worst.rel)} at step ${worst.step}); limit ${pct(max)}`);
if (meanRel > max) fail(`mean |Δloss|/loss ${pct(meanRel)} is above ${pct(max)}`);
console.log("PASS");
