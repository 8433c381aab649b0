/** The terminal table and the --json file. */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { BenchResult } from "./suite.js";

function cell(value: unknown, field: string): string {
  if (value === null || value === undefined) return "–";
  if (typeof value === "boolean") return value ? "yes" : "FAILED";
  if (typeof value === "string") return value;
  if (typeof value !== "number") return JSON.stringify(value);
  if (field === "rel_err") return value.toExponential(1);
  if (field === "ratio_vs_openblas") return `${(value * 100).toFixed(0)}%`;
  if (Number.isInteger(value)) return String(value);
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

export function table(results: readonly BenchResult[], columns: readonly (readonly [string, string])[]): string {
  const rows = results.map((r) => columns.map(([, field]) => cell(r[field], field)));
  const widths = columns.map(([header], i) => Math.max(header.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(" | ")} |`;
  return [line(columns.map(([h]) => h)), `|${widths.map((w) => "-".repeat(w + 1) + ":").join("|")}|`, ...rows.map(line)].join("\n");
}

/** A relative output path is taken from where `pnpm bench` was typed (pnpm's INIT_CWD), not apps/bench. */
export function outputPath(file: string): string {
  return resolve(process.env.INIT_CWD ?? process.cwd(), file);
}

/** Writes the results as JSON (see `outputPath`). */
export function writeJson(file: string, results: readonly BenchResult[]): void {
  mkdirSync(dirname(outputPath(file)), { recursive: true });
  writeFileSync(outputPath(file), `${JSON.stringify(results, null, 2)}\n`);
}
