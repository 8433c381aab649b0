import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts", "src/tnl-fixture.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
  tsconfig: "tsconfig.build.json",
  external: ["vitest", "@lightning-ts/tensor"],
});
