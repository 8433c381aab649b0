/** The rendezvous store, the torchrun environment, the launcher's flags and the dp × sp layout, in one process. */
import { describe, expect, it } from "vitest";
import { GroupError, layout, rankEnv } from "../src/group.js";
import { freePort, LaunchError, launchSpec, rankEnvironments } from "../src/launch.js";
import { StoreClient, StoreServer } from "../src/rendezvous.js";

const HOST = "127.0.0.1";

async function storeOf(ranks: number, timeoutMs = 5000) {
  const server = await StoreServer.listen(HOST, 0);
  const clients = await Promise.all(Array.from({ length: ranks }, (_, rank) => StoreClient.connect(HOST, server.port, { rank, timeoutMs })));
  const close = async () => {
    for (const c of clients) c.destroy();
    await server.close(100);
  };
  return { server, clients, close };
}

/** Seeded bytes (a stand-in for an NCCL unique id, 128 bytes), none of them all zero. */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = (x >>> 16) & 0xff;
  }
  return out;
}

describe("rendezvous store", () => {
  it("hands bytes set by one rank to every other, including ones asked for before they were set", async () => {
    const { clients, close } = await storeOf(3);
    const id = bytes(128, 7);
    const early = clients[2].get("nccl/id");
    await new Promise((r) => setTimeout(r, 50));
    await clients[0].set("nccl/id", id);
    expect(await early).toEqual(id);
    expect(await clients[1].get("nccl/id")).toEqual(id);
    // A value of odd length, and one longer than a TCP segment, come back whole.
    const big = bytes(70_001, 3);
    await clients[1].set("big", big);
    expect(await clients[0].get("big")).toEqual(big);
    await close();
  });

  it("add counts across ranks; wait waits for every key", async () => {
    const { clients, close } = await storeOf(3);
    const sums = await Promise.all(clients.map((c, i) => c.add("n", i + 2)));
    expect(sums.sort((a, b) => a - b).at(-1)).toBe(2 + 3 + 4);
    const waiting = clients[0].wait(["a", "b"]);
    let done = false;
    void waiting.then(() => (done = true));
    await clients[1].set("a", "1");
    await new Promise((r) => setTimeout(r, 50));
    expect(done).toBe(false);
    await clients[2].set("b", "2");
    await waiting;
    await close();
  });

  it("a barrier releases only when every rank has reached it, and can be used again", async () => {
    const { clients, close } = await storeOf(3);
    for (let round = 0; round < 3; round++) {
      const arrived: number[] = [];
      const first = clients.slice(0, 2).map((c, i) => c.barrier("step", 3).then(() => arrived.push(i)));
      await new Promise((r) => setTimeout(r, 30));
      expect(arrived).toEqual([]);
      await Promise.all([...first, clients[2].barrier("step", 3)]);
      expect(arrived.sort()).toEqual([0, 1]);
    }
    await close();
  });

  it("a key nobody sets times out with an error naming the key and the address", async () => {
    const { server, clients, close } = await storeOf(1);
    const t0 = performance.now();
    await expect(clients[0].get("never", 300)).rejects.toThrow(`timed out after 0 s waiting for key "never" from the store at ${HOST}:${server.port}`);
    expect(performance.now() - t0).toBeLessThan(3000);
    await expect(clients[0].barrier("lonely", 2, 200)).rejects.toThrow(/barrier "lonely" of 2 ranks: some rank never reached it/);
    await close();
  });

  it("a store nobody serves fails within the timeout, naming the address", async () => {
    const port = await freePort(HOST);
    const t0 = performance.now();
    await expect(StoreClient.connect(HOST, port, { rank: 3, timeoutMs: 700 })).rejects.toThrow(
      new RegExp(`rank 3 cannot reach the store at ${HOST}:${port} \\(MASTER_ADDR:MASTER_PORT\\) within 1 s: ECONNREFUSED`),
    );
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it("a port in use is an error naming it; rank 0 learns when another rank's connection drops, not when it says goodbye", async () => {
    const { server, clients, close } = await storeOf(3);
    await expect(StoreServer.listen(HOST, server.port)).rejects.toThrow(`rank 0 cannot serve the store on ${HOST}:${server.port}: the port is in use`);
    const lost: number[] = [];
    server.onLost((r) => lost.push(r));
    await clients[1].close();
    clients[2].destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(lost).toEqual([2]);
    await close();
  });

  it("the other ranks learn when rank 0's store goes away", async () => {
    const { server, clients, close } = await storeOf(2);
    const errors: string[] = [];
    clients[1].onLost((e) => errors.push(e.message));
    const pending = clients[1].get("never");
    await server.close(0);
    await expect(pending).rejects.toThrow(/closed the connection: rank 0 is gone/);
    expect(errors).toHaveLength(1);
    await close();
  });
});

describe("the torchrun environment", () => {
  const base = { RANK: "2", WORLD_SIZE: "4", LOCAL_RANK: "0", LOCAL_WORLD_SIZE: "2", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "29511" };

  it("is read and checked, naming the variable", () => {
    expect(rankEnv({})).toBeNull();
    expect(rankEnv(base)).toEqual({ rank: 2, worldSize: 4, localRank: 0, localWorldSize: 2, masterAddr: "10.0.0.1", masterPort: 29511, launcherPid: null });
    expect(() => rankEnv({ ...base, RANK: "4" })).toThrow(new GroupError('RANK expected an integer in [0, 3], got "4"'));
    expect(() => rankEnv({ ...base, WORLD_SIZE: undefined })).toThrow("WORLD_SIZE expected an integer in [1, 1048576], but it is not set (RANK is)");
    expect(() => rankEnv({ ...base, MASTER_PORT: "http" })).toThrow('MASTER_PORT expected an integer in [1, 65535], got "http"');
    expect(() => rankEnv({ ...base, MASTER_ADDR: "" })).toThrow('MASTER_ADDR expected the host of rank 0, got ""');
    // LOCAL_* default as torchrun-like tools that leave them out would mean.
    expect(rankEnv({ RANK: "1", WORLD_SIZE: "3", MASTER_ADDR: "h", MASTER_PORT: "1" })).toMatchObject({ localRank: 1, localWorldSize: 3 });
  });

  it("is what the launcher gives each rank, node by node", () => {
    const spec = { ...launchSpec({ gpus: 3, nnodes: 2, nodeRank: 1, masterAddr: "node0" }), masterPort: 29600 };
    const envs = rankEnvironments(spec);
    expect(envs.map((e) => rankEnv(e))).toEqual([3, 4, 5].map((rank, local) => ({ rank, worldSize: 6, localRank: local, localWorldSize: 3, masterAddr: "node0", masterPort: 29600, launcherPid: process.pid })));
  });

  it("launcher flags are checked, naming the flag", () => {
    expect(launchSpec({})).toEqual({ gpus: 1, nnodes: 1, nodeRank: 0, masterAddr: "127.0.0.1", masterPort: null });
    expect(launchSpec({ nnodes: 2, masterAddr: "a" }).masterPort).toBe(29500);
    expect(() => launchSpec({ gpus: 0 })).toThrow(new LaunchError("--gpus expected a positive integer, got 0"));
    expect(() => launchSpec({ nnodes: 2 })).toThrow("--master-addr is needed with --nnodes 2");
    expect(() => launchSpec({ nnodes: 2, nodeRank: 2, masterAddr: "a" })).toThrow("--node-rank expected an integer in [0, 1] (--nnodes 2), got 2");
    expect(() => launchSpec({ masterPort: 70000 })).toThrow("--master-port expected a TCP port in [1, 65535], got 70000");
  });
});

describe("dp × sp layout", () => {
  it("puts sp consecutive ranks in a sequence-parallel group and covers every rank once in each kind of group", () => {
    for (const [world, sp] of [
      [6, 3],
      [6, 2],
      [5, 1],
      [4, 4],
    ]) {
      const all = Array.from({ length: world }, (_, r) => layout(r, world, sp));
      for (const [r, l] of all.entries()) {
        expect(l.dp * l.sp).toBe(world);
        expect(l.spGroup[l.spRank]).toBe(r);
        expect(l.dpGroup[l.dpRank]).toBe(r);
        // Ranks of one sp group read the same rows; ranks of one dp group hold the same part of the sequence.
        for (const peer of l.spGroup) expect(all[peer].dpRank).toBe(l.dpRank);
        for (const peer of l.dpGroup) expect(all[peer].spRank).toBe(l.spRank);
      }
    }
    expect(() => layout(0, 6, 4)).toThrow("--sequence-parallel 4 must divide the 6 ranks of the group");
  });
});
