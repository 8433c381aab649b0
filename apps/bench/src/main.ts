/**
 * lightning-ts benchmarks: `bench <suite> [options]`, e.g. `pnpm bench matmul --sizes 512,2048`.
 * Prints a markdown table on stdout (progress on stderr) and, with --json FILE, the results in the
 * docs/PERFORMANCE.md "How to report" format.
 */
import { BACKEND_NAMES, type BackendName, isBackendName } from "@lightning-ts/backends";
import { Command } from "commander";
import { outputPath, table, writeJson } from "./report.js";
import type { CommonOptions } from "./suite.js";
import { SUITES } from "./suites/index.js";

const program = new Command("bench")
  .description("lightning-ts benchmarks: every case is checked against a float64 oracle before it is timed")
  .showHelpAfterError();

for (const suite of SUITES) {
  const command = program
    .command(suite.name)
    .description(suite.description)
    .option("--backends <list>", `backends, comma-separated (${BACKEND_NAMES.join(", ")})`, "cpu")
    .option("--warmup <n>", "untimed runs before timing", (v) => Number.parseInt(v, 10), suite.defaults?.warmup ?? 2)
    .option("--reps <n>", "timed repetitions (the median is reported)", (v) => Number.parseInt(v, 10), suite.defaults?.reps ?? 7)
    .option("--json <file>", "where to write the results as JSON", `runs/bench/${suite.name}.json`);
  suite.configure(command);
  command.action(async (raw: Record<string, unknown>) => {
    const options: CommonOptions = {
      backends: String(raw.backends).split(","),
      warmup: raw.warmup as number,
      reps: raw.reps as number,
      json: raw.json as string | undefined,
    };
    const unknown = options.backends.filter((name) => !isBackendName(name));
    if (unknown.length) command.error(`unknown backend(s): ${unknown.join(", ")}; known: ${BACKEND_NAMES.join(", ")}`);
    const backends = options.backends as BackendName[];
    const results = await suite.run({ backends, options, log: (line) => console.error(line) }, raw);
    console.log(table(results, suite.columns));
    if (options.json) {
      writeJson(options.json, results);
      console.error(`results written to ${outputPath(options.json)}`);
    }
    if (results.some((r) => !r.ok)) process.exitCode = 1;
  });
}

// `pnpm run bench -- matmul` passes the "--" through; drop it so the suite name is seen.
const argv = process.argv[2] === "--" ? [...process.argv.slice(0, 2), ...process.argv.slice(3)] : process.argv;
await program.parseAsync(argv);
