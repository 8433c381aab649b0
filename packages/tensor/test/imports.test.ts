/**
 * The tensor core depends on nothing: its sources import only node: builtins and each other
 * (relatively, never through the package's own name), and its tests add vitest and the package
 * itself. No other workspace package, @lightning-ts/testing included: testing depends on tensor, and
 * an edge back would be a cycle. The one exception is a build script's devDependency (wabt).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const pkgDir = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as { name: string; devDependencies?: Record<string, string> };

/** Every module specifier in `source`: static imports and re-exports, dynamic imports, require, vi.mock. */
function specifiers(source: string): string[] {
  const patterns = [
    /^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/gm,
    /^\s*import\s*["']([^"']+)["']/gm,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
    /\brequire\s*\(\s*["']([^"']+)["']\s*\)/g,
    /\bvi\.(?:mock|doMock|importActual|importMock)\s*(?:<[^>]*>)?\(\s*["']([^"']+)["']/g,
  ];
  return patterns.flatMap((re) => [...source.matchAll(re)].map((m) => m[1]));
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : /\.(m?[jt]s|cts|cjs)$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

/** Why `spec`, imported by `file`, is not allowed; null where it is. */
function violation(file: string, spec: string): string | null {
  const inTest = file.startsWith(join(pkgDir, "test") + sep);
  if (spec.startsWith("./") || spec.startsWith("../")) {
    const target = resolve(file, "..", spec);
    const inside = ["src", "test"].some((d) => target.startsWith(join(pkgDir, d) + sep));
    if (!inside) return "a relative path out of the package's src/ and test/";
    if (!inTest && target.startsWith(join(pkgDir, "test") + sep)) return "a test module imported by a source";
    return null;
  }
  if (spec.startsWith("node:")) return null;
  if (spec === pkg.name || spec.startsWith(`${pkg.name}/`)) return inTest ? null : "the package's own name (import relatively)";
  if (spec === "vitest" || spec.startsWith("vitest/")) return inTest ? null : "vitest outside the tests";
  // A build script (.mjs, never imported by the package's modules) may use a devDependency.
  const bare = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0];
  if (file.endsWith(".mjs") && !bare.startsWith("@lightning-ts/") && pkg.devDependencies?.[bare]) return null;
  return bare.startsWith("@lightning-ts/") ? "another workspace package" : "a package that is not a dependency";
}

it("finds every form of import it looks for", () => {
  // Written with % for the quotes, so that the scan of this very file does not find them.
  const sample = [
    "import { a } from %@lightning-ts/testing%;",
    "import {\n  b,\n  c,\n} from %@lightning-ts/autograd%;",
    "import type { D } from %@lightning-ts/webgpu%;",
    "export { e } from %@lightning-ts/tnl%;",
    "export * as f from %@lightning-ts/testing/tnl-fixture%;",
    "import %@lightning-ts/cuda%;",
    "const g = await import(%@lightning-ts/tokenizer%);",
    "type H = import(%@lightning-ts/backends%).H;",
    "const i = require(%some-package%);",
    "vi.mock(%@lightning-ts/testing%, () => ({}));",
    " * import { j } from %@lightning-ts/tensor%; (a doc comment's example, not an import)",
  ]
    .join("\n")
    .replaceAll("%", '"');
  expect(specifiers(sample).sort()).toEqual(
    [
      "@lightning-ts/autograd",
      "@lightning-ts/backends",
      "@lightning-ts/cuda",
      "@lightning-ts/testing",
      "@lightning-ts/testing",
      "@lightning-ts/testing/tnl-fixture",
      "@lightning-ts/tnl",
      "@lightning-ts/tokenizer",
      "@lightning-ts/webgpu",
      "some-package",
    ].sort(),
  );
  const file = join(pkgDir, "test", "x.test.ts");
  expect(violation(file, "@lightning-ts/testing")).toBe("another workspace package");
  expect(violation(file, "../../testing/src/index.js")).toMatch(/out of the package/);
  expect(violation(join(pkgDir, "src", "x.ts"), "@lightning-ts/tensor")).toMatch(/own name/);
  expect(violation(join(pkgDir, "src", "x.ts"), "vitest")).toMatch(/vitest/);
});

it("tensor's sources and tests import nothing but node: builtins, vitest (tests) and the package itself", () => {
  const files = ["src", "test"].flatMap((d) => filesUnder(join(pkgDir, d)));
  const found = files.flatMap((file) => specifiers(readFileSync(file, "utf8")).map((spec) => ({ file, spec })));
  // The scan sees what is there: the entry's own imports and this file's.
  expect(found.filter((f) => f.file.endsWith(join("src", "index.ts"))).map((f) => f.spec)).toContain("./cpu/backend.js");
  expect(found.filter((f) => f.file === fileURLToPath(import.meta.url)).map((f) => f.spec)).toContain("vitest");
  const bad = found.flatMap(({ file, spec }) => {
    const why = violation(file, spec);
    return why ? [`${relative(pkgDir, file)} imports ${spec}: ${why}`] : [];
  });
  expect(bad).toEqual([]);
});
