/**
 * The layering inside this package: ops/ holds the definitions of the op set (attributes, lists,
 * specs) and imports only its siblings and the leaf modules below it, never the engine, tensors,
 * backends or the op functions of api/.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const opsDir = fileURLToPath(new URL("../src/ops/", import.meta.url));
const ALLOWED = ["../dtype.js", "../errors.js", "../shape.js"];

it("ops/ imports nothing above it", () => {
  const upward = readdirSync(opsDir)
    .filter((f) => f.endsWith(".ts"))
    .flatMap((f) =>
      [...readFileSync(join(opsDir, f), "utf8").matchAll(/\bfrom\s+["']([^"']+)["']/g)]
        .map((m) => m[1])
        .filter((spec) => !spec.startsWith("./") && !ALLOWED.includes(spec))
        .map((spec) => `${f} imports ${spec}`),
    );
  expect(upward).toEqual([]);
});
