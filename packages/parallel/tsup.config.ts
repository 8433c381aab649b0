import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
  tsconfig: "tsconfig.build.json",
  external: ["@lightning-ts/tensor", "@lightning-ts/autograd", "@lightning-ts/tnl"],
});
