import { fileURLToPath } from "node:url";
import { defineConfig } from "tsup";

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

// One file that runs the conformance suite and the benchmark with only Node and `webgpu` installed.
export default defineConfig({
  entry: { "gpu-check": "scripts/gpu-check.ts" },
  outDir: "dist-gpu",
  format: ["esm"],
  platform: "node",
  target: "node20",
  clean: true,
  noExternal: [/.*/],
  external: ["webgpu"],
  esbuildOptions(options) {
    options.alias = {
      vitest: here("./scripts/vitest-shim.ts"),
      // A directory, so subpaths (@lightning-ts/tensor/testing) resolve inside it.
      "@lightning-ts/tensor": here("../tensor/src"),
      "@lightning-ts/testing": here("../testing/src/index.ts"),
    };
  },
});
