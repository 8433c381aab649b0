/**
 * End to end in a browser: bundles browser/entry.ts, serves it on localhost and runs it in headless
 * Chromium (the Debian package, driven by playwright-core; no browser is ever downloaded). WebGPU
 * there runs on SwiftShader. Skips with a printed reason when /usr/bin/chromium is absent.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PageReport } from "../browser/entry.js";

const CHROMIUM = "/usr/bin/chromium";
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const missing = existsSync(CHROMIUM) ? null : `${CHROMIUM} not found (tools/setup.sh installs the Debian package when run as root)`;
if (missing) console.log(`[browser] skipping the WebGPU browser test: ${missing}`);

describe.skipIf(missing !== null)("WebGPU backend in headless Chromium", () => {
  const dir = mkdtempSync(join(tmpdir(), "lightning-webgpu-page-"));
  let server: Server;
  let url = "";

  beforeAll(async () => {
    const { build } = await import("tsup");
    await build({
      entry: { page: here("../browser/entry.ts") },
      outDir: dir,
      config: false,
      dts: false,
      format: ["esm"],
      platform: "browser",
      target: "es2022",
      noExternal: [/.*/],
      silent: true,
      esbuildOptions(options) {
        // Workspace packages from their sources, as vitest resolves them (subpaths included).
        options.tsconfig = here("../../../tsconfig.paths.json");
        options.alias = { vitest: here("../../../tools/gpu-tests/vitest.ts") };
        // Node-only corners of the tensor core (worker threads) are dynamic imports the page never reaches.
        options.external = ["node:*", "webgpu"];
      },
    });
    const files: Record<string, [string, string]> = {
      "/": ["text/html", `<!doctype html><meta charset="utf-8"><title>lightning-ts webgpu</title><script type="module" src="/page.js"></script>`],
      "/page.js": ["text/javascript", readFileSync(join(dir, "page.js"), "utf8")],
    };
    server = createServer((req, res) => {
      const file = files[req.url ?? ""];
      res.writeHead(file ? 200 : 404, { "content-type": file?.[0] ?? "text/plain" });
      res.end(file?.[1] ?? "not found");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });

  afterAll(() => {
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs a subset of the conformance suite on navigator.gpu", async () => {
    const { chromium } = await import("playwright-core");
    const profile = mkdtempSync(join(tmpdir(), "lightning-chromium-"));
    // A fresh profile directory per run (playwright passes it as --user-data-dir).
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--enable-unsafe-webgpu",
        "--enable-unsafe-swiftshader",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    try {
      const page = await browser.newPage();
      const logs: string[] = [];
      page.on("console", (m) => logs.push(m.text()));
      page.on("pageerror", (e) => logs.push(String(e)));
      await page.goto(url);
      await page.waitForFunction(() => (globalThis as { __results?: PageReport }).__results !== undefined, undefined, { timeout: 240_000 });
      const report = await page.evaluate(() => (globalThis as { __results?: PageReport }).__results!);
      if (report.error) throw new Error(`page failed: ${report.error}\n${logs.join("\n")}`);
      console.log(`[browser] ${report.device}: ${report.results.map((r) => `${r.ok ? "ok" : "FAIL"} ${r.name.split(" > ").pop()} (${r.ms.toFixed(0)} ms)`).join("; ")}`);
      const failed = report.results.filter((r) => !r.ok);
      expect(failed.map((r) => `${r.name}: ${r.error}`)).toEqual([]);
      expect(report.results.length).toBeGreaterThanOrEqual(9);
    } finally {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    }
  }, 300_000);
});
