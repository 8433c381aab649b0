/**
 * The rendezvous of a group of ranks (the torchrun convention): rank 0 serves a small key-value store
 * over TCP at MASTER_ADDR:MASTER_PORT and every rank, rank 0 included, is a client of it. The ranks
 * use it to hand each other the NCCL unique id and to meet at barriers; rank 0 also learns from it
 * when another rank's process goes away (its connection closes without a goodbye), and the others
 * when rank 0 does.
 *
 * Messages are length-prefixed: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
 * Values are bytes (base64 in the JSON); `add` keeps a decimal counter.
 *
 * @example
 * const server = await StoreServer.listen("127.0.0.1", 29500);                 // rank 0 only
 * const store = await StoreClient.connect("127.0.0.1", 29500, { rank, timeoutMs: 30_000 });
 * if (rank === 0) await store.set("nccl/id", ncclUniqueId());
 * const id = await store.get("nccl/id");
 * await store.barrier("ready", worldSize);
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export class RendezvousError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RendezvousError";
  }
}

type Request =
  | { id: number; op: "hello"; rank: number }
  | { id: number; op: "set"; key: string; value: string }
  | { id: number; op: "get"; key: string }
  | { id: number; op: "wait"; keys: string[] }
  | { id: number; op: "add"; key: string; amount: number }
  | { id: number; op: "barrier"; key: string; count: number }
  | { id: number; op: "bye" };

type Reply = { id: number; value?: string; number?: number; error?: string };

/** The longest message either side accepts: a store holds ids and counters, not tensors. */
const MAX_MESSAGE = 16 << 20;

function frame(message: object): Buffer {
  const body = Buffer.from(JSON.stringify(message), "utf8");
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/** Calls `onMessage` for every whole message that arrives on `socket`. */
function readFrames(socket: Socket, onMessage: (message: unknown) => void, onError: (err: Error) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 4) {
      const length = pending.readUInt32BE(0);
      if (length > MAX_MESSAGE) {
        onError(new RendezvousError(`rendezvous: a message of ${length} bytes, more than the ${MAX_MESSAGE} a store message may have (is something else listening on this port?)`));
        socket.destroy();
        return;
      }
      if (pending.length < 4 + length) break;
      const body = pending.subarray(4, 4 + length);
      pending = pending.subarray(4 + length);
      let message: unknown;
      try {
        message = JSON.parse(body.toString("utf8"));
      } catch {
        onError(new RendezvousError("rendezvous: a message that is not JSON (is something else listening on this port?)"));
        socket.destroy();
        return;
      }
      onMessage(message);
    }
  });
}

/** The store, served by rank 0. */
export class StoreServer {
  private readonly values = new Map<string, Buffer>();
  /** Requests waiting for keys that are not set yet. */
  private waiters: { keys: string[]; socket: Socket; id: number; value: boolean }[] = [];
  /** Ranks that have reached each barrier not yet complete. */
  private readonly arrived = new Map<string, { socket: Socket; id: number }[]>();
  private readonly sockets = new Set<Socket>();
  private lostListeners: ((rank: number) => void)[] = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listens on `host:port` (port 0 for any free one; `port` then says which). */
  static listen(host: string, port: number): Promise<StoreServer> {
    const server = createServer();
    return new Promise((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => {
        const why = err.code === "EADDRINUSE" ? "the port is in use (another run? pick another with --master-port)" : err.message;
        reject(new RendezvousError(`rendezvous: rank 0 cannot serve the store on ${host}:${port}: ${why}`));
      });
      server.listen(port, host, () => {
        const address = server.address();
        const store = new StoreServer(server, typeof address === "object" && address ? address.port : port);
        server.on("connection", (socket) => store.accept(socket));
        resolve(store);
      });
    });
  }

  /** `listener(rank)` when a rank's connection closes without a goodbye: its process is gone. */
  onLost(listener: (rank: number) => void): void {
    this.lostListeners.push(listener);
  }

  /**
   * Stops serving once every client has left (or after `timeoutMs`): closing earlier could drop
   * answers still on their way, such as the last barrier's.
   */
  async close(timeoutMs = 10_000): Promise<void> {
    this.server.close();
    const deadline = Date.now() + timeoutMs;
    while (this.sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const s of this.sockets) s.destroy();
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    let rank = -1;
    let leaving = false;
    socket.on("error", () => {}); // a peer that vanishes shows as "close", handled below
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.waiters = this.waiters.filter((w) => w.socket !== socket);
      for (const [key, ranks] of this.arrived) this.arrived.set(key, ranks.filter((a) => a.socket !== socket));
      if (!leaving && rank >= 0) for (const l of this.lostListeners) l(rank);
    });
    readFrames(
      socket,
      (message) => {
        const req = message as Request;
        switch (req.op) {
          case "hello":
            rank = req.rank;
            return this.reply(socket, { id: req.id });
          case "bye":
            leaving = true;
            return this.reply(socket, { id: req.id });
          case "set":
            this.values.set(req.key, Buffer.from(req.value, "base64"));
            return this.wake();
          case "add": {
            const next = Number(this.values.get(req.key)?.toString() ?? "0") + req.amount;
            this.values.set(req.key, Buffer.from(String(next)));
            this.reply(socket, { id: req.id, number: next });
            return this.wake();
          }
          case "barrier": {
            const ranks = [...(this.arrived.get(req.key) ?? []), { socket, id: req.id }];
            if (ranks.length < req.count) return void this.arrived.set(req.key, ranks);
            // The last arrival releases everyone at once: no rank needs the server again for this barrier.
            this.arrived.delete(req.key);
            for (const a of ranks) this.reply(a.socket, { id: a.id });
            return;
          }
          case "get":
          case "wait": {
            const keys = req.op === "get" ? [req.key] : req.keys;
            this.waiters.push({ keys, socket, id: req.id, value: req.op === "get" });
            return this.wake();
          }
          default:
            return this.reply(socket, { id: (req as { id: number }).id, error: `unknown request ${JSON.stringify((req as { op: unknown }).op)}` });
        }
      },
      () => {},
    );
  }

  /** Answers every waiter whose keys are all set. */
  private wake(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.keys.every((k) => this.values.has(k))) return true;
      this.reply(w.socket, w.value ? { id: w.id, value: this.values.get(w.keys[0])!.toString("base64") } : { id: w.id });
      return false;
    });
  }

  private reply(socket: Socket, reply: Reply): void {
    if (!socket.destroyed) socket.write(frame(reply));
  }
}

export interface ConnectOptions {
  /** This client's rank, so that the server can name it when it goes away. */
  rank: number;
  /** How long to keep trying to reach the store (rank 0 may not listen yet), and the default for `get`, `wait` and `barrier`. */
  timeoutMs: number;
}

/** A rank's connection to the store. */
export class StoreClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private closing = false;
  private lostListeners: ((err: RendezvousError) => void)[] = [];
  private barriers = 0;

  private constructor(
    private readonly socket: Socket,
    readonly address: string,
    private readonly timeoutMs: number,
  ) {
    readFrames(
      socket,
      (message) => {
        const reply = message as Reply;
        const p = this.pending.get(reply.id);
        if (!p) return; // a request that timed out here
        this.pending.delete(reply.id);
        p.resolve(reply);
      },
      (err) => this.fail(err),
    );
    socket.on("error", () => {});
    socket.on("close", () => {
      if (!this.closing) this.fail(new RendezvousError(`rendezvous: the store at ${address} (served by rank 0) closed the connection: rank 0 is gone`));
    });
  }

  /**
   * Connects to the store at `host:port`, retrying until `timeoutMs` has passed; then fails with an
   * error that names the address and the last reason.
   */
  static async connect(host: string, port: number, options: ConnectOptions): Promise<StoreClient> {
    const address = `${host}:${port}`;
    const deadline = Date.now() + options.timeoutMs;
    let last = "";
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      const left = deadline - Date.now();
      let client: StoreClient | null = null;
      try {
        const socket = await openSocket(host, port, Math.max(1, Math.min(left, 5000)));
        client = new StoreClient(socket, address, options.timeoutMs);
        await client.request({ op: "hello", rank: options.rank }, Math.max(1000, left));
        return client;
      } catch (err) {
        client?.destroy();
        last = (err as Error).message;
      }
      if (Date.now() + delay >= deadline) break;
      await new Promise((r) => setTimeout(r, delay));
    }
    throw new RendezvousError(
      `rendezvous: rank ${options.rank} cannot reach the store at ${address} (MASTER_ADDR:MASTER_PORT) within ${(options.timeoutMs / 1000).toFixed(0)} s: ${last}. Is rank 0 running, and is the address reachable from this host?`,
    );
  }

  /** `listener(error)` when the connection to the store breaks: rank 0's process is gone. */
  onLost(listener: (err: RendezvousError) => void): void {
    this.lostListeners.push(listener);
  }

  async set(key: string, value: Uint8Array | string): Promise<void> {
    const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    // Nothing to answer: the socket keeps the order, so a later `get` by this rank sees the value.
    this.send({ id: 0, op: "set", key, value: bytes.toString("base64") });
    return Promise.resolve();
  }

  /** The value of `key`, waiting up to `timeoutMs` for some rank to set it. */
  async get(key: string, timeoutMs = this.timeoutMs): Promise<Uint8Array> {
    const reply = await this.request({ op: "get", key }, timeoutMs, `key "${key}"`);
    return new Uint8Array(Buffer.from(reply.value ?? "", "base64"));
  }

  /** Waits until every key of `keys` is set. */
  async wait(keys: readonly string[], timeoutMs = this.timeoutMs): Promise<void> {
    await this.request({ op: "wait", keys: [...keys] }, timeoutMs, `keys ${keys.map((k) => `"${k}"`).join(", ")}`);
  }

  /** Adds `amount` to the counter `key` (0 when unset) and returns the new value. */
  async add(key: string, amount: number): Promise<number> {
    const reply = await this.request({ op: "add", key, amount }, this.timeoutMs, `key "${key}"`);
    return reply.number!;
  }

  /**
   * Resolves once `worldSize` ranks have called `barrier` with the same name the same number of
   * times (every rank calls its barriers in the same order). One request per rank, all answered
   * when the last arrives: a rank released first may block its thread (in a collective, say)
   * without holding up the others' release, even when it serves the store.
   */
  async barrier(name: string, worldSize: number, timeoutMs = this.timeoutMs): Promise<void> {
    const key = `barrier/${name}/${this.barriers++}`;
    await this.request({ op: "barrier", key, count: worldSize }, timeoutMs, `the other ranks at barrier "${name}"`).catch((err: Error) => {
      throw new RendezvousError(`${err.message} (barrier "${name}" of ${worldSize} ranks: some rank never reached it)`);
    });
  }

  /** Leaves cleanly: the server does not report this rank as lost. */
  async close(): Promise<void> {
    if (this.closing) return;
    await this.request({ op: "bye" }, 5000).catch(() => {});
    this.closing = true;
    this.socket.end();
  }

  /** Drops the connection at once (a rank that is failing anyway). */
  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private send(req: Request): void {
    if (this.closing || this.socket.destroyed) throw new RendezvousError(`rendezvous: the connection to the store at ${this.address} is closed`);
    this.socket.write(frame(req));
  }

  private request(body: DistributiveOmit<Request, "id">, timeoutMs: number, what = "an answer"): Promise<Reply> {
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RendezvousError(`rendezvous: timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting for ${what} from the store at ${this.address}`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          if (r.error) reject(new RendezvousError(`rendezvous: the store at ${this.address}: ${r.error}`));
          else resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      try {
        this.send({ ...body, id });
      } catch (err) {
        this.pending.get(id)?.reject(err as Error);
        this.pending.delete(id);
      }
    });
  }

  private fail(err: RendezvousError): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    if (!this.closing) for (const l of this.lostListeners) l(err);
    this.closing = true;
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function openSocket(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${(timeoutMs / 1000).toFixed(1)} s`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(err.code ?? err.message));
    });
  });
}
