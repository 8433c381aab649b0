import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { saveTokenizerJson, trainBpe } from "@lightning-ts/tokenizer";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../src/cli-main.js";
import { FIXTURE_DIR, fixture, maxAbsDiff, readF32 } from "./fixture.js";

const tmp = mkdtempSync(join(tmpdir(), "tnl-cli-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function tnl(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
  return { code, out, err };
}

function writeJson(name: string, value: unknown): string {
  const path = join(tmp, name);
  writeFileSync(path, JSON.stringify(value));
  return path;
}

describe("tnl info", () => {
  it("summarises config, parameters and memory", async () => {
    const r = await tnl("info", "--model", FIXTURE_DIR);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/vocab 256, d_model 64, 2 layers, 4 heads \(head dim 16\)/);
    expect(r.out).toMatch(/parameters +141,376/);
    expect(r.out).toMatch(/stored as F32/);
    const j: unknown = JSON.parse((await tnl("info", "--model", FIXTURE_DIR, "--json")).out);
    expect(j).toMatchObject({ parameters: 141376, storedDtypes: ["F32"], stateBytesPerSequence: 12288 });
  });

  it("reports a missing directory in one line", async () => {
    const r = await tnl("info", "--model", join(tmp, "missing"));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^tnl: model directory .*missing does not exist\n$/);
  });
});

describe("tnl logits", () => {
  it("writes float32 little-endian [B, T, V] matching the fixture", async () => {
    const out = join(tmp, "logits.bin");
    const r = await tnl("logits", "--model", FIXTURE_DIR, "--ids", writeJson("ids.json", fixture.input_ids), "--out", out);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ shape: [2, 37, 256], dtype: "float32", out });
    const buf = readFileSync(out);
    const got = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    expect(maxAbsDiff(got, readF32("logits.bin"))).toBeLessThanOrEqual(1e-4);
  });

  it("refuses ids outside the vocabulary, ragged rows and a missing ids file", async () => {
    const out = join(tmp, "x.bin");
    const bad = await tnl("logits", "--model", FIXTURE_DIR, "--ids", writeJson("bad.json", [[1, 256]]), "--out", out);
    expect(bad).toMatchObject({ code: 1, err: "tnl: token id 256 at [0, 1] is outside the vocabulary [0, 256)\n" });
    const ragged = await tnl("logits", "--model", FIXTURE_DIR, "--ids", writeJson("ragged.json", [[1, 2], [3]]), "--out", out);
    expect(ragged.err).toMatch(/row 1 has 1 tokens, row 0 has 2/);
    const missing = await tnl("logits", "--model", FIXTURE_DIR, "--ids", join(tmp, "none.json"), "--out", out);
    expect(missing).toMatchObject({ code: 1, err: expect.stringMatching(/--ids: file .*none.json does not exist/) as unknown });
  });

  it("refuses a checkpoint whose shapes do not match its config, and a config it cannot honour", async () => {
    const dir = join(tmp, "mismatch");
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(FIXTURE_DIR, "model.safetensors"), join(dir, "model.safetensors"));
    const config = JSON.parse(readFileSync(join(FIXTURE_DIR, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, vocab_size: 300 }));
    const ids = writeJson("ok.json", [[1, 2]]);
    const r = await tnl("logits", "--model", dir, "--ids", ids, "--out", join(tmp, "y.bin"));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/"model.embed_tokens.weight" is \[256, 64\] but config.json implies \[300, 64\]/);
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, gate_dim: 16 }));
    expect((await tnl("info", "--model", dir)).err).toMatch(/gate_dim.*not supported/);
  });
});

describe("tnl generate", () => {
  it("greedy from prompt ids reproduces the fixture", async () => {
    const r = await tnl("generate", "--model", FIXTURE_DIR, "--prompt-ids", JSON.stringify(fixture.prompt_ids), "--max-tokens", "10", "--stop-ids", "");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ ids: fixture.generated_ids_cached, finish: ["length", "length"] });
  });

  it("samples reproducibly with a seed, as JSON events, and stops at stop ids", async () => {
    const args = ["generate", "--model", FIXTURE_DIR, "--prompt-ids", writeJson("p.json", [[5, 6, 7]]), "--max-tokens", "6"];
    const sample = ["--temperature", "1.2", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.01", "--repetition-penalty", "1.1", "--frequency-penalty", "0.2", "--presence-penalty", "0.1", "--seed", "9", "--json"];
    const a = await tnl(...args, ...sample);
    expect(a.code).toBe(0);
    expect(a.out).toBe((await tnl(...args, ...sample)).out);
    const events = a.out.trim().split("\n").map((l) => JSON.parse(l) as { token: number });
    expect(events).toHaveLength(6);
    expect(events.at(-1)).toMatchObject({ row: 0, index: 5, finishReason: "length" });
    const first = events[0].token;
    const stopped = await tnl(...args, ...sample, "--stop-ids", String(first));
    expect(stopped.out.trim().split("\n").map((l): unknown => JSON.parse(l))).toEqual([{ row: 0, index: 0, token: first, finishReason: "stop" }]);
  });

  it("generates text with --prompt and --tokenizer", async () => {
    // A byte-level BPE with no merges: ids 0..255 are bytes, matching the fixture's vocabulary of 256.
    const tokPath = join(tmp, "tokenizer.json");
    writeFileSync(tokPath, saveTokenizerJson(trainBpe("hello world", { vocabSize: 256 })));
    const args = ["generate", "--model", FIXTURE_DIR, "--prompt", "Hi there", "--tokenizer", tokPath, "--max-tokens", "8", "--stop-ids", ""];
    const r = await tnl(...args);
    expect(r.code).toBe(0);
    expect(r.out.endsWith("\n")).toBe(true);
    // The prompt, then its continuation (the full text, as a text-generation pipeline returns it).
    expect(r.out.startsWith("Hi there")).toBe(true);
    const alone = await tnl(...args, "--no-echo");
    expect(alone.code).toBe(0);
    expect(alone.out.length).toBeGreaterThan(1);
    expect(r.out).toBe("Hi there" + alone.out);
  });

  it("reports bad usage clearly", async () => {
    const m = ["generate", "--model", FIXTURE_DIR];
    expect((await tnl(...m)).err).toBe("tnl: give exactly one of --prompt-ids and --prompt\n");
    expect((await tnl(...m, "--prompt", "hi")).err).toMatch(/--prompt needs --tokenizer/);
    expect((await tnl(...m, "--prompt", "hi", "--tokenizer", join(tmp, "no.json"))).err).toMatch(/--tokenizer: file .* does not exist/);
    expect((await tnl(...m, "--prompt-ids", "[[1, 999]]")).err).toMatch(/token id 999 .* outside the vocabulary/);
    const bad = await tnl(...m, "--prompt-ids", "[[1]]", "--top-p", "2");
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/--top-p must be in \(0, 1\]/);
  });
});

const builtCli = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "cli.js");
describe("the built binary", () => {
  if (!existsSync(builtCli)) console.log(`skipping the spawned-binary test: ${builtCli} is not built (run pnpm --filter @lightning-ts/tnl build)`);
  it.skipIf(!existsSync(builtCli))("runs as a process with an exit code", () => {
    const ok = spawnSync(process.execPath, [builtCli, "info", "--model", FIXTURE_DIR, "--json"], { encoding: "utf8" });
    expect(ok.status).toBe(0);
    expect((JSON.parse(ok.stdout) as { parameters: number }).parameters).toBe(141376);
    const bad = spawnSync(process.execPath, [builtCli, "info", "--model", join(tmp, "nothing")], { encoding: "utf8" });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/does not exist/);
  });
});
