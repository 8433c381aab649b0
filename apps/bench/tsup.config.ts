import { defineConfig } from "tsup";

export default defineConfig({
  // The serve suite's load generator runs in worker threads, from a file of its own.
  entry: { main: "src/main.ts", "serve-load-worker": "src/serve/load-worker.ts" },
  format: ["esm"],
  sourcemap: true,
  clean: true,
  target: "node20",
  banner: { js: "#!/usr/bin/env node" },
});
