/**
 * The launcher and the ranks as real processes: the trainer's own entry (main.ts, bundled once for
 * Node) started with --gpus N --dry-run on the cpu, so the ranks rendezvous and meet at barriers
 * without a GPU. One rank is killed, the launcher is signalled, ranks are started by hand without it.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, launch, launchSpec } from "../src/launch.js";
import { bundleMain, isAlive, joined, killStarted, pids, start, until } from "./processes.js";

beforeAll(bundleMain);
afterAll(killStarted);

/** Long enough that the ranks are still meeting at barriers when the test acts. */
const FOREVER = ["--dry-run", "--steps", "100000000"];

describe("launcher (processes on the cpu)", () => {
  it("--gpus 3 --dry-run: three ranks rendezvous, meet at barriers and all exit 0", async () => {
    const run = start(["--gpus", "3", "--dry-run", "--steps", "7"]);
    const { code, seconds } = await run.exit;
    expect(run.output()).toContain("dry run: 3 ranks met at 7 barriers");
    expect(code, run.output()).toBe(0);
    expect(seconds).toBeLessThan(60);
  });

  it("each rank gets the torchrun environment and the rest of the launcher's environment unchanged", async () => {
    const dir = mkdtempSync(join(tmpdir(), "launch-env-"));
    try {
      const script = `require("fs").writeFileSync(require("path").join(${JSON.stringify(dir)}, process.env.RANK + ".json"), JSON.stringify(process.env)); if (process.env.LOCAL_RANK !== "0") process.stderr.write("hello\\nfrom " + process.env.RANK)`;
      const spec = { ...launchSpec({ gpus: 3, nnodes: 2, nodeRank: 1, masterAddr: "127.0.0.1" }), masterPort: 29777 };
      const quiet: string[] = [];
      const result = await launch({ spec, command: process.execPath, args: ["-e", script], env: { ...process.env, NCCL_NVLS_ENABLE: "0", LIGHTNING_TEST_MARK: "kept" }, write: (t) => quiet.push(t), forwardSignals: false });
      expect(result).toEqual({ code: 0, failure: null });
      // The ranks the launcher pipes have their rank before every line, a last line without a newline
      // included; lines of different ranks may interleave, each rank's keep their order.
      const lines = quiet.join("").split("\n");
      for (const rank of [4, 5]) expect(lines.filter((l) => l.startsWith(`[rank ${rank}] `))).toEqual([`[rank ${rank}] hello`, `[rank ${rank}] from ${rank}`]);
      for (const [local, rank] of [3, 4, 5].entries()) {
        const env = JSON.parse(readFileSync(join(dir, `${rank}.json`), "utf8")) as Record<string, string>;
        expect(env).toMatchObject({ RANK: String(rank), WORLD_SIZE: "6", LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: "3", MASTER_ADDR: "127.0.0.1", MASTER_PORT: "29777", NCCL_NVLS_ENABLE: "0", LIGHTNING_TEST_MARK: "kept" });
        expect(env.PATH).toBe(process.env.PATH);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a rank started with a bad torchrun variable fails naming it", async () => {
    const direct = start(["--dry-run", "--steps", "1"], { RANK: "0", WORLD_SIZE: "x", MASTER_ADDR: "127.0.0.1", MASTER_PORT: "1" });
    expect((await direct.exit).code).toBe(1);
    expect(direct.output()).toContain('WORLD_SIZE expected an integer in [1, 1048576], got "x"');
  });

  it("a rank killed with SIGKILL brings the group down: the launcher names it and exits 1 within 60 s, no rank left running", async () => {
    const run = start(["--gpus", "3", ...FOREVER]);
    const [p0, p1, p2] = await pids(run, 3);
    await joined(run, 3);
    const killedAt = performance.now();
    process.kill(p1, "SIGKILL");
    const { code } = await run.exit;
    const seconds = (performance.now() - killedAt) / 1000;
    expect(code, run.output()).toBe(1);
    expect(run.output()).toContain(`train: the group failed: rank 1 (pid ${p1}) was killed by SIGKILL`);
    expect(seconds).toBeLessThan(60);
    expect([p0, p1, p2].filter(isAlive)).toEqual([]);
  });

  it("names the rank killed from outside even when a peer's error exit reaches the launcher first", async () => {
    // Rank 0 fails at once, as a peer of a killed rank does when its collective sees the dead peer;
    // rank 1 (which ignores the launcher's SIGTERM) is then killed by SIGKILL from outside.
    // Rank 0 waits for rank 1's file, written once rank 1 ignores SIGTERM.
    const dir = mkdtempSync(join(tmpdir(), "launch-kill-"));
    const ready = JSON.stringify(join(dir, "ready"));
    const script = `const fs = require("fs");
      if (process.env.RANK === "0") { const t = setInterval(() => { if (fs.existsSync(${ready})) { clearInterval(t); process.exit(1); } }, 10); }
      else { process.on("SIGTERM", () => {}); fs.writeFileSync(${ready}, ""); setTimeout(() => process.kill(process.pid, "SIGKILL"), 300); }`;
    try {
      const spec = { ...launchSpec({ gpus: 2, nnodes: 1, nodeRank: 0, masterAddr: "127.0.0.1" }), masterPort: await freePort() };
      const result = await launch({ spec, command: process.execPath, args: ["-e", script], write: () => undefined, forwardSignals: false });
      expect(result.code).toBe(1);
      expect(result.failure).toMatch(/^rank 1 \(pid \d+\) was killed by SIGKILL$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a rank that exits with an error: its message reaches the launcher's stderr with its rank, and the launcher names its exit code", async () => {
    // Rank 1 cannot reach a store at an address nobody serves; the launcher's own store port is elsewhere.
    const run = start(["--gpus", "2", "--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1", "--master-port", String(await freePort()), "--rendezvous-timeout", "1", ...FOREVER]);
    const { code, seconds } = await run.exit;
    expect(code, run.output()).toBe(1);
    // Whichever fails first: rank 2 (local rank 0) names itself, rank 3's lines get their rank from the launcher.
    expect(run.output()).toMatch(/(train: \[rank 2\] rendezvous: rank 2|\[rank 3\] train: rendezvous: rank 3) cannot reach the store at 127\.0\.0\.1:\d+ \(MASTER_ADDR:MASTER_PORT\) within 1 s/);
    expect(run.output()).toMatch(/train: the group failed: rank [23] \(pid \d+\) exited with code 1/);
    expect(seconds).toBeLessThan(60);
  });

  it("SIGTERM to the launcher reaches every rank; it exits 143", async () => {
    const run = start(["--gpus", "2", ...FOREVER]);
    const ranks = await pids(run, 2);
    await joined(run, 2);
    run.child.kill("SIGTERM");
    const { code } = await run.exit;
    expect(code, run.output()).toBe(143);
    expect(ranks.filter(isAlive)).toEqual([]);
  });

  it("a launcher killed outright takes its ranks with it", async () => {
    const run = start(["--gpus", "2", ...FOREVER]);
    const ranks = await pids(run, 2);
    await new Promise((r) => setTimeout(r, 300));
    run.child.kill("SIGKILL");
    await run.exit;
    await until("the ranks to leave", () => ranks.filter(isAlive).length === 0, 20_000);
  });

  it("--zero 1 without a group, and --zero other than 0 or 1, are refused by name", async () => {
    for (const args of [["--zero", "1"], ["--gpus", "1", "--zero", "1"]]) {
      const run = start([...args, "--steps", "3"]);
      expect((await run.exit).code, args.join(" ")).toBe(1);
      expect(run.output()).toContain("train: --zero 1 shards the optimizer state over the ranks of a group; give --gpus N with N > 1 as well");
    }
    const bad = start(["--gpus", "2", "--zero", "2", "--steps", "3"]);
    expect((await bad.exit).code).toBe(1);
    expect(bad.output()).toContain("--zero expected 0 (every rank keeps all optimizer state) or 1 (ZeRO-1: each rank its shard), got 2");
  });

  it("--gpus with the cpu backend and no --dry-run is refused by name, before any rank starts", async () => {
    const run = start(["--gpus", "2", "--steps", "3"]);
    expect((await run.exit).code).toBe(1);
    expect(run.output()).toContain("train: --gpus 2: the cpu backend cannot train in a group of processes");
    expect(run.output()).not.toContain("starting ranks");
  });
});

describe("ranks started without the launcher (torchrun style)", () => {
  const ranks = async (world: number) => {
    const port = await freePort();
    return Array.from({ length: world }, (_, rank) =>
      start([...FOREVER, "--rendezvous-timeout", "20"], { RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(world), MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) }),
    );
  };

  it("rank 0 fails with a clear error when another rank dies", async () => {
    const [r0, r1] = await ranks(2);
    await joined(r0, 2);
    const t0 = performance.now();
    r1.child.kill("SIGKILL");
    const { code } = await r0.exit;
    expect(code, r0.output()).toBe(1);
    expect(r0.output()).toContain("train: [rank 0] rank 1 left the group without finishing (its process is gone); stopping");
    expect((performance.now() - t0) / 1000).toBeLessThan(60);
  });

  it("the other ranks fail with a clear error when rank 0 dies", async () => {
    const [r0, r1, r2] = await ranks(3);
    await joined(r0, 3);
    r0.child.kill("SIGKILL");
    for (const [rank, run] of [
      [1, r1],
      [2, r2],
    ] as const) {
      expect((await run.exit).code, run.output()).toBe(1);
      expect(run.output()).toMatch(new RegExp(`train: \\[rank ${rank}\\] rendezvous: the store at 127\\.0\\.0\\.1:\\d+ \\(served by rank 0\\) closed the connection: rank 0 is gone; stopping`));
    }
  });

  it("a rank whose rank 0 never comes fails within its rendezvous timeout, naming the address", async () => {
    const port = await freePort();
    const run = start(["--dry-run", "--steps", "1", "--rendezvous-timeout", "2"], { RANK: "1", WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) });
    const { code, seconds } = await run.exit;
    expect(code).toBe(1);
    expect(run.output()).toContain(`train: [rank 1] rendezvous: rank 1 cannot reach the store at 127.0.0.1:${port} (MASTER_ADDR:MASTER_PORT) within 2 s: ECONNREFUSED`);
    expect(seconds).toBeLessThan(30);
  });
});
