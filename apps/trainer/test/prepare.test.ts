/**
 * `pnpm train prepare` and training on its shards: what the shards hold, streaming reads that
 * agree with the tokens in memory, and clear errors for bad corpora and damaged shards.
 */
import { mkdirSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadTokenizerJson } from "@lightning-ts/tokenizer";
import { describe, expect, it } from "vitest";
import { trainingBatch } from "../src/batches.js";
import { documentParts, firstInvalidUtf8, listInputs, readPieces } from "../src/inputs.js";
import { prepare, sha256 } from "../src/prepare.js";
import { arraySource, dtypeFor, readShardIndex, type ShardIndex, ShardSource, ShardWriter } from "../src/shards.js";
import { train } from "../src/train.js";
import { corpus, quiet, small, tempRoot } from "./helpers.js";

const root = tempRoot("trainer-prepare");
const cacheDir = join(root, "cache");
const book = join(root, "book.txt");
writeFileSync(book, corpus);
// Records with non-ASCII text, an empty line and a record with another field first.
const records = [
  { text: "Call me Ishmael. Some years ago — never mind how long precisely —" },
  { id: 7, text: "naïve café, 日本語, 👍🏽 and\nnewlines\n" },
  { text: "The last record." },
];
const jsonl = join(root, "records.jsonl");
writeFileSync(jsonl, records.map((r) => JSON.stringify(r)).join("\n") + "\n\n");
const silent = { log: () => {} };

async function readAll(path: string, chunkBytes?: number): Promise<string> {
  let text = "";
  for await (const part of documentParts({ path, kind: "text", bytes: readFileSync(path).length }, { field: "text", chunkBytes })) text += part.text;
  return text;
}

describe("prepare", () => {
  it("writes uint16 shards of text and JSONL documents, each ended by <|endoftext|>, and an index", async () => {
    const out = join(root, "tokens");
    const index = await prepare({ ...silent, inputs: [jsonl, book], out, trainTokenizer: 300, heldoutFraction: 0.1, shardTokens: 997 });
    const tokenizer = loadTokenizerJson(readFileSync(join(out, "tokenizer.json"), "utf8"));
    const eos = tokenizer.tokenToId("<|endoftext|>")!;
    expect(index).toMatchObject({ dtype: "uint16", vocab_size: 300, document_separator: eos, tokenizer: { file: "tokenizer.json", sha256: sha256(readFileSync(join(out, "tokenizer.json"))) } });
    expect(readShardIndex(out)).toEqual(index);
    // The held-out split is the tail of the book from the first line break at 90% of all input bytes.
    const total = Buffer.byteLength(readFileSync(jsonl, "utf8")) + Buffer.byteLength(corpus);
    const bookCut = Math.floor(total * 0.9) - readFileSync(jsonl).length;
    const cutAt = Buffer.from(corpus).indexOf(10, bookCut) + 1;
    const [trainText, heldoutText] = [Buffer.from(corpus).subarray(0, cutAt).toString(), Buffer.from(corpus).subarray(cutAt).toString()];
    const expected = {
      train: [...records.flatMap((r) => [...tokenizer.encode(r.text), eos]), ...tokenizer.encode(trainText)],
      heldout: [...tokenizer.encode(heldoutText), eos],
    };
    for (const split of ["train", "heldout"] as const) {
      const source = new ShardSource(out, index, split);
      expect([...source.read(0, source.length)]).toEqual(expected[split]);
      source.close();
      expect(index.splits[split].shards.every((s) => s.tokens <= 997)).toBe(true);
    }
    expect(index.splits.train.shards.length).toBeGreaterThan(5);
    expect(index.splits.train.documents).toBe(3);
    expect(index.splits.heldout.documents).toBe(1);
    expect(index.splits.train.bytes + index.splits.heldout.bytes).toBe(total - 1); // the blank last line of the JSONL file is no text
  });

  it("reads files in pieces that end at line breaks and checks them for UTF-8, naming the byte offset", async () => {
    const text = `${corpus.slice(0, 5000)}\n${"x".repeat(3000)}é${"y".repeat(100)}`;
    const file = join(root, "pieces.txt");
    writeFileSync(file, text);
    expect(await readAll(file, 64)).toBe(text);
    const pieces = [];
    for await (const p of readPieces(file, { chunkBytes: 64 })) pieces.push(p);
    expect(pieces.slice(0, -1).every((p) => p.bytes[p.bytes.length - 1] === 10 || p.bytes.length >= 1 << 22)).toBe(true);

    const bad = Buffer.concat([Buffer.from(corpus.slice(0, 700)), Buffer.from([0xc3, 0x28]), Buffer.from(" tail\n")]);
    const badFile = join(root, "latin1.txt");
    writeFileSync(badFile, bad);
    const offset = Buffer.byteLength(corpus.slice(0, 700));
    await expect(readAll(badFile, 100)).rejects.toThrow(`--input: ${badFile} is not UTF-8 text: invalid byte sequence at byte offset ${offset}`);
    await expect(prepare({ ...silent, inputs: [badFile], out: join(root, "bad"), trainTokenizer: 300 })).rejects.toThrow(`at byte offset ${offset}`);
    // A real U+FFFD in the text is not the error.
    expect(firstInvalidUtf8(Buffer.from([0x61, 0x80, 0x62]))).toBe(1);
    expect(firstInvalidUtf8(Buffer.concat([Buffer.from("a\ufffdb"), Buffer.from([0xff])]))).toBe(5);
  });

  it("rejects an empty corpus, a bad JSONL record and an output that is not a corpus", async () => {
    const empty = join(root, "empty.txt");
    writeFileSync(empty, "");
    await expect(prepare({ ...silent, inputs: [empty], out: join(root, "e"), trainTokenizer: 300 })).rejects.toThrow(/--input: the corpus is empty \(1 file, 0 bytes\)/);
    const blank = join(root, "blank.jsonl");
    writeFileSync(blank, "\n\n");
    await expect(prepare({ ...silent, inputs: [blank], out: join(root, "e"), trainTokenizer: 300 })).rejects.toThrow(/the training split holds no text/);
    const broken = join(root, "broken.jsonl");
    writeFileSync(broken, '{"text": "fine"}\n{"body": "no text field"}\n');
    await expect(prepare({ ...silent, inputs: [broken], out: join(root, "e"), trainTokenizer: 300 })).rejects.toThrow(`--input: ${broken} line 2: no string field "text" (--jsonl-field)`);
    writeFileSync(broken, '{"text": "fine"}\n{"text": \n');
    await expect(prepare({ ...silent, inputs: [broken], out: join(root, "e"), trainTokenizer: 300 })).rejects.toThrow(/line 2: not valid JSON/);
    await expect(prepare({ ...silent, inputs: [book], out: join(root, "e"), tokenizer: join(root, "none.json") })).rejects.toThrow(/--tokenizer: .*none\.json does not exist/);
    await expect(prepare({ ...silent, inputs: [book], out: book, trainTokenizer: 300 })).rejects.toThrow(/--out .*book\.txt exists and is not a tokenised corpus/);
    expect(() => listInputs([join(root, "missing")])).toThrow(/--input: .*missing does not exist/);
    await expect(prepare({ ...silent, inputs: [book], out: join(root, "e") })).rejects.toThrow(/^give either --tokenizer FILE or --train-tokenizer VOCAB_SIZE$/);
  });

  it("writes uint32 ids for a vocabulary over 65,536 and reads them back across shard boundaries", () => {
    expect([dtypeFor(65_536), dtypeFor(65_537)]).toEqual(["uint16", "uint32"]);
    const dir = join(root, "wide");
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    const ids = Int32Array.from({ length: 2500 }, (_, i) => (i * 104_729) % 100_000);
    const writer = new ShardWriter(dir, "train", "uint32", 701);
    writer.write(ids.subarray(0, 1000));
    writer.write(ids.subarray(1000));
    const shards = writer.close();
    expect(shards.map((s) => s.tokens)).toEqual([701, 701, 701, 397]);
    const index: ShardIndex = {
      format: "lightning-ts.tokens/1",
      dtype: "uint32",
      vocab_size: 100_000,
      tokenizer: { file: "t.json", sha256: "" },
      document_separator: null,
      heldout_fraction: 0,
      inputs: [],
      splits: { train: { tokens: 2500, bytes: 0, documents: 0, shards }, heldout: { tokens: 0, bytes: 0, documents: 0, shards: [] } },
    };
    const source = new ShardSource(dir, index, "train");
    expect([...source.read(690, 30)]).toEqual([...ids.subarray(690, 720)]);
    expect([...source.read(0, 2500)]).toEqual([...ids]);
    // Training windows from the shards are the windows from the same ids in memory.
    for (const step of [0, 3]) expect(trainingBatch(source, 1, step, 5, 40)).toEqual(trainingBatch(arraySource(ids), 1, step, 5, 40));
    source.close();
  });
});

describe("training on token shards", () => {
  const out = join(root, "corpus");

  it("trains on prepared shards, resumes exactly, and names damaged ones", async () => {
    await prepare({ ...silent, inputs: [book], out, trainTokenizer: 300, heldoutFraction: 0.1, shardTokens: 5000 });
    const result = await train({ ...quiet(cacheDir), config: small(out, join(root, "run"), { steps: 4 }) });
    expect(result.summary!.corpus).toMatch(/uint16 token shards/);
    expect(result.summary!.vocab_size).toBe(300);
    expect(result.summary!.heldout_bits_per_byte).toBeGreaterThan(1);
    expect(result.summary!.unigram_bits_per_byte).toBeGreaterThan(3);
    expect(result.losses).toHaveLength(4);
    // An interrupted run on shards resumes to the same losses, bit for bit.
    await train({ ...quiet(cacheDir), config: small(out, join(root, "split"), { steps: 4 }), stopAfterStep: 2 });
    const rest = await train({ ...quiet(cacheDir), config: small(out, join(root, "ignored")), resume: join(root, "split") });
    expect(rest.losses).toEqual(result.losses.slice(2));

    // A --tokenizer other than the corpus's own.
    const other = join(root, "other.json");
    writeFileSync(other, readFileSync(join(out, "tokenizer.json"), "utf8").replace('"<|pad|>"', '"<|PAD|>"'));
    await expect(train({ ...quiet(cacheDir), config: small(out, join(root, "x"), { tokenizerPath: other }) })).rejects.toThrow(/--data .*corpus: its shards were made with another tokenizer than --tokenizer .*other\.json/);

    const shard = join(out, "train-00001.bin");
    truncateSync(shard, readFileSync(shard).length - 1);
    await expect(train({ ...quiet(cacheDir), config: small(out, join(root, "x")) })).rejects.toThrow(/--data .*corpus: shard train-00001\.bin is 9999 bytes, not a whole number of 2-byte uint16 tokens \(truncated mid-token\)/);
    truncateSync(shard, 9000);
    await expect(train({ ...quiet(cacheDir), config: small(out, join(root, "x")) })).rejects.toThrow(/shard train-00001\.bin holds 4500 tokens, index\.json says 5000/);

    writeFileSync(join(out, "index.json"), '{"format": "lightning-ts.tokens/1", "dtype": "int8"}');
    await expect(train({ ...quiet(cacheDir), config: small(out, join(root, "x")) })).rejects.toThrow(/--data .*corpus: index\.json is corrupt: dtype "int8"/);
    writeFileSync(join(out, "index.json"), "{");
    await expect(train({ ...quiet(cacheDir), config: small(out, join(root, "x")) })).rejects.toThrow(/index\.json is corrupt: .*JSON/);
    unlinkSync(join(out, "index.json"));
    await expect(train({ ...quiet(cacheDir), config: small(out, join(root, "x")) })).rejects.toThrow(/--data .*corpus: token shards but no index\.json/);
  });
});
