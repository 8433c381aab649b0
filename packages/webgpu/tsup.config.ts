import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "es2022",
  tsconfig: "tsconfig.build.json",
  // Dawn is loaded only in Node, by a dynamic import, so browser bundles never see it.
  external: ["@lightning-ts/tensor", "webgpu"],
});
