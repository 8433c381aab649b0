/**
 * The official TNL tiny fixture (random weights, fp32), read through the safetensors reader of
 * @lightning-ts/tensor; the reader's other tests are in packages/tensor/test/safetensors.test.ts.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createCpuBackend, setBackend, type Tensor } from "@lightning-ts/tensor";
import { readSafetensors } from "@lightning-ts/tensor/node";
import { safetensorsLayout } from "@lightning-ts/tensor/testing";
import { beforeAll, describe, expect, it } from "vitest";
import { FIXTURE_DIR, tnlFixture } from "../src/tnl-fixture.js";

beforeAll(() => {
  setBackend(createCpuBackend({ threads: 1 }));
});

const disposeAll = (ts: Record<string, Tensor>) => Object.values(ts).forEach((t) => t.dispose());

describe("the TNL tiny fixture", () => {
  const path = join(FIXTURE_DIR, "model.safetensors");

  it("has the names and shapes of fixture.json, and the bytes an independent reader finds", async () => {
    // The official TNL fixture (random weights, fp32), in @lightning-ts/testing.
    const fixture = tnlFixture();
    const { tensors, metadata } = await readSafetensors(path);
    expect(metadata).toMatchObject({ format: "pt" });
    expect(Object.keys(tensors).sort()).toEqual(Object.keys(fixture.weights).sort());
    const file = await readFile(path);
    const { header, data } = safetensorsLayout(file);
    for (const [name, shape] of Object.entries(fixture.weights)) {
      const t = tensors[name];
      expect([name, t.dtype, t.shape]).toEqual([name, "f32", shape]);
      const [begin, end] = header[name].data_offsets;
      expect(Buffer.from(await t.bytes()).equals(data.subarray(begin, end))).toBe(true);
    }
    // A few values straight from the file bytes at their offsets.
    const lm = await tensors["lm_head.weight"].data();
    const at = 8 + Number(file.readBigUInt64LE(0)) + header["lm_head.weight"].data_offsets[0];
    for (const i of [0, 1, 63, 64, 16383]) expect(lm[i]).toBe(file.readFloatLE(at + 4 * i));
    disposeAll(tensors);
  });

  it("holds what the fixture README describes: zero pad row, default LRPE theta, N(0, 0.2) weights", async () => {
    const { tensors } = await readSafetensors(path, {
      names: ["model.embed_tokens.weight", "model.layers.0.token_mixer.lrpe.theta", "lm_head.weight"],
    });
    const emb = await tensors["model.embed_tokens.weight"].data();
    expect(Array.from(emb.subarray(0, 64)).every((v) => v === 0)).toBe(true);
    const theta = await tensors["model.layers.0.token_mixer.lrpe.theta"].data();
    for (let i = 0; i < 64; i++) expect(theta[i]).toBeCloseTo(10000 ** ((-2 * i) / 64), 6);
    const lm = Array.from(await tensors["lm_head.weight"].data());
    const mean = lm.reduce((a, b) => a + b, 0) / lm.length;
    const sd = Math.sqrt(lm.reduce((a, b) => a + (b - mean) ** 2, 0) / lm.length);
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.abs(sd - 0.2)).toBeLessThan(0.01);
    disposeAll(tensors);
  });
});
