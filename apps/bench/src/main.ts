/**
 * lightning-ts benchmarks: `bench <suite> [options]`, e.g. `pnpm bench matmul --sizes 512,2048`.
 * Prints a markdown table on stdout (progress on stderr) and, with --json FILE, the results in the
 * docs/PERFORMANCE.md "How to report" format.
 */
import { BACKEND_NAMES, type BackendName, isBackendName } from "@lightning-ts/backends";
import { Command } from "commander";
import { addClocks, CLOCK_COLUMNS, startClocks } from "./gpu-clocks.js";
import { outputPath, table, writeJson } from "./report.js";
import { type BenchResult, type CommonOptions, DEFAULT_DEVICE_WARMUP_MS, setDeviceWarmupMs } from "./suite.js";
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
    .option("--json <file>", "where to write the results as JSON", `runs/bench/${suite.name}.json`)
    .option(
      "--warmup-ms <ms>",
      "device-timed loops on a GPU backend: keep warming up for at least this long as well (a GPU's driver raises its clocks only after a while under load; 0: the count alone)",
      (v) => Number(v),
      DEFAULT_DEVICE_WARMUP_MS,
    )
    .option("--gpu-clocks [index]", "sample GPU index's (default 0) SM and memory clocks with nvidia-smi while timing; each timed row gets them");
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
    const log = (line: string) => console.error(line);
    try {
      setDeviceWarmupMs(raw.warmupMs as number);
    } catch (err) {
      command.error((err as Error).message);
    }
    const gpuClocks = raw.gpuClocks as string | boolean | undefined;
    if (typeof gpuClocks === "string" && !/^\d+$/.test(gpuClocks)) command.error(`--gpu-clocks: expected a GPU index (a non-negative integer), got '${gpuClocks}'`);
    const sampler = await startClocks(gpuClocks, log);
    let results: BenchResult[];
    try {
      results = await suite.run({ backends, options, log }, raw);
    } finally {
      await sampler?.stop();
    }
    if (sampler) addClocks(results, sampler, log);
    console.log(table(results, sampler ? [...suite.columns, ...CLOCK_COLUMNS] : suite.columns));
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
