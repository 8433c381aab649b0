import { copyFile } from "node:fs/promises";
import { defineConfig } from "tsup";

// The page's modules beside index.html: dist/ is the whole site, for any static server.
export default defineConfig({
  entry: { main: "src/main.ts" },
  format: ["esm"],
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  clean: true,
  noExternal: [/.*/],
  esbuildOptions(options) {
    // Workspace packages from their sources (subpaths included), as vitest resolves them.
    options.tsconfig = "../../tsconfig.paths.json";
    // Node-only corners of the workspace (files, worker threads, Dawn) are never reached by the page.
    options.external = ["node:*", "webgpu"];
  },
  async onSuccess() {
    await copyFile("src/index.html", "dist/index.html");
  },
});
