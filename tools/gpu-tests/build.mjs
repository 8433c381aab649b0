#!/usr/bin/env node
/**
 * Bundles the CUDA and WebGPU test files, with the vitest stand-in of vitest.ts, into one folder
 * that runs on a machine with Node and a GPU but no node_modules (`pnpm build:gpu-tests`):
 *
 *   dist/gpu-tests/
 *     run.js, chunk-*.js     the runner and the test files (run.ts says how to call it)
 *     train.js, bench.js     `pnpm train` and `pnpm bench` (same arguments), for training and
 *                            benchmarks on the GPU machine
 *     serve.js               `pnpm serve` (same arguments; `pnpm bench serve` starts it)
 *     package.json           marks the .js files as ES modules
 *     lightning_cuda.node    the CUDA addon built here (when it was built)
 *     node_modules/webgpu/   Dawn: index.js, package.json and this platform's dawn.node
 *     files/                 data files the tests read, at their repository paths
 *
 * Copy the folder to the GPU machine and run `node gpu-tests/run.js --required` there. Workspace
 * packages are bundled from their TypeScript sources (tsconfig.paths.json), as vitest runs them.
 *
 *   node tools/gpu-tests/build.mjs [--out DIR]
 */
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const here = join(root, "tools", "gpu-tests");
const { values } = parseArgs({ options: { out: { type: "string", default: join(root, "dist", "gpu-tests") } } });
const out = resolve(values.out);

/**
 * The test files: every *.test.ts of the GPU packages but the browser test (it drives Chromium
 * through playwright) and the check of the CUDA codes (it reads the repository's native sources
 * and needs no GPU; the addon it checks refuses to load when the codes differ).
 */
const PACKAGES = ["cuda", "webgpu"];
const LEFT_OUT = new Set(["webgpu/browser", "cuda/codes"]);
const suites = {};
for (const pkg of PACKAGES) {
  const dir = join(root, "packages", pkg, "test");
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".test.ts")).sort()) {
    const id = `${pkg}/${f.replace(/\.test\.ts$/, "")}`;
    if (!LEFT_OUT.has(id)) suites[id] = join(dir, f);
  }
}

const toPosix = (p) => p.split(sep).join("/");
/** Data files (and folders) that sources name with `new URL("…", import.meta.url)`. */
const assets = new Set();

/**
 * Source files keep their repository location at run time: `import.meta.url` in a bundled file
 * becomes the URL of files/<its repository path>, and what it points at is copied there.
 */
const repositoryPaths = {
  name: "repository-paths",
  setup(build) {
    build.onResolve({ filter: /^gpu-tests:suites$/ }, () => ({ path: "suites", namespace: "gpu-tests" }));
    build.onLoad({ filter: /.*/, namespace: "gpu-tests" }, () => ({
      contents: `export const SUITES = {\n${Object.entries(suites)
        .map(([id, file]) => `  ${JSON.stringify(id)}: () => import(${JSON.stringify(file)}),`)
        .join("\n")}\n};\n`,
      resolveDir: root,
      loader: "js",
    }));
    build.onLoad({ filter: /\.[cm]?[jt]s$/ }, (args) => {
      const rel = toPosix(relative(root, args.path));
      if (rel.startsWith("..") || rel.includes("node_modules/") || rel.startsWith("tools/gpu-tests/")) return undefined;
      let text = readFileSync(args.path, "utf8");
      const loader = args.path.endsWith(".ts") ? "ts" : "js";
      if (!text.includes("import.meta")) return { contents: text, loader };
      if (/import\.meta\.(dirname|filename)/.test(text)) {
        return { errors: [{ text: `${rel}: import.meta.dirname and import.meta.filename are not supported in the GPU test bundle; use import.meta.url` }] };
      }
      for (const m of text.matchAll(/new URL\(\s*(["'])([^"']+)\1\s*,\s*import\.meta\.url\s*\)/g)) {
        const target = resolve(dirname(args.path), m[2]);
        if (existsSync(target)) assets.add(target);
      }
      text = text.replaceAll("import.meta.url", `new URL(${JSON.stringify(`./files/${rel}`)}, import.meta.url).href`);
      return { contents: text, loader };
    });
  },
};

/**
 * Native modules that stay out of the bundle: Dawn and resvg (the trainer's loss chart) are copied
 * beside it; Hugging Face `tokenizers` (64 MB, used only by the tokenizer benchmark) is replaced by
 * a module that says it is not in the bundle when it is used.
 */
const leftOutModules = {
  name: "left-out-modules",
  setup(build) {
    build.onResolve({ filter: /^tokenizers$/ }, () => ({ path: "tokenizers", namespace: "left-out" }));
    build.onLoad({ filter: /.*/, namespace: "left-out" }, (args) => ({
      contents: `const missing = () => { throw new Error(${JSON.stringify(`${args.path} is not in the GPU bundle (run this benchmark from a checkout)`)}); };\nexport class Tokenizer { static fromFile() { missing(); } static fromString() { missing(); } }\n`,
      loader: "js",
    }));
  },
};

rmSync(out, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: { run: join(here, "run.ts"), train: join(root, "apps", "trainer", "src", "main.ts"), bench: join(root, "apps", "bench", "src", "main.ts"), serve: join(root, "apps", "server", "src", "main.ts") },
  outdir: out,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node22",
  tsconfig: join(root, "tsconfig.paths.json"),
  alias: { vitest: join(here, "vitest.ts") },
  // Loaded at run time from node_modules/ beside the bundle.
  external: ["webgpu", "@resvg/resvg-js"],
  // Bundled CommonJS code may call require().
  banner: { js: 'import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);' },
  plugins: [repositoryPaths, leftOutModules],
  logLevel: "silent",
  metafile: true,
}).catch((err) => {
  for (const e of err.errors ?? [err]) console.error(`[build:gpu-tests] ${e.text ?? e.message}`);
  process.exit(1);
});
// A side-effect import dropped because a package says "sideEffects": false would silently lose the
// tests' setup (the backend they register): treat every such warning as an error.
for (const w of result.warnings) console.error(`[build:gpu-tests] warning: ${w.text}${w.location ? ` (${w.location.file}:${w.location.line})` : ""}`);
if (result.warnings.length) process.exit(1);

writeFileSync(join(out, "package.json"), JSON.stringify({ name: "lightning-ts-gpu-tests", private: true, type: "module" }, null, 2) + "\n");

for (const asset of assets) cpSync(asset, join(out, "files", relative(root, asset)), { recursive: true });

const copied = [];
const addon = join(root, "packages", "cuda", "build", "Release", "lightning_cuda.node");
const status = join(root, "packages", "cuda", "build", "cuda-status.json");
if (existsSync(addon)) {
  cpSync(addon, join(out, "lightning_cuda.node"));
  const archs = existsSync(status) ? JSON.parse(readFileSync(status, "utf8")).archs : null;
  copied.push(`lightning_cuda.node${archs ? ` (sm_${archs.join(", sm_")} + compute_90 PTX)` : ""}`);
} else {
  console.log("[build:gpu-tests] no CUDA addon here (packages/cuda/build/Release/lightning_cuda.node): the CUDA tests will say why they skip");
}
// Without the addon, the CUDA backend reads why it was not built from its build status.
if (existsSync(status)) cpSync(status, join(out, "files", "packages", "cuda", "build", "cuda-status.json"));

const webgpuPackage = createRequire(join(root, "packages", "webgpu", "package.json")).resolve("webgpu/package.json");
const dawnDir = dirname(webgpuPackage);
const platform = `${process.platform}-${process.platform === "darwin" ? "universal" : process.arch}`;
for (const f of ["package.json", "index.js", join("dist", platform, "dawn.node")]) {
  cpSync(join(dawnDir, f), join(out, "node_modules", "webgpu", f));
}
copied.push(`node_modules/webgpu (${platform})`);

// resvg: its loader package and this platform's binary package.
const trainerRequire = createRequire(join(root, "apps", "trainer", "package.json"));
const resvgDir = dirname(trainerRequire.resolve("@resvg/resvg-js/package.json"));
const resvgBinary = `@resvg/resvg-js-${process.platform}-${process.arch}${process.platform === "linux" ? "-gnu" : ""}`;
cpSync(resvgDir, join(out, "node_modules", "@resvg", "resvg-js"), { recursive: true, dereference: true });
const binaryDir = dirname(createRequire(join(resvgDir, "package.json")).resolve(`${resvgBinary}/package.json`));
cpSync(binaryDir, join(out, "node_modules", ...resvgBinary.split("/")), { recursive: true, dereference: true });
copied.push(`node_modules/@resvg (${resvgBinary})`);

const size = (p) => (statSync(p).isDirectory() ? readdirSync(p).reduce((n, f) => n + size(join(p, f)), 0) : statSync(p).size);
const outputs = Object.keys(result.metafile.outputs).length;
console.log(
  `[build:gpu-tests] ${Object.keys(suites).length} test files (${Object.keys(suites).join(", ")}) in ${outputs} files, with ${[...copied, `${assets.size} data paths`].join(", ")}: ` +
    `${relative(process.cwd(), out) || "."} (${(size(out) / 2 ** 20).toFixed(1)} MiB)`,
);
const there = toPosix(relative(process.cwd(), out));
console.log(`[build:gpu-tests] run there: node ${there}/run.js --required; node ${there}/train.js …; node ${there}/bench.js …`);
