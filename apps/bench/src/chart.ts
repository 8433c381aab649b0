/** SVG line charts of benchmark results, drawn with Vega-Lite (rendered headless, no browser). */
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export interface Series {
  /** Line label, e.g. "chunked (cpu)". */
  series: string;
  x: number;
  y: number | null;
}

export interface Panel {
  title: string;
  xTitle: string;
  yTitle: string;
  points: Series[];
  logY?: boolean;
}

/** Panels stacked vertically, one line per series, x on a log2 scale. */
export async function lineChartsSvg(title: string, panels: Panel[]): Promise<string> {
  const spec: TopLevelSpec = {
    title,
    vconcat: panels.map((p) => ({
      title: p.title,
      width: 520,
      height: 240,
      data: { values: p.points.filter((pt) => pt.y !== null) },
      mark: { type: "line", point: true },
      encoding: {
        x: { field: "x", type: "quantitative", title: p.xTitle, scale: { type: "log", base: 2 } },
        y: { field: "y", type: "quantitative", title: p.yTitle, scale: p.logY ? { type: "log" } : { zero: true } },
        color: { field: "series", type: "nominal", title: null },
      },
    })),
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  return view.toSVG();
}

export async function writeLineCharts(file: string, title: string, panels: Panel[]): Promise<void> {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, await lineChartsSvg(title, panels));
}
