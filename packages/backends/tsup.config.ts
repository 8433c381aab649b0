import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
  tsconfig: "tsconfig.build.json",
  // The GPU packages are optional peers, imported only when their backend is asked for.
  external: ["@lightning-ts/tensor", "@lightning-ts/cuda", "@lightning-ts/webgpu"],
});
