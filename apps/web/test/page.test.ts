/**
 * The page end to end: trains a tiny TNL and BPE tokenizer here (seconds on the CPU), builds the
 * page, serves dist/ on localhost and drives it in headless Chromium (the Debian package, through
 * playwright-core; no browser is downloaded), where WebGPU runs on SwiftShader. The files go in
 * through the page's file pickers; the greedy ids the page shows must be those of the same
 * checkpoint on the CPU backend in Node. Skips with a printed reason when /usr/bin/chromium is absent.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { AdamW } from "@lightning-ts/autograd/optim";
import { disposeParams, generateIds, greedy, initParams, loadCheckpoint, makeConfig, saveCheckpoint, splitBatch, stateBytesPerSequence, trainStep } from "@lightning-ts/tnl";
import { saveTokenizerJson, trainBpe } from "@lightning-ts/tokenizer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const CHROMIUM = "/usr/bin/chromium";
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const missing = existsSync(CHROMIUM) ? null : `${CHROMIUM} not found (tools/setup.sh installs the Debian package when run as root)`;
if (missing) console.log(`[web] skipping the page test: ${missing}`);

const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

/** A tiny model trained for a few steps on the repository's own prose, saved with its tokenizer. */
async function trainTinyModel(dir: string, seed: number): Promise<{ prompt: number[]; text: string }> {
  const corpus = ["../../../docs/ALGORITHM.md", "../../../packages/tnl/README.md"].map((p) => readFileSync(here(p), "utf8")).join("\n");
  const tokenizer = trainBpe(corpus, { vocabSize: 300, specialTokens: ["<pad>", "<s>", "</s>"] });
  const config = makeConfig({ vocabSize: 300, dModel: 32, numLayers: 1, numHeads: 2, gluDim: 64 });
  const ids = tokenizer.encode(corpus);
  const rows = 8;
  const span = 64;
  let params = initParams(config, { seed });
  const opt = new AdamW({ lr: 1e-2 });
  let first = 0;
  let last = 0;
  for (let s = 0; s < 200; s++) {
    const batch = new Int32Array(rows * span);
    for (let r = 0; r < rows; r++) {
      const at = (seed * 7919 + (s * rows + r) * 131) % (ids.length - span);
      batch.set(ids.slice(at, at + span), r * span);
    }
    const res = await trainStep(params, config, opt, splitBatch(batch, rows, span, rows), { gradClip: 1 });
    params = res.params;
    if (s === 0) first = res.loss;
    last = res.loss;
  }
  console.log(`[web] trained d=32, 1 layer, vocab 300 (seed ${seed}): loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
  expect(last).toBeLessThan(first);
  await saveCheckpoint(dir, { config, params });
  disposeParams(params);
  writeFileSync(join(dir, "tokenizer.json"), saveTokenizerJson(tokenizer));
  const text = "The recurrent state of Lightning Attention";
  return { prompt: tokenizer.encode(text), text };
}

describe.skipIf(missing !== null)("the web page in headless Chromium", () => {
  const work = mkdtempSync(join(tmpdir(), "lightning-web-"));
  const site = join(work, "site");
  const model = join(work, "model");
  let server: Server;
  let url = "";
  let prompt: { prompt: number[]; text: string };
  let seed = Date.now() % 1000;
  let N = 0;
  let oracle: number[] = [];

  beforeAll(async () => {
    mkdirSync(model);
    // A tiny model can fall into repeating one token, which would make the page's ids easy to
    // match: such a model is trained again with the next seed (a property of the model, not the page).
    for (let attempt = 0; ; attempt++) {
      prompt = await trainTinyModel(model, seed);
      N = 13 + (seed % 7);
      const oracleModel = await loadCheckpoint(model);
      [oracle] = await generateIds(oracleModel, prompt.prompt, { maxTokens: N, sampler: greedy() });
      disposeParams(oracleModel.params);
      if (new Set(oracle).size > 1 && oracle.length === N) break;
      if (attempt === 3) throw new Error(`four tiny models in a row generated one repeated token or stopped early (last seed ${seed}): ${oracle.join(",")}`);
      console.log(`[web] seed ${seed}: greedy output ${oracle.join(",")} is degenerate; training again with the next seed`);
      seed = (seed + 1) % 1000;
    }
    const { build } = await import("tsup");
    await build({ config: here("../tsup.config.ts"), outDir: site, silent: true, onSuccess: undefined, sourcemap: false });
    writeFileSync(join(site, "index.html"), readFileSync(here("../src/index.html")));
    server = createServer((req, res) => {
      const path = normalize(new URL(req.url ?? "/", "http://x").pathname).replace(/^\/+/, "") || "index.html";
      const file = join(site, path);
      const ok = !path.startsWith("..") && existsSync(file);
      res.writeHead(ok ? 200 : 404, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(ok ? readFileSync(file) : "not found");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  }, 240_000);

  afterAll(() => {
    server?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("generates the CPU oracle's greedy ids from picked files, with a constant state", async () => {
    const { chromium } = await import("playwright-core");
    const profile = mkdtempSync(join(tmpdir(), "lightning-chromium-"));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 900, height: 760 },
      args: ["--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    try {
      const page = await browser.newPage();
      const logs: string[] = [];
      page.on("console", (m) => logs.push(m.text()));
      page.on("pageerror", (e) => logs.push(String(e)));
      await page.goto(url);
      const errorText = () => page.locator("#error").textContent();
      await page.waitForSelector("#device[data-state=ready]", { timeout: 60_000 }).catch(async () => {
        throw new Error(`WebGPU did not start: ${await errorText()}\n${logs.join("\n")}`);
      });

      // A bad file first: the page says which file and what was wrong.
      await page.setInputFiles("#config-file", { name: "config.json", mimeType: "application/json", buffer: Buffer.from("{ not json") });
      await page.setInputFiles("#weights-file", join(model, "model.safetensors"));
      await page.setInputFiles("#tokenizer-file", join(model, "tokenizer.json"));
      await page.click("#load");
      await page.waitForSelector("#error[data-state=error]");
      expect(await errorText()).toMatch(/config\.json: expected JSON/);

      await page.setInputFiles("#config-file", join(model, "config.json"));
      await page.click("#load");
      await page.waitForSelector("#model-info[data-state=loaded]", { timeout: 60_000 });
      await page.fill("#prompt", prompt.text);
      await page.fill("#max-tokens", String(N));
      await page.click("#generate");
      await page.waitForSelector("#output[data-state=done], #error:not(:empty)", { timeout: 180_000 });
      expect(await errorText()).toBe("");
      const ids = (await page.locator("#output").getAttribute("data-ids"))!.split(",").map(Number);
      const stateText = await page.locator("#state-size").textContent();
      const bytes = Number(await page.locator("#state-size").getAttribute("data-bytes"));
      const firstBytes = Number(await page.locator("#state-size").getAttribute("data-first-bytes"));
      console.log(`[web] page: ${ids.length} tokens, ${await page.locator("#tokens-per-s").textContent()}, ${stateText}; oracle ${oracle.join(",")}`);
      // A model stuck on one token would make the comparison weak; the trained one varies.
      expect(new Set(oracle).size).toBeGreaterThan(1);
      expect(ids).toEqual(oracle);
      expect(ids.length).toBe(N);
      const config = (await loadCheckpoint(model)).config;
      expect(bytes).toBe(stateBytesPerSequence(config));
      expect(firstBytes).toBe(bytes);
      expect(await page.locator("#token-count").textContent()).toBe(`${N} tokens`);
      // docs/web-page.png is refreshed on request only, so a test run leaves the tree as it was.
      const shot = process.env.LIGHTNING_WEB_SCREENSHOT === "1" ? here("../../../docs/web-page.png") : join(work, "web-page.png");
      await page.screenshot({ path: shot, fullPage: true });
      expect(readFileSync(shot).subarray(1, 4).toString()).toBe("PNG");
    } finally {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    }
  }, 300_000);
});
