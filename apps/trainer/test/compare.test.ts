/**
 * What the comparison with the official PyTorch code (tools/compare) takes from a run: the initial
 * weights as a Hugging Face model (--save-init), a start from given weights (--init-from), the
 * token ids of every step (--dump-batches), a profile of one step (--profile), and the loss check.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { collectTensors } from "@lightning-ts/tensor";
import { readSafetensorsHeader } from "@lightning-ts/tensor/node";
import { initParams, loadCheckpoint, type TnlParams } from "@lightning-ts/tnl";
import { loadTokenizerFile } from "@lightning-ts/tokenizer";
import { describe, expect, it } from "vitest";
import { trainingBatch, type BatchDumpInfo } from "../src/batches.js";
import type { TrainConfig } from "../src/config.js";
import { prepare } from "../src/prepare.js";
import type { LogRecord } from "../src/report.js";
import { readShardIndex, ShardSource } from "../src/shards.js";
import { modelConfig, train } from "../src/train.js";
import { corpus, quiet as quietIn, small, tempRoot } from "./helpers.js";

const root = tempRoot("trainer-compare");
const quiet = quietIn(join(root, "cache"));
const book = join(root, "book.txt");
writeFileSync(book, corpus);
const tokens = join(root, "tokens");
await prepare({ log: () => {}, inputs: [book], out: tokens, trainTokenizer: 300, heldoutFraction: 0.1 });

/** The small test model on the shards, bf16 with an untied head (as the comparison runs). */
const config = (out: string, extra: Record<string, unknown> = {}): TrainConfig => small(tokens, join(root, out), { dtype: "bf16", "model.tieWordEmbeddings": false, sampleCount: 0, ...extra });

async function values(params: TnlParams): Promise<number[][]> {
  return Promise.all(collectTensors(params).map(async (t) => [...(await t.data())]));
}

const logOf = (out: string) =>
  readFileSync(join(root, out, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as LogRecord);

describe("--save-init, --init-from, --dump-batches", () => {
  it("save the initial weights (BF16, untied head) that load back bit for bit, with the trainer config beside them", async () => {
    const c = config("a");
    await train({ ...quiet, config: c, saveInit: true, dumpBatches: join(root, "a", "batches.u32") });
    const init = join(root, "a", "init");
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "trainer-config.json"]) expect(existsSync(join(init, f)), f).toBe(true);
    expect(JSON.parse(readFileSync(join(init, "trainer-config.json"), "utf8"))).toEqual(c);
    const hf = JSON.parse(readFileSync(join(init, "config.json"), "utf8")) as Record<string, unknown>;
    expect(hf).toMatchObject({ model_type: "transnormer", tie_word_embeddings: false, torch_dtype: "bfloat16", architectures: ["TransnormerForCausalLM"], linear_use_lrpe_list: [1, 0] });
    const header = await readSafetensorsHeader(join(init, "model.safetensors"));
    expect(header.entries.map((e) => e.name)).toContain("lm_head.weight");
    expect(new Set(header.entries.map((e) => e.dtype))).toEqual(new Set(["BF16"]));

    const loaded = await loadCheckpoint(init, { dtype: "bf16" });
    const tokenizer = await loadTokenizerFile(join(tokens, "tokenizer.json"));
    const fresh = initParams(modelConfig(c, tokenizer).config, { seed: c.seed, dtype: "bf16" });
    expect(await values(loaded.params)).toEqual(await values(fresh));
    expect(logOf("a").find((r) => r.kind === "init")).toMatchObject({ step: 0, dir: init });
  });

  it("log every step's loss, and dump exactly the batches the run trained on", () => {
    const steps = logOf("a").filter((r): r is Extract<LogRecord, { kind: "train" }> => r.kind === "train");
    expect(steps.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    for (const r of steps) expect(Number.isFinite(r.loss) && r.loss > 0).toBe(true);

    const c = config("a");
    const file = join(root, "a", "batches.u32");
    const info = JSON.parse(readFileSync(`${file}.json`, "utf8")) as BatchDumpInfo;
    expect(info).toEqual({ format: "lightning-ts.batches/1", dtype: "uint32", rows: 2, span: 25, first_step: 1 });
    const bytes = readFileSync(file);
    const ids = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    expect(ids.length).toBe(8 * 2 * 25);
    const source = new ShardSource(tokens, readShardIndex(tokens), "train");
    for (let step = 0; step < 8; step++) {
      expect([...ids.subarray(step * 50, (step + 1) * 50)]).toEqual([...trainingBatch(source, c.seed, step, 2, 24)]);
    }
    source.close();
  });

  it("start from given weights: the saved initial weights give the same losses, bit for bit", async () => {
    const again = await train({ ...quiet, config: config("b", { seed: 1 }), initFrom: join(root, "a", "init") });
    const first = logOf("a").filter((r) => r.kind === "train").map((r) => ({ step: r.step, loss: (r as { loss: number }).loss }));
    expect(again.losses).toEqual(first);
    expect(logOf("b")[0]).toMatchObject({ kind: "start", init_from: join(root, "a", "init") });
    // The weights of the end of run a are not its start: the first loss is lower.
    const later = await train({ ...quiet, config: config("c", { steps: 3 }), initFrom: join(root, "a", "model") });
    expect(later.losses[0].loss).toBeLessThan(first[0].loss);
  });

  it("refuse weights of another model, and both flags with --resume", async () => {
    await expect(train({ ...quiet, config: config("d", { "model.dModel": 64 }), initFrom: join(root, "a", "init") })).rejects.toThrow(
      /--init-from .*init: its config\.json describes another model than this run's settings \(dModel 32 there, 64 here; hiddenDim 32 there, 64 here\)/,
    );
    await expect(train({ ...quiet, config: config("d", { "model.tieWordEmbeddings": null }), initFrom: join(root, "a", "init") })).rejects.toThrow(/tieWordEmbeddings false there, true here/);
    await expect(train({ ...quiet, config: config("d"), initFrom: join(root, "nowhere") })).rejects.toThrow(/^--init-from: .*nowhere cannot be loaded: model directory .* does not exist/);
    await expect(train({ ...quiet, config: config("a"), resume: join(root, "a"), saveInit: true })).rejects.toThrow("--save-init: a resumed run continues from its checkpoint's weights; give it without --resume");
  });
});

describe("--profile", () => {
  it("writes the op profile of the second step and prints its table", async () => {
    const lines: string[] = [];
    const file = join(root, "profile.json");
    await train({ ...quiet, log: (l) => lines.push(l), config: config("p", { steps: 3, warmupSteps: 1 }), profile: file });
    const profile = JSON.parse(readFileSync(file, "utf8")) as { step: number; rows: { op: string; calls: number }[]; backend: string };
    expect(profile.step).toBe(2);
    expect(profile.backend).toBe("cpu");
    expect(profile.rows.map((r) => r.op)).toContain("matmul");
    expect(lines.some((l) => l.startsWith("\nprofile of step 2 (cpu)"))).toBe(true);
  });
});

describe("tools/compare/compare-losses.mjs", () => {
  const script = join(import.meta.dirname, "..", "..", "..", "tools", "compare", "compare-losses.mjs");
  const ours = join(root, "ours.jsonl");
  const loss = (step: number) => 10 * Math.exp(-step / 80) + 2;
  writeFileSync(
    ours,
    [{ kind: "start", step: 0 }, ...Array.from({ length: 200 }, (_, i) => ({ kind: "train", step: i + 1, loss: loss(i + 1) })), { kind: "eval", step: 200, loss: 1 }].map((r) => JSON.stringify(r)).join("\n") + "\n",
  );
  const torchFile = (factor: number, steps = 200) => {
    const file = join(root, `torch-${factor}-${steps}.json`);
    writeFileSync(file, JSON.stringify({ losses: Array.from({ length: steps }, (_, i) => ({ step: i + 1, loss: loss(i + 1) * factor })) }));
    return file;
  };
  const run = (torch: string, extra: string[] = []) => spawnSync(process.execPath, [script, "--ours", ours, "--torch", torch, ...extra], { encoding: "utf8" });

  it("passes within 2% over steps 100–200 and fails above, naming the mean", () => {
    const pass = run(torchFile(1.01));
    expect(pass.status).toBe(0);
    expect(pass.stdout).toMatch(/steps 100–200: mean \|Δloss\|\/loss 0\.99% .*limit 2\.00%\nPASS\n$/);
    const failed = run(torchFile(1.03));
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/mean \|Δloss\|\/loss 2\.91% is above 2\.00%/);
    expect(run(torchFile(1.03), ["--max", "0.03"]).status).toBe(0);
  });

  it("fails when a step of the range is missing, and on bad arguments", () => {
    const short = run(torchFile(1, 150));
    expect(short.status).toBe(1);
    expect(short.stderr).toMatch(/steps 151, 152, .* lack a finite loss .* \(50 of 101\)/);
    expect(run(torchFile(1), ["--from", "x"]).status).toBe(2);
    expect(spawnSync(process.execPath, [script], { encoding: "utf8" }).status).toBe(2);
  });
});

describe("tools/compare/torch-tnl-train.py", () => {
  const script = join(import.meta.dirname, "..", "..", "..", "tools", "compare", "torch-tnl-train.py");
  it.runIf(spawnSync("python3", ["--version"]).status === 0)("compiles", () => {
    expect(statSync(script).size).toBeGreaterThan(0);
    execFileSync("python3", ["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", script]);
  });
});
