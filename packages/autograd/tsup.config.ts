import { defineConfig } from "tsup";

export default defineConfig({
  entry: { index: "src/index.ts", "optim/index": "src/optim/index.ts" },
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
  tsconfig: "tsconfig.build.json",
  external: ["@lightning-ts/tensor"],
});
