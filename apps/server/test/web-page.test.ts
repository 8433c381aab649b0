/**
 * The browser page under /web/: the files at the top of the page's directory, with their content
 * types; nothing else (no other name, no path outside the directory); and a clear error at start
 * for a directory without index.html. /health reports the backend's memory and the decoder.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Running, startServer } from "./helpers.js";

describe("the browser page", () => {
  let s: Running;
  const dir = mkdtempSync(join(tmpdir(), "lightning-web-"));
  beforeAll(async () => {
    writeFileSync(join(dir, "index.html"), "<!doctype html><title>page</title><script type=module src=main.js></script>");
    writeFileSync(join(dir, "main.js"), "console.log('page');");
    writeFileSync(join(dir, "main.js.map"), "{}");
    writeFileSync(join(dir, "notes.txt"), "not served: no content type");
    s = await startServer({ webDir: dir });
  });
  afterAll(() => s.app.close());

  it("serves index.html and its modules with their types", async () => {
    const page = await fetch(`${s.url}/web/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await page.text()).toContain("<title>page</title>");
    const bare = await fetch(`${s.url}/web`, { redirect: "manual" });
    expect([301, 302]).toContain(bare.status);
    expect(bare.headers.get("location")).toBe("/web/");
    const js = await fetch(`${s.url}/web/main.js`);
    expect(js.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(await js.text()).toBe("console.log('page');");
    expect((await fetch(`${s.url}/web/main.js.map`)).status).toBe(200);
  });

  it("answers 404 for anything else", async () => {
    for (const path of ["/web/notes.txt", "/web/missing.js", "/web/..%2Fpackage.json", "/web/%2E%2E/server.ts", "/web/sub/main.js"]) {
      const res = await fetch(`${s.url}${path}`);
      expect(res.status, path).toBe(404);
    }
  });

  it("refuses a directory without index.html at start", async () => {
    await expect(startServer({ webDir: tmpdir() })).rejects.toThrow(/has no index.html/);
  });

  it("reports the backend's memory and the decoder in /health", async () => {
    const h = (await (await fetch(`${s.url}/health`)).json()) as { backend_memory: { liveBytes: number }; decode_graphs: boolean };
    expect(h.backend_memory.liveBytes).toBeGreaterThan(0);
    expect(h.decode_graphs).toBe(false); // the CPU backend records no graphs
  });
});
