import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tokenizerProgram } from "../src/command.js";
import { loadTokenizerJson } from "../src/index.js";
import { corpus } from "./helpers.js";

const run = (...args: string[]) => tokenizerProgram().configureOutput({ writeErr: () => {} }).parseAsync(args, { from: "user" });

describe("tokenizer command", () => {
  it("trains, encodes a file to a JSON array and decodes it back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tokenizer-cli-"));
    const [a, b, text] = ["a.txt", "b.txt", "held-out.txt"].map((f) => join(dir, f));
    writeFileSync(a, corpus().slice(0, 150_000));
    writeFileSync(b, corpus().slice(150_000, 300_000));
    writeFileSync(text, `${corpus().slice(-20_000)}<|endoftext|> 日本語 👍🏽`);
    const json = join(dir, "tokenizer.json");
    await run("train", "--data", a, b, "--vocab-size", "700", "--out", json, "--special", "<|endoftext|>");
    const tok = loadTokenizerJson(readFileSync(json, "utf8"));
    expect(tok.vocabSize).toBe(700);

    const ids = join(dir, "ids.json");
    await run("encode", "--tokenizer", json, "--in", text, "--out", ids);
    const encoded = JSON.parse(readFileSync(ids, "utf8")) as number[];
    expect(encoded).toEqual(tok.encode(readFileSync(text, "utf8")));
    expect(encoded).toContain(0);

    const decoded = join(dir, "decoded.txt");
    await run("decode", "--tokenizer", json, "--ids", ids, "--out", decoded);
    expect(readFileSync(decoded, "utf8")).toBe(readFileSync(text, "utf8"));

    writeFileSync(ids, "[1, 2, 70000]");
    await expect(run("decode", "--tokenizer", json, "--ids", ids)).rejects.toThrow("ids[2]: expected a token id in [0, 700), got 70000");
  });

  it("refuses a bad --vocab-size before doing any work", async () => {
    await expect(run("train", "--data", "x.txt", "--vocab-size", "lots", "--out", "t.json")).rejects.toThrow(/expected a positive integer, got "lots"/);
  });
});
