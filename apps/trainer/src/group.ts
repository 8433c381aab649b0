/**
 * The rank side of a group: the torchrun environment read and checked, the rendezvous (rank 0
 * serves the store, every rank connects to it), and the layout of the ranks into data- and
 * sequence-parallel groups.
 *
 * A rank whose peer goes away fails at once rather than waiting forever in a collective: rank 0
 * sees another rank's connection to the store close, the others see rank 0's close, and a rank
 * started by the launcher also leaves when the launcher is gone.
 *
 * Layout (world = dp × sp): rank r is in sequence-parallel group ⌊r / sp⌋ at position r mod sp, so
 * an sp group is sp consecutive ranks (on one host when sp divides the GPUs per host, where the
 * sequence-parallel exchange is fastest); data-parallel group j holds the ranks at position j.
 *
 * @example
 * const env = rankEnv(process.env);            // null when this process is not a rank
 * if (env) {
 *   const group = await joinGroup(env);
 *   await group.barrier("ready");
 *   await group.leave();
 * }
 */
import { RendezvousError, StoreClient, StoreServer } from "./rendezvous.js";

export interface RankEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Set when the trainer's launcher started this rank. */
  launcherPid: number | null;
}

export class GroupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GroupError";
  }
}

/**
 * The torchrun variables of this process; null when RANK is not set (a single process, or the
 * launcher itself). A variable that is missing or out of range is an error naming it.
 */
export function rankEnv(env: NodeJS.ProcessEnv): RankEnv | null {
  if (env.RANK === undefined) return null;
  const int = (name: string, min: number, max: number, fallback?: number): number => {
    const text = env[name];
    if (text === undefined && fallback !== undefined) return fallback;
    const v = Number(text);
    if (text === undefined || text.trim() === "" || !Number.isInteger(v) || v < min || v > max) {
      throw new GroupError(`${name} expected an integer in [${min}, ${max}]${text === undefined ? ", but it is not set (RANK is)" : `, got ${JSON.stringify(text)}`}`);
    }
    return v;
  };
  const worldSize = int("WORLD_SIZE", 1, 1 << 20);
  const rank = int("RANK", 0, worldSize - 1);
  const localWorldSize = int("LOCAL_WORLD_SIZE", 1, worldSize, worldSize);
  const localRank = int("LOCAL_RANK", 0, localWorldSize - 1, rank % localWorldSize);
  const masterPort = int("MASTER_PORT", 1, 65535);
  const masterAddr = env.MASTER_ADDR;
  if (masterAddr === undefined || masterAddr.trim() === "") throw new GroupError(`MASTER_ADDR expected the host of rank 0, got ${JSON.stringify(masterAddr)}`);
  const pid = Number(env.LIGHTNING_LAUNCHER_PID);
  return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort, launcherPid: Number.isInteger(pid) && pid > 0 ? pid : null };
}

/**
 * "[rank 3] " before a rank's messages, or "" where the launcher already puts the rank before every
 * line (all its ranks but local rank 0, which writes to the terminal directly) or for no rank.
 */
export function rankLabel(env: RankEnv | null): string {
  if (env === null || (env.launcherPid !== null && env.localRank !== 0)) return "";
  return `[rank ${env.rank}] `;
}

export interface Layout {
  /** Data-parallel ranks: each reads its own part of every global batch. */
  dp: number;
  /** Sequence-parallel ranks: each holds T / sp tokens of the same rows. */
  sp: number;
  /** This rank's place in its data-parallel group (which part of the batch it reads). */
  dpRank: number;
  /** This rank's place in its sequence-parallel group (which part of the sequence it holds). */
  spRank: number;
  /** The world ranks of this rank's sequence-parallel group and of its data-parallel group. */
  spGroup: number[];
  dpGroup: number[];
}

/** The dp × sp layout of `worldSize` ranks for `--sequence-parallel sp`, checked. */
export function layout(rank: number, worldSize: number, sp = 1): Layout {
  if (!Number.isInteger(sp) || sp < 1) throw new GroupError(`--sequence-parallel expected a positive integer, got ${JSON.stringify(sp)}`);
  if (worldSize % sp !== 0) throw new GroupError(`--sequence-parallel ${sp} must divide the ${worldSize} ranks of the group (--gpus × --nnodes)`);
  const dp = worldSize / sp;
  const spIndex = Math.floor(rank / sp);
  const spRank = rank % sp;
  return {
    dp,
    sp,
    dpRank: spIndex,
    spRank,
    spGroup: Array.from({ length: sp }, (_, i) => spIndex * sp + i),
    dpGroup: Array.from({ length: dp }, (_, i) => i * sp + spRank),
  };
}

/** How long a rank waits to reach the store, and for a key or a barrier (default 5 minutes: a first CUDA start on a busy host is slow). */
export const DEFAULT_RENDEZVOUS_TIMEOUT_MS = 300_000;

export interface JoinOptions {
  timeoutMs?: number;
  /**
   * What to do when a peer is gone (default: print `error` to stderr and exit with code 1, since
   * the other ranks may be stuck in a collective that will never complete).
   */
  onPeerLost?: (error: GroupError) => void;
}

/** A rank's membership of the group: the store and its failure watch. */
export class Group {
  private leaving = false;

  constructor(
    readonly env: RankEnv,
    readonly store: StoreClient,
    private readonly server: StoreServer | null,
  ) {}

  get rank(): number {
    return this.env.rank;
  }

  get worldSize(): number {
    return this.env.worldSize;
  }

  /** Every rank waits here until all have arrived. */
  barrier(name: string, timeoutMs?: number): Promise<void> {
    return this.store.barrier(name, this.env.worldSize, timeoutMs);
  }

  /**
   * `make()` on `root` (a world rank) and the bytes it returned on every rank of `ranks`, under a
   * key unique to `name`: how an NCCL unique id reaches the ranks of a communicator.
   */
  async share(name: string, root: number, make: () => Uint8Array | Promise<Uint8Array>): Promise<Uint8Array> {
    const key = `share/${name}/${root}`;
    if (this.env.rank === root) {
      const bytes = await make();
      await this.store.set(key, bytes);
      return bytes;
    }
    return this.store.get(key);
  }

  /** Whether this rank is leaving on purpose (its peers going away then is no failure). */
  get isLeaving(): boolean {
    return this.leaving;
  }

  /** Leaves the group after a last barrier, so that rank 0's store outlives every other rank's use of it. */
  async leave(): Promise<void> {
    if (this.leaving) return;
    await this.barrier("leave");
    this.leaving = true;
    await this.store.close();
    await this.server?.close();
  }
}

/** Connects this rank to the group: rank 0 serves the store first, then every rank connects and meets at a barrier. */
export async function joinGroup(env: RankEnv, options: JoinOptions = {}): Promise<Group> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_RENDEZVOUS_TIMEOUT_MS;
  const onPeerLost =
    options.onPeerLost ??
    ((err: GroupError) => {
      process.stderr.write(`train: ${rankLabel(env)}${err.message}\n`);
      process.exit(1);
    });
  let group: Group | null = null;
  watchLauncher(env, () => group?.isLeaving === true, onPeerLost);
  // Rank 0 listens on every interface when MASTER_ADDR is not a loopback address, so other hosts reach it.
  const loopback = env.masterAddr === "localhost" || env.masterAddr.startsWith("127.") || env.masterAddr === "::1";
  const server = env.rank === 0 ? await StoreServer.listen(loopback ? env.masterAddr : "0.0.0.0", env.masterPort) : null;
  const store = await StoreClient.connect(env.masterAddr, env.masterPort, { rank: env.rank, timeoutMs });
  const joined = new Group(env, store, server);
  group = joined;
  server?.onLost((rank) => {
    if (!joined.isLeaving) onPeerLost(new GroupError(`rank ${rank} left the group without finishing (its process is gone); stopping`));
  });
  store.onLost((err: RendezvousError) => {
    if (!joined.isLeaving) onPeerLost(new GroupError(`${err.message}; stopping`));
  });
  await joined.barrier("join");
  return joined;
}

/** A rank started by the launcher leaves when the launcher is gone (its IPC channel closes), so no rank outlives it. */
function watchLauncher(env: RankEnv, leaving: () => boolean, onLost: (err: GroupError) => void): void {
  if (env.launcherPid === null || !process.channel) return;
  const lost = () => {
    if (!leaving()) onLost(new GroupError(`the launcher (pid ${env.launcherPid}) is gone; stopping`));
  };
  // The channel must not keep a finished rank alive.
  process.channel.unref();
  process.once("disconnect", lost);
  // A launcher killed while this rank was still loading is gone already.
  if (!process.connected) lost();
}
