/**
 * The codes TypeScript and the addon share: native/op_codes.gen.h must be exactly what
 * scripts/gen-codes.mjs makes of the TypeScript lists (the check build-native.mjs runs), and the
 * addon, where it is built, must register exactly the launchers of LAUNCHERS. Needs no GPU.
 */
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { LAUNCHERS } from "../src/codes.js";
import { loadAddon } from "../src/native.js";

type Lists = Record<"unary" | "binary" | "compare" | "reduce" | "launchers", readonly string[]> & Record<string, unknown>;
interface GenCodes {
  HEADER: string;
  loadLists(): Promise<Lists>;
  generateHeader(lists: Lists): string;
  checkHeader(lists?: Lists): Promise<string | null>;
}
const gen = (await import(new URL("../scripts/gen-codes.mjs", import.meta.url).href)) as GenCodes;
const lists = await gen.loadLists();

describe("native/op_codes.gen.h", () => {
  it("is what the generator makes of the TypeScript lists", () => {
    expect(readFileSync(gen.HEADER, "utf8")).toBe(gen.generateHeader(lists));
  });

  it("is reported stale, with the command to run, once a list changes", async () => {
    expect(await gen.checkHeader(lists)).toBeNull();
    const withGelu = { ...lists, unary: [...lists.unary, "gelu"] };
    expect(await gen.checkHeader(withGelu)).toMatch(/op_codes\.gen\.h is stale.*Run `node packages\/cuda\/scripts\/gen-codes\.mjs`/);
    // Regenerated, the new op gets its code and a slot in the X-macro that the kernels expand.
    const header = gen.generateHeader(withGelu);
    expect(header).toContain(`gelu = ${lists.unary.length}`);
    expect(header).toMatch(/#define LTS_UNARY_OPS\(X, \.\.\.\)[^#]*X\(gelu, __VA_ARGS__\)/);
  });
});

const addonFile = new URL("../build/Release/lightning_cuda.node", import.meta.url);
it.skipIf(!process.env.LIGHTNING_CUDA_ADDON && !existsSync(addonFile))("the addon registers exactly the launchers of LAUNCHERS", () => {
  // The addon refuses to load, naming the difference, when the two sets differ.
  expect(() => loadAddon()).not.toThrow();
  expect(LAUNCHERS.length).toBe(lists.launchers.length);
});
