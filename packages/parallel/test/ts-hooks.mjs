// Lets worker threads started by runCpuGroup load the TypeScript sources the way vitest does:
// workspace packages resolve to their src/ entry points, `./x.js` imports find `./x.ts`, and
// .ts files are compiled by esbuild. Imported through `preload` by the tests.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { registerHooks } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { transformSync } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "../../..");

const aliases = new Map();
for (const group of ["packages", "apps"]) {
  const dir = join(root, group);
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const pkgFile = join(dir, name, "package.json");
    if (!existsSync(pkgFile)) continue;
    const pkg = JSON.parse(readFileSync(pkgFile, "utf8"));
    for (const sub of Object.keys(pkg.exports ?? {})) {
      const entry = sub === "." ? "index" : sub.slice(2);
      const src = [join(dir, name, "src", `${entry}.ts`), join(dir, name, "src", entry, "index.ts")].find((f) => existsSync(f));
      if (src) aliases.set(sub === "." ? pkg.name : `${pkg.name}/${sub.slice(2)}`, pathToFileURL(src).href);
    }
  }
}

registerHooks({
  resolve(specifier, context, next) {
    const alias = aliases.get(specifier);
    if (alias) return { url: alias, shortCircuit: true };
    if (specifier.startsWith(".") && specifier.endsWith(".js") && context.parentURL?.endsWith(".ts")) {
      const ts = new URL(specifier.slice(0, -3) + ".ts", context.parentURL);
      if (existsSync(fileURLToPath(ts))) return { url: ts.href, shortCircuit: true };
    }
    return next(specifier, context);
  },
  load(url, context, next) {
    if (!url.startsWith("file:") || !url.endsWith(".ts")) return next(url, context);
    const file = fileURLToPath(url);
    const { code } = transformSync(readFileSync(file, "utf8"), { loader: "ts", format: "esm", target: "node22", sourcefile: file, sourcemap: "inline" });
    return { format: "module", source: code, shortCircuit: true };
  },
});
