/**
 * The torch.save reader on the committed fixtures of tools/fixtures/make-torch-pickles.py
 * (test/fixtures/torch): layout, dtypes, views, ZIP64, and refusals of everything else.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { toTensor } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { TorchCheckpoint } from "../src/torch/file.js";
import { TorchFileError } from "../src/torch/zip.js";

const DIR = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "torch");
const expected = JSON.parse(readFileSync(join(DIR, "small.json"), "utf8")) as { payload_file: string; values: Record<string, number[]> };

async function readAll(file: string): Promise<Record<string, { dtype: string; shape: number[]; values: number[] }>> {
  const ckpt = await TorchCheckpoint.open(join(DIR, file));
  try {
    const out: Record<string, { dtype: string; shape: number[]; values: number[] }> = {};
    for (const [name, info] of ckpt.tensors) {
      const raw = await ckpt.readRaw(name);
      const t = toTensor(raw);
      out[name] = { dtype: info.dtype, shape: info.shape, values: Array.from(t.dataSync() as ArrayLike<number>) };
      t.dispose();
    }
    return out;
  } finally {
    await ckpt.close();
  }
}

describe("torch.save reader", () => {
  for (const file of ["small.bin", "small-zip64.bin", "small-proto4.bin"]) {
    it(`${file}: every dtype, a shared storage, an offset and a transposed view`, async () => {
      const got = await readAll(file);
      expect(Object.keys(got)).toEqual(Object.keys(expected.values));
      for (const [name, values] of Object.entries(expected.values)) expect(got[name].values, name).toEqual(values);
      expect(got.bf16).toMatchObject({ dtype: "BF16", shape: [2, 2] });
      expect(got.f16).toMatchObject({ dtype: "F16", shape: [3] });
      expect(got.i64).toMatchObject({ dtype: "I64", shape: [3] });
      expect(got["f32.transposed"]).toMatchObject({ dtype: "F32", shape: [4, 3] });
      expect(got.scalar).toMatchObject({ dtype: "F64", shape: [] });
    });
  }

  it("keeps bf16 bits as stored", async () => {
    const ckpt = await TorchCheckpoint.open(join(DIR, "small.bin"));
    const raw = await ckpt.readRaw("bf16");
    await ckpt.close();
    expect(Array.from(new Uint16Array(raw.bytes.buffer, raw.bytes.byteOffset, 4))).toEqual([0x3f80, 0xc020, 0x4049, 0x0000]);
  });
});

describe("torch.save reader refuses", () => {
  const open = (file: string) => TorchCheckpoint.open(join(DIR, file));

  for (const [file, what] of [
    ["evil-os-system.bin", /global os\.system is not allowed/],
    ["evil-posix-system.bin", /global posix\.system is not allowed/],
    ["evil-builtins-exec.bin", /global builtins\.exec is not allowed/],
    ["evil-load-from-bytes.bin", /global torch\.storage\._load_from_bytes is not allowed/],
    ["evil-inst.bin", /opcode INST \(0x69\) at byte \d+ is not allowed/],
    ["evil-build.bin", /BUILD on a tensor is not allowed/],
    ["evil-opcode.bin", /opcode unknown \(0xff\) at byte 2 is not allowed/],
  ] as const) {
    it(`${file}, naming the file and what it holds, without running it`, async () => {
      rmSync(expected.payload_file, { force: true });
      const err = await open(file).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TorchFileError);
      expect((err as Error).message).toMatch(what);
      expect((err as Error).message).toContain(join(DIR, file));
      expect((err as Error).message).toMatch(/nothing in it was executed/);
      // Each payload would have created this file had a Python unpickler run it.
      expect(existsSync(expected.payload_file)).toBe(false);
    });
  }

  it("a truncated file", async () => {
    await expect(open("truncated.bin")).rejects.toThrow(/truncated\.bin: not a ZIP archive, or truncated: no end-of-central-directory record/);
  });

  it("a tensor larger than its storage, and a storage shorter than its pickle says", async () => {
    await expect(open("size-mismatch.bin")).rejects.toThrow(
      /size-mismatch\.bin: tensor "too\.big": size \[3, 2\] with stride \[2, 1\] at offset 0 reaches item 5, but its storage holds 2/,
    );
    await expect(open("storage-short.bin")).rejects.toThrow(/storage-short\.bin: tensor "w": storage archive\/data\/0 holds 8 bytes, but its pickle says 3 F32 items \(12 bytes\)/);
  });

  it("the legacy (pre-1.6) format, with what to do instead", async () => {
    await expect(open("legacy.bin")).rejects.toThrow(/legacy\.bin: is in the legacy \(pre-1\.6, non-ZIP\) torch\.save format/);
  });
});
