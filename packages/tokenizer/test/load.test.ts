import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { loadTokenizerFile, TokenizerError } from "../src/index.js";
import { tiktokenFile } from "./helpers.js";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures/sentencepiece");

describe("loadTokenizerFile", () => {
  const dir = mkdtempSync(join(tmpdir(), "tokenizer-load-"));
  const file = (name: string, data: string | Uint8Array) => {
    const path = join(dir, name);
    writeFileSync(path, data);
    return path;
  };

  it("decides the kind by the content, whatever the file is called", async () => {
    const model = gunzipSync(readFileSync(join(fixtures, "bpe-identity.model.gz")));
    const sp = await loadTokenizerFile(file("tokenizer.bin", model));
    expect(sp.model.kind).toBe("sentencepiece");
    const tk = await loadTokenizerFile(file("ranks.txt", tiktokenFile("r50k_base")), { pattern: "r50k_base" });
    expect(tk.model.kind).toBe("tiktoken");
    const json = await loadTokenizerFile(file("tok.model", JSON.stringify({ model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] } })));
    expect(json.encode("ab")).toEqual([2]);
  });

  it("names the file and says what it holds when it is no tokenizer", async () => {
    for (const [name, data, what] of [
      ["weights.model", Uint8Array.of(0x50, 0x4b, 0x03, 0x04, 0, 0), "a file of another kind (6 bytes, starting 50 4b 03 04 00 00)"],
      ["empty.json", "", "an empty file"],
      ["notes.model", "hello world\n", "a file of another kind (12 bytes, starting 68 65 6c 6c 6f 20 77 6f)"],
    ] as const) {
      const path = file(name, data);
      const error = await loadTokenizerFile(path).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TokenizerError);
      expect((error as Error).message).toBe(`${path}: expected a tokenizer file (tokenizer.json, a SentencePiece .model or a tiktoken rank file), got ${what}`);
    }
  });

  it("names the file in errors from the SentencePiece loader", async () => {
    const model = gunzipSync(readFileSync(join(fixtures, "bpe-identity.model.gz")));
    const path = file("cut.model", model.subarray(0, 1000));
    await expect(loadTokenizerFile(path)).rejects.toThrow(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
  });
});
