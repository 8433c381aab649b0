/// <reference lib="dom" />
/** The playground in headless Chromium (Debian's, never a downloaded one): send a prompt, see streamed text. */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Running, startServer } from "./helpers.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const present = existsSync(CHROMIUM);
if (!present) console.warn(`playground test skipped: no Chromium at ${CHROMIUM} (tools/setup.sh installs Debian's chromium when run as root)`);

describe.skipIf(!present)("playground", () => {
  let s: Running;
  let browser: BrowserContext;
  let profile: string;

  beforeAll(async () => {
    s = await startServer();
    profile = mkdtempSync(join(tmpdir(), "lightning-chromium-"));
    // A fresh profile directory (playwright passes it as --user-data-dir).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await s?.shutdown();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it("streams a completion into the page, sent from the keyboard", async () => {
    const page = await browser.newPage();
    await page.goto(s.url);
    await expect.poll(() => page.textContent("#model-name")).toBe("tiny");
    // Every form control has a label a screen reader can read.
    const unlabelled = await page.$$eval("input, textarea, button", (els) => els.filter((e) => !(e as HTMLInputElement).labels?.length && !e.textContent?.trim()).map((e) => e.id));
    expect(unlabelled).toEqual([]);
    await page.getByLabel("max_tokens").fill("400");
    await page.getByLabel("temperature").fill("0");
    // Watch the output grow: record its length whenever it changes.
    await page.evaluate(() => {
      const w = window as unknown as { lengths: number[] };
      w.lengths = [];
      new MutationObserver(() => w.lengths.push(document.getElementById("output")!.textContent.length)).observe(document.getElementById("output")!, { childList: true, characterData: true, subtree: true });
    });
    await page.getByLabel("Prompt", { exact: true }).fill("Call me Ishmael.");
    await page.getByLabel("Prompt", { exact: true }).press("Control+Enter");
    await expect.poll(() => page.textContent("#status"), { timeout: 30_000 }).toMatch(/^finished/);
    const text = await page.textContent("#output");
    expect(text!.length).toBeGreaterThan(0);
    const lengths = await page.evaluate(() => (window as unknown as { lengths: number[] }).lengths);
    expect(new Set(lengths).size).toBeGreaterThan(2); // it arrived in pieces, not at once
    expect(await page.textContent("#tps")).toMatch(/^\d/);
    await expect.poll(() => page.textContent("#state-seq")).toMatch(/KiB|MiB/);
  });
});
