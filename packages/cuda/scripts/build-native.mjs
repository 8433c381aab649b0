#!/usr/bin/env node
/**
 * Builds the native addon, or explains why it was not built.
 *
 * nvcc compiles native/*.cu into one static archive (one object per kernel family, in parallel),
 * then node-gyp compiles the N-API glue and links it with the archive and the static CUDA runtime.
 * Without nvcc nothing is built and build/cuda-status.json records why, so `createCudaBackend()`
 * can say so; the package still installs. A build whose inputs did not change is skipped.
 *
 * Environment:
 *   CUDA_HOME / CUDA_PATH     toolkit root (else nvcc on PATH, else /usr/local/cuda)
 *   LIGHTNING_CUDA_ARCHS      e.g. "90a" or "80,90,90a", plus compute_90 PTX (default: 80,86,89,90,90a
 *                             where this machine has an NVIDIA GPU; without one only 90a and no PTX,
 *                             which proves every kernel compiles, wgmma ones included, in a fifth of
 *                             the time, and runs on Hopper)
 *   LIGHTNING_CUDA_REQUIRED=1 fail instead of warning when the build fails
 *   LIGHTNING_CUDA_SKIP=1     do not build (the backend then reports why)
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const nativeDir = join(root, "native");
const buildDir = join(root, "build");
const objDir = join(buildDir, "cuda-obj");
const statusFile = join(buildDir, "cuda-status.json");
const addonFile = join(buildDir, "Release", "lightning_cuda.node");
const force = process.argv.includes("--force");
const required = process.env.LIGHTNING_CUDA_REQUIRED === "1";

const log = (msg) => console.log(`[@lightning-ts/cuda] ${msg}`);

function writeStatus(status) {
  mkdirSync(buildDir, { recursive: true });
  writeFileSync(statusFile, JSON.stringify({ ...status, date: new Date().toISOString() }, null, 2) + "\n");
}

function findNvcc() {
  const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH].filter(Boolean);
  for (const h of homes) if (existsSync(join(h, "bin", "nvcc"))) return { nvcc: join(h, "bin", "nvcc"), home: h };
  const which = spawnSync("sh", ["-c", "command -v nvcc"], { encoding: "utf8" });
  const onPath = which.status === 0 ? which.stdout.trim() : "";
  // nvcc on PATH is often a symbolic link (/usr/local/bin/nvcc): the toolkit is where it points.
  if (onPath) return { nvcc: onPath, home: dirname(dirname(realpathSync(onPath))) };
  if (existsSync("/usr/local/cuda/bin/nvcc")) return { nvcc: "/usr/local/cuda/bin/nvcc", home: "/usr/local/cuda" };
  return null;
}

const ALL_ARCHS = "80,86,89,90,90a";

/** True where nvidia-smi finds a GPU (a driver and a device): then the addon is built for every target. */
function hasGpu() {
  const r = spawnSync("nvidia-smi", ["-L"], { encoding: "utf8" });
  return r.status === 0 && /^GPU \d+/m.test(r.stdout);
}

/**
 * -gencode flags: machine code per arch, plus compute_90 PTX so newer GPUs can JIT it. Without a
 * GPU only sm_90a is built: the one target whose code holds every kernel (the wgmma ones too), so
 * the build still proves that all of them compile.
 */
function gencodes() {
  const gpu = process.env.LIGHTNING_CUDA_ARCHS !== undefined || hasGpu();
  const chosen = process.env.LIGHTNING_CUDA_ARCHS ?? (gpu ? ALL_ARCHS : "90a");
  const archs = chosen.split(",").map((s) => s.trim()).filter(Boolean);
  const flags = archs.map((a) => `-gencode=arch=compute_${a},code=sm_${a}`);
  if (gpu) flags.push("-gencode=arch=compute_90,code=compute_90");
  else log(`no GPU here (nvidia-smi found none): building for sm_90a only, which proves every kernel compiles; LIGHTNING_CUDA_ARCHS=${ALL_ARCHS} builds every target`);
  return { archs, flags };
}

/** Node's own headers, so node-gyp never downloads them: <prefix>/include/node beside the node binary. */
function nodeDir() {
  const fromConfig = process.env.npm_config_nodedir;
  if (fromConfig && existsSync(join(fromConfig, "include", "node", "node_api.h"))) return fromConfig;
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, "include", "node", "node_api.h"))) return prefix;
  return null;
}

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", (err) => resolve({ code: -1, out: String(err) }));
    child.on("close", (code) => resolve({ code, out }));
  });
}

async function parallel(tasks, jobs) {
  const results = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(jobs, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++;
        results[i] = await tasks[i]();
      }
    }),
  );
  return results;
}

function fail(reason) {
  writeStatus({ ok: false, reason });
  const msg = `native build failed: ${reason}`;
  if (required) {
    console.error(`[@lightning-ts/cuda] ${msg}`);
    process.exit(1);
  }
  log(`${msg}\n  The package still works as a library, but createCudaBackend() will throw with this reason.`);
  process.exit(0);
}

async function main() {
  if (process.env.LIGHTNING_CUDA_SKIP === "1") {
    // An addon built before stays (the next build without the flag checks it is current).
    const built = existsSync(addonFile) && existsSync(statusFile) && JSON.parse(readFileSync(statusFile, "utf8")).ok;
    if (!built) writeStatus({ ok: false, reason: "native build skipped (LIGHTNING_CUDA_SKIP=1)" });
    log(`LIGHTNING_CUDA_SKIP=1: native build skipped${built ? "; the addon built before stays" : ""}`);
    return;
  }
  // native/op_codes.gen.h must match the TypeScript lists it is generated from; the generator is
  // absent (and nothing checked) in an installed package.
  const genCodes = new URL("./gen-codes.mjs", import.meta.url);
  const codesProblem = existsSync(genCodes) ? await (await import(genCodes.href)).checkHeader() : null;
  if (codesProblem) {
    console.error(`[@lightning-ts/cuda] ${codesProblem}`);
    process.exit(1);
  }
  const found = findNvcc();
  if (!found) {
    writeStatus({ ok: false, reason: "nvcc was not found when the package was built (install the CUDA toolkit, set CUDA_HOME, then run `pnpm --filter @lightning-ts/cuda build:native`)" });
    log("nvcc not found: skipping the native build (the CUDA backend will be unavailable)");
    return;
  }
  const { nvcc, home } = found;
  const version = spawnSync(nvcc, ["--version"], { encoding: "utf8" }).stdout.trim().split("\n").pop();
  const { archs, flags } = gencodes();
  const sources = readdirSync(nativeDir).filter((f) => /\.(cu|cuh|h|cc)$/.test(f)).sort();
  const hash = createHash("sha256");
  for (const f of sources) hash.update(f).update(readFileSync(join(nativeDir, f)));
  hash.update(readFileSync(join(root, "binding.gyp"))).update(readFileSync(fileURLToPath(import.meta.url)));
  hash.update(JSON.stringify({ flags, version, node: process.version }));
  const stamp = hash.digest("hex");
  if (!force && existsSync(statusFile) && existsSync(addonFile)) {
    const prev = JSON.parse(readFileSync(statusFile, "utf8"));
    if (prev.ok && prev.stamp === stamp) {
      log(`native addon up to date (${prev.archs.join(", ")})`);
      return;
    }
  }

  // The toolkit root holds include/cuda_runtime.h and the static runtime; nvcc may be a wrapper elsewhere.
  const roots = [home, process.env.CUDA_HOME, process.env.CUDA_PATH, "/usr/local/cuda"].filter(Boolean);
  let libDir = null;
  let cudaRoot = null;
  for (const r of roots) {
    libDir = [join(r, "lib64"), join(r, "targets", "x86_64-linux", "lib"), join(r, "lib")].find((d) => existsSync(join(d, "libcudart_static.a")));
    if (libDir && existsSync(join(r, "include", "cuda_runtime.h"))) {
      cudaRoot = r;
      break;
    }
  }
  if (!cudaRoot) fail(`libcudart_static.a and include/cuda_runtime.h were not found under ${roots.join(", ")}`);
  const nodedir = nodeDir();
  if (!nodedir) fail("Node's headers (include/node/node_api.h) were not found beside the node binary; set npm_config_nodedir");

  const started = Date.now();
  mkdirSync(objDir, { recursive: true });
  const cuFiles = sources.filter((f) => f.endsWith(".cu"));
  const jobs = Math.max(1, availableParallelism());
  const common = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-lineinfo", "-I", nativeDir, ...flags];
  // An object is reused when its source, the shared headers and the flags are unchanged.
  const headers = sources.filter((f) => /\.(cuh|h)$/.test(f)).map((f) => readFileSync(join(nativeDir, f), "utf8")).join("");
  const objHash = (f) => createHash("sha256").update(readFileSync(join(nativeDir, f))).update(headers).update(JSON.stringify([common, version])).digest("hex");
  const stale = cuFiles.filter((f) => {
    const stampFile = join(objDir, `${f}.hash`);
    return !existsSync(join(objDir, f.replace(/\.cu$/, ".o"))) || !existsSync(stampFile) || readFileSync(stampFile, "utf8") !== objHash(f);
  });
  log(`compiling ${stale.length} of ${cuFiles.length} CUDA files for ${archs.join(", ")}${flags.some((f) => f.endsWith("code=compute_90")) ? " + compute_90 PTX" : ""} with ${version}`);
  const results = await parallel(
    stale.map((f) => async () => {
      const r = await run(nvcc, [...common, "-c", join(nativeDir, f), "-o", join(objDir, f.replace(/\.cu$/, ".o"))]);
      if (r.code === 0) writeFileSync(join(objDir, `${f}.hash`), objHash(f));
      return r;
    }),
    jobs,
  );
  const bad = results.findIndex((r) => r.code !== 0);
  if (bad >= 0) fail(`nvcc failed on native/${stale[bad]}:\n${results[bad].out}`);
  rmSync(join(objDir, "libltscuda.a"), { force: true });
  const ar = await run("ar", ["rcs", join(objDir, "libltscuda.a"), ...cuFiles.map((f) => join(objDir, f.replace(/\.cu$/, ".o")))]);
  if (ar.code !== 0) fail(`ar failed:\n${ar.out}`);

  const gyp = createRequire(import.meta.url).resolve("node-gyp/bin/node-gyp.js");
  const env = { ...process.env, LIGHTNING_CUDA_HOME: cudaRoot, LIGHTNING_CUDA_LIBDIR: libDir };
  // make does not see the archive as an input of the link: remove the old addon so it is relinked.
  rmSync(addonFile, { force: true });
  rmSync(join(buildDir, "Release", "obj.target", "lightning_cuda.node"), { force: true });
  for (const step of ["configure", "build"]) {
    const r = await run(process.execPath, [gyp, step, `--nodedir=${nodedir}`, `--jobs=${jobs}`], { cwd: root, env });
    if (r.code !== 0) fail(`node-gyp ${step} failed:\n${r.out}`);
  }
  writeStatus({ ok: true, stamp, archs, nvcc: version, seconds: Math.round((Date.now() - started) / 1000) });
  log(`native addon built in ${Math.round((Date.now() - started) / 1000)} s: ${addonFile}`);
}

main().catch((err) => fail(String(err?.stack ?? err)));
