import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CpuBackend } from "../src/cpu/backend.js";
import type { DType } from "../src/dtype.js";
import { setBackend } from "../src/engine.js";
import { fromStorage } from "../src/api/ops.js";
import {
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  type RawTensor,
  SafetensorsError,
  toTensor,
} from "../src/safetensors.js";
import {
  readSafetensors,
  readSafetensorsHeader,
  readSafetensorsRaw,
  readShardedSafetensors,
  writeSafetensors,
  writeShardedSafetensors,
} from "../src/node.js";
import { liveTensorCount, type Tensor } from "../src/tensor.js";
import { safetensorsLayout } from "../src/testing/index.js";

// The TNL fixture read through safetensors: packages/testing/test/safetensors-fixture.test.ts.

let dir = "";
beforeAll(async () => {
  setBackend(new CpuBackend({ threads: 1 }));
  dir = await mkdtemp(join(tmpdir(), "safetensors-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const disposeAll = (ts: Record<string, Tensor>) => Object.values(ts).forEach((t) => t.dispose());

/** Awkward bit patterns per dtype: NaN payloads of both signs, ±0, subnormals, infinities, extremes. */
function awkward(): Record<string, { dtype: DType; shape: number[]; bytes: Uint8Array }> {
  return {
    f32: {
      dtype: "f32",
      shape: [2, 5],
      bytes: u8(Uint32Array.from([0x7fc00001, 0xffbadbad, 0x7f800001, 0x80000000, 0, 0x00000001, 0x807fffff, 0x7f800000, 0xff7fffff, 0x3f800000])),
    },
    f64: {
      dtype: "f64",
      shape: [3, 2],
      bytes: u8(BigUint64Array.from([0x7ff0000000000001n, 0xfff8000000000abcn, 0x8000000000000000n, 1n, 0x000fffffffffffffn, 0x3ff0000000000000n])),
    },
    f16: { dtype: "f16", shape: [8], bytes: u8(Uint16Array.from([0x7e01, 0xfc01, 0x7c01, 0x8000, 0x0001, 0x83ff, 0x7bff, 0xfc00])) },
    bf16: { dtype: "bf16", shape: [2, 2, 2], bytes: u8(Uint16Array.from([0x7fc1, 0xff81, 0x7f81, 0x8000, 0x0001, 0x807f, 0x7f7f, 0x7f80])) },
    i32: { dtype: "i32", shape: [5], bytes: u8(Int32Array.from([-(2 ** 31), 2 ** 31 - 1, 0, -1, 12345])) },
    u8: { dtype: "u8", shape: [16, 16], bytes: Uint8Array.from({ length: 256 }, (_, i) => 255 - i) },
    scalar: { dtype: "f32", shape: [], bytes: u8(Float32Array.from([-0])) },
    empty: { dtype: "i32", shape: [0, 3], bytes: new Uint8Array(0) },
  };
}

describe("round trips", () => {
  it("every dtype, bit for bit, with metadata, through a file", async () => {
    const cases = awkward();
    const tensors: Record<string, Tensor> = {};
    for (const [name, c] of Object.entries(cases)) tensors[name] = fromStorage(c.bytes, c.shape, c.dtype);
    const path = join(dir, "all.safetensors");
    await writeSafetensors(path, tensors, { format: "pt", note: "ünïcode ok" });
    expect((await readdir(dir)).filter((f) => f.includes(".tmp-"))).toEqual([]);

    const back = await readSafetensors(path);
    expect(back.metadata).toEqual({ format: "pt", note: "ünïcode ok" });
    expect(Object.keys(back.tensors).sort()).toEqual(Object.keys(cases).sort());
    for (const [name, c] of Object.entries(cases)) {
      const t = back.tensors[name];
      expect([t.dtype, t.shape]).toEqual([c.dtype, c.shape]);
      expect(await t.bytes()).toEqual(c.bytes);
    }

    // The file is what an independent reader expects: padded header, aligned data, stored dtype names.
    const file = await readFile(path);
    const { header, data } = safetensorsLayout(file);
    expect(Number(file.readBigUInt64LE(0)) % 8).toBe(0);
    const names: Record<DType, string> = { f32: "F32", f64: "F64", f16: "F16", bf16: "BF16", i32: "I32", u8: "U8" };
    const itemSize: Record<DType, number> = { f32: 4, f64: 8, f16: 2, bf16: 2, i32: 4, u8: 1 };
    for (const [name, c] of Object.entries(cases)) {
      const [begin, end] = header[name].data_offsets;
      expect(header[name].dtype).toBe(names[c.dtype]);
      expect(begin % itemSize[c.dtype]).toBe(0);
      expect(new Uint8Array(data.subarray(begin, end))).toEqual(c.bytes);
    }

    // The in-memory encoder writes the same bytes, and the in-memory reader agrees.
    expect(Buffer.from(await encodeSafetensors(tensors, { format: "pt", note: "ünïcode ok" })).equals(file)).toBe(true);
    const mem = loadSafetensors(new Uint8Array(file), { names: ["bf16"] });
    expect(Object.keys(mem.tensors)).toEqual(["bf16"]);
    expect(await mem.tensors.bf16.bytes()).toEqual(cases.bf16.bytes);

    disposeAll(tensors);
    disposeAll(back.tensors);
    disposeAll(mem.tensors);
  });

  it("raw entries of the read-only dtypes round-trip and convert exactly", async () => {
    const raw: Record<string, RawTensor> = {
      i64: { dtype: "I64", shape: [4], bytes: u8(BigInt64Array.from([-(2n ** 31n), 2n ** 31n - 1n, -1n, 7n])) },
      i16: { dtype: "I16", shape: [3], bytes: u8(Int16Array.from([-32768, 32767, -2])) },
      i8: { dtype: "I8", shape: [3], bytes: u8(Int8Array.from([-128, 127, -1])) },
      bool: { dtype: "BOOL", shape: [3], bytes: Uint8Array.from([0, 1, 2]) },
      f64: { dtype: "F64", shape: [2], bytes: u8(Float64Array.from([Math.PI, -0])) },
    };
    const path = join(dir, "raw.safetensors");
    await writeSafetensors(path, raw);
    const back = await readSafetensorsRaw(path);
    for (const [name, r] of Object.entries(raw)) {
      expect(back.tensors[name].dtype).toBe(r.dtype);
      expect(back.tensors[name].bytes).toEqual(r.bytes);
    }
    const { tensors } = await readSafetensors(path);
    expect([tensors.i64.dtype, Array.from(await tensors.i64.data())]).toEqual(["i32", [-(2 ** 31), 2 ** 31 - 1, -1, 7]]);
    expect(Array.from(await tensors.i16.data())).toEqual([-32768, 32767, -2]);
    expect(Array.from(await tensors.i8.data())).toEqual([-128, 127, -1]);
    expect([tensors.bool.dtype, Array.from(await tensors.bool.data())]).toEqual(["u8", [0, 1, 1]]);
    expect(Object.is((await tensors.f64.data())[1], -0)).toBe(true);
    expect((await tensors.f64.data())[0]).toBe(Math.PI);
    disposeAll(tensors);
  });

  it("sharded checkpoints: shard names, index and values", async () => {
    const shardDir = join(dir, "sharded");
    const tensors: Record<string, Tensor> = {};
    for (let i = 0; i < 7; i++) {
      tensors[`layer.${i}.weight`] = fromStorage(Float32Array.from({ length: 10 * (i + 1) }, (_, j) => i + j / 100), [i + 1, 10], "f32");
    }
    tensors["ids"] = fromStorage(Int32Array.from([1, 2, 3]), [3], "i32");
    const { files, index } = await writeShardedSafetensors(shardDir, tensors, { maxShardBytes: 400, metadata: { step: "3" } });
    expect(files.length).toBeGreaterThan(1);
    files.forEach((f, i) => expect(f).toBe(`model-${String(i + 1).padStart(5, "0")}-of-${String(files.length).padStart(5, "0")}.safetensors`));
    const total = Object.values(tensors).reduce((s, t) => s + t.size * 4, 0);
    const onDisk = JSON.parse(await readFile(join(shardDir, "model.safetensors.index.json"), "utf8")) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    expect(onDisk).toEqual(JSON.parse(JSON.stringify(index)));
    expect(onDisk.metadata.total_size).toBe(total);
    expect(Object.keys(onDisk.weight_map).sort()).toEqual(Object.keys(tensors).sort());
    for (const f of files) {
      const h = await readSafetensorsHeader(join(shardDir, f));
      const bytes = h.entries.reduce((s, e) => s + e.end - e.begin, 0);
      expect(bytes <= 400 || h.entries.length === 1).toBe(true);
      for (const e of h.entries) expect(onDisk.weight_map[e.name]).toBe(f);
    }

    const back = await readShardedSafetensors(shardDir);
    expect(back.metadata).toEqual({ step: "3", total_size: total });
    for (const [name, t] of Object.entries(tensors)) expect(await back.tensors[name].bytes()).toEqual(await t.bytes());
    const some = await readShardedSafetensors(shardDir, { names: ["layer.6.weight", "ids"] });
    expect(Object.keys(some.tensors).sort()).toEqual(["ids", "layer.6.weight"]);
    await expect(readShardedSafetensors(shardDir, { names: ["nope"] })).rejects.toThrow(/index\.json: no tensor named "nope"/);
    disposeAll(tensors);
    disposeAll(back.tensors);
    disposeAll(some.tensors);
  });

  it("an index pointing at a missing shard or outside its directory is refused", async () => {
    const d = join(dir, "bad-index");
    await writeShardedSafetensors(d, { a: { dtype: "U8", shape: [1], bytes: Uint8Array.of(1) } }, { maxShardBytes: 10 });
    const indexPath = join(d, "model.safetensors.index.json");
    await writeFile(indexPath, JSON.stringify({ metadata: {}, weight_map: { a: "model-00009-of-00009.safetensors" } }));
    await expect(readShardedSafetensors(d)).rejects.toThrow(/index\.json: weight_map names shard "model-00009-of-00009\.safetensors", which does not exist/);
    await writeFile(indexPath, JSON.stringify({ metadata: {}, weight_map: { a: "../secret.safetensors" } }));
    await expect(readShardedSafetensors(d)).rejects.toThrow(/expected a file name in the same directory/);
    await writeFile(indexPath, "{ not json");
    await expect(readShardedSafetensors(d)).rejects.toThrow(/index\.json: index is not valid JSON/);
  });
});

describe("corrupt files are rejected with the file name and the problem", () => {
  /** Writes a file from a header object (or raw header text) and data bytes. */
  async function craft(name: string, header: unknown, data: Uint8Array, lengthOverride?: bigint): Promise<string> {
    const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
    const path = join(dir, name);
    await writeFile(path, Buffer.concat([len, json, data]));
    return path;
  }
  const f32x6 = { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] };
  const data24 = new Uint8Array(24);

  async function rejects(path: string, message: RegExp): Promise<void> {
    const err = await readSafetensors(path).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SafetensorsError);
    expect((err as Error).message.startsWith(path + ": ")).toBe(true);
    expect((err as Error).message).toMatch(message);
  }

  it("a file shorter than the length field", async () => {
    const path = join(dir, "tiny.safetensors");
    await writeFile(path, Uint8Array.of(1, 2, 3, 4, 5));
    await rejects(path, /truncated: 5 bytes/);
  });

  it("a header length beyond the file size (also a huge u64)", async () => {
    await rejects(await craft("len.safetensors", { a: f32x6 }, data24, 10_000n), /header length 10000 is beyond the file size/);
    await rejects(await craft("len2.safetensors", { a: f32x6 }, data24, 2n ** 63n + 5n), /header length \d+ is beyond the file size/);
  });

  it("a truncated data region", async () => {
    await rejects(await craft("cut.safetensors", { a: f32x6 }, data24.subarray(0, 20)), /"a" has data_offsets \[0, 24\] beyond the data region of 20 bytes \(truncated file\?\)/);
  });

  it("bad JSON, a non-object header, invalid UTF-8", async () => {
    await rejects(await craft("json.safetensors", '{"a": {"dtype": "F32",', data24), /header is not valid JSON/);
    await rejects(await craft("array.safetensors", "[1, 2]", data24), /header JSON is not an object/);
    const path = join(dir, "utf8.safetensors");
    await writeFile(path, Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]));
    await rejects(path, /header is not valid UTF-8/);
  });

  it("an unknown dtype", async () => {
    await rejects(await craft("dtype.safetensors", { a: { ...f32x6, dtype: "F8_E4M3" } }, data24), /tensor "a" has unknown dtype "F8_E4M3" \(known: .*BF16/);
  });

  it("shape and byte size that disagree, and malformed shapes and offsets", async () => {
    await rejects(await craft("size.safetensors", { a: { ...f32x6, shape: [2, 2] } }, data24), /shape \[2, 2\] of F32 needs 16 bytes, but data_offsets \[0, 24\] hold 24/);
    await rejects(await craft("shape.safetensors", { a: { ...f32x6, shape: [2, -3] } }, data24), /"a" has shape \[2,-3\]/);
    await rejects(await craft("shape2.safetensors", { a: { ...f32x6, shape: "2x3" } }, data24), /"a" has shape "2x3"/);
    await rejects(await craft("offs.safetensors", { a: { ...f32x6, data_offsets: [24, 0] } }, data24), /begin after end/);
    await rejects(await craft("offs2.safetensors", { a: { ...f32x6, data_offsets: [0] } }, data24), /expected \[begin, end\]/);
    await rejects(await craft("meta.safetensors", { __metadata__: { n: 3 }, a: f32x6 }, data24), /__metadata__\["n"\] is not a string/);
  });

  it("offsets out of range and overlapping tensors", async () => {
    await rejects(await craft("range.safetensors", { a: { ...f32x6, data_offsets: [8, 32] } }, data24), /beyond the data region of 24 bytes/);
    const b = { dtype: "U8", shape: [8], data_offsets: [16, 24] };
    await rejects(await craft("overlap.safetensors", { a: f32x6, b }, data24), /tensors "a" \[0, 24\) and "b" \[16, 24\) overlap/);
    const wide = { a: { dtype: "U8", shape: [24], data_offsets: [0, 24] }, e: { dtype: "U8", shape: [0], data_offsets: [4, 4] }, c: { dtype: "U8", shape: [4], data_offsets: [8, 12] } };
    await rejects(await craft("overlap2.safetensors", wide, data24), /tensors "a" \[0, 24\) and "c" \[8, 12\) overlap/);
    // Touching ranges and empty tensors are fine.
    const ok = await craft("touch.safetensors", { a: { dtype: "F32", shape: [4], data_offsets: [0, 16] }, b, e: { dtype: "F32", shape: [0], data_offsets: [8, 8] } }, data24);
    const { tensors } = await readSafetensors(ok);
    expect(Object.keys(tensors).sort()).toEqual(["a", "b", "e"]);
    disposeAll(tensors);
  });

  it("I64 values outside i32 fail clearly, and tensors made before the failure are released", async () => {
    const big = u8(BigInt64Array.from([1n, 2n ** 31n]));
    const path = await craft("i64.safetensors", { a: { dtype: "U8", shape: [4], data_offsets: [0, 4] }, b: { dtype: "I64", shape: [2], data_offsets: [8, 24] } }, Buffer.concat([new Uint8Array(8), big]));
    const live = liveTensorCount();
    await expect(readSafetensors(path)).rejects.toThrow(`${path}: tensor "b": I64 value 2147483648 at element 1 does not fit in i32`);
    expect(liveTensorCount()).toBe(live);
    // The raw reader still gives the bytes.
    expect((await readSafetensorsRaw(path, { names: ["b"] })).tensors.b.bytes).toEqual(big);
    expect(() => toTensor({ dtype: "I64", shape: [1], bytes: u8(BigInt64Array.of(-(2n ** 31n) - 1n)) }, { name: "x" })).toThrow(/does not fit in i32/);
  });

  it("a name the file lacks, in memory too", async () => {
    const path = await craft("names.safetensors", { a: f32x6 }, data24);
    await expect(readSafetensors(path, { names: ["a", "zz"] })).rejects.toThrow(`${path}: no tensor named "zz"`);
    expect(() => decodeSafetensors(new Uint8Array(3), { source: "mem" })).toThrow(/^mem: truncated/);
  });

  it("a failed write leaves the old file and no temporary behind", async () => {
    const path = join(dir, "keep.safetensors");
    await writeSafetensors(path, { a: { dtype: "U8", shape: [2], bytes: Uint8Array.of(1, 2) } });
    const before = await readFile(path);
    await expect(writeSafetensors(path, { a: { dtype: "F32", shape: [2], bytes: new Uint8Array(3) } })).rejects.toThrow(/"a" has 3 bytes, but F32 \[2\] needs 8/);
    await expect(writeSafetensors(path, { __metadata__: { dtype: "U8", shape: [0], bytes: new Uint8Array(0) } })).rejects.toThrow(/__metadata__/);
    expect((await readFile(path)).equals(before)).toBe(true);
    expect((await readdir(dir)).filter((f) => f.includes(".tmp-"))).toEqual([]);
  });
});
