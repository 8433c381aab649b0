/**
 * `pnpm serve … &` then `kill -TERM $!`: the PID a user gets is pnpm's, and pnpm passes the signal
 * to the shell it ran the script in, not to node. The server must still drain and exit. This runs
 * the real command from the repository root over a freshly built dist/.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postJson, waitFor } from "./helpers.js";
import { type TinyModel, writeTinyModel } from "./tiny-model.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const SERVER = fileURLToPath(new URL("../", import.meta.url));

let tiny: TinyModel;
const started: ChildProcess[] = [];

beforeAll(() => {
  execFileSync("pnpm", ["run", "build"], { cwd: SERVER, stdio: "ignore" });
  return writeTinyModel().then((t) => void (tiny = t));
}, 60_000);
afterAll(() => {
  for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** `pnpm serve` on a free port; resolves with the URL and the node server's own pid, from its start line. */
async function pnpmServe(): Promise<{ pnpm: ChildProcess; url: string; serverPid: number }> {
  const pnpm = spawn("pnpm", ["serve", "--model", tiny.dir, "--port", "0"], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  started.push(pnpm);
  let err = "";
  return new Promise((resolve, reject) => {
    pnpm.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      const m = /on (http:\/\/\S+) \(.*pid (\d+)\)/.exec(err);
      if (m) resolve({ pnpm, url: m[1], serverPid: Number(m[2]) });
    });
    pnpm.on("exit", () => reject(new Error(`pnpm serve exited before serving:\n${err}`)));
  });
}

// SIGINT sent to pnpm's pid is not tested: pnpm passes it to `sh -c`, which (dash) holds it until
// node exits while pnpm keeps waiting, so nothing ends; only `exec node …` in the root package.json's
// script reaches node then. Ctrl-C in a terminal signals the whole process group, node included.
describe("pnpm serve", () => {
  it.each(["SIGTERM"] as const)("drains and exits on %s sent to the pnpm process", async (signal) => {
    const { pnpm, url, serverPid } = await pnpmServe();
    expect(serverPid).not.toBe(pnpm.pid);
    const running = postJson(`${url}/v1/completions`, { prompt: "Call me", max_tokens: 200, temperature: 0, ignore_eos: true });
    await waitFor(async () => ((await (await fetch(`${url}/health`)).json()) as { active: number }).active === 1);
    pnpm.kill(signal);
    const done = await running;
    expect(done.status).toBe(200);
    expect(done.json.usage.completion_tokens).toBe(200);
    await waitFor(() => !alive(serverPid), 10_000);
  }, 30_000);
});
