/**
 * Vitest settings shared by every package: workspace packages resolve to their TypeScript sources,
 * so tests need no build and every package sees one instance of the tensor core.
 */
import { readdirSync, existsSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig, type ViteUserConfig } from "vitest/config";

const root = dirname(fileURLToPath(import.meta.url));

function workspaceAliases(): { find: RegExp; replacement: string }[] {
  const aliases: { find: RegExp; replacement: string }[] = [];
  for (const group of ["packages", "apps"]) {
    const dir = join(root, group);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      const pkgFile = join(dir, name, "package.json");
      if (!existsSync(pkgFile)) continue;
      const pkg = JSON.parse(readFileSync(pkgFile, "utf8")) as { name: string; exports?: Record<string, unknown> };
      for (const sub of Object.keys(pkg.exports ?? {})) {
        const entry = sub === "." ? "index" : sub.slice(2);
        const src = [join(dir, name, "src", `${entry}.ts`), join(dir, name, "src", entry, "index.ts")].find((f) => existsSync(f));
        if (!src) continue;
        const id = sub === "." ? pkg.name : `${pkg.name}/${sub.slice(2)}`;
        aliases.push({ find: new RegExp(`^${id.replace(/[/.]/g, "\\$&")}$`), replacement: src });
      }
    }
  }
  return aliases;
}

export function packageVitestConfig(overrides: ViteUserConfig["test"] = {}): ViteUserConfig {
  return defineConfig({
    resolve: { alias: workspaceAliases() },
    test: { include: ["test/**/*.test.ts"], testTimeout: 120_000, hookTimeout: 120_000, ...overrides },
  });
}
