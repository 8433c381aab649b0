/**
 * What a rank builds on the group: its backend on device LOCAL_RANK, and the collectives (NCCL on
 * cuda) over the whole group or a part of it. Also the dry run that checks a group without
 * training (`--dry-run`).
 *
 * The NCCL unique id travels through the rendezvous store: the first rank of a communicator makes
 * it, the others read it.
 */
import { createBackend } from "@lightning-ts/backends";
import { type Backend, type Collective, type DType, tensor } from "@lightning-ts/tensor";
import { type Group, GroupError } from "./group.js";


/** Why `backend` cannot train in a group of processes, or null when it can. */
export function groupBackendProblem(backend: string): string | null {
  if (backend === "cuda") return null;
  if (backend === "cpu") return "the cpu backend cannot train in a group of processes (its collective joins worker threads of one process); use --backend cuda, or train on the cpu in one process (without --gpus)";
  return `the ${backend} backend has no collective to train in a group with; use --backend cuda`;
}

/** This rank's backend: `cuda:LOCAL_RANK` on cuda, so that each process drives its own GPU. */
export async function rankBackend(name: string, group: Group): Promise<Backend> {
  return createBackend(name, name === "cuda" ? { device: group.env.localRank } : {});
}


/**
 * A collective over the world ranks `ranks` (in that order), for this rank, which must be one of
 * them. Every rank of `ranks` calls this at the same point; `name` keeps the ids of different
 * communicators apart.
 */
export async function groupCollective(group: Group, backend: Backend, ranks: readonly number[], name: string): Promise<Collective> {
  const index = ranks.indexOf(group.rank);
  if (index < 0) throw new GroupError(`rank ${group.rank} is not one of the ranks ${ranks.join(", ")} of the collective "${name}"`);
  const problem = groupBackendProblem(backend.name);
  if (problem) throw new GroupError(problem);
  // Loaded only here: a cpu run never loads the CUDA package.
  const { CudaBackend, createNcclCollective, ncclUniqueId } = await import("@lightning-ts/cuda");
  if (!(backend instanceof CudaBackend)) throw new GroupError(`a collective over NCCL needs a cuda backend, got ${backend.name}`);
  const uniqueId = await group.share(`nccl/${name}`, ranks[0], () => ncclUniqueId());
  return createNcclCollective({ backend, rank: index, worldSize: ranks.length, uniqueId });
}

const DRY_RUN_PAUSE_MS = 5;

/**
 * Checks a group without training: every rank meets the others at `steps` barriers of the store (5 ms apart);
 * on cuda each also all-reduces its rank + 1 over NCCL and checks the sum, so a broken NCCL setup
 * shows here and not an hour into a run. Rank 0 prints what it saw.
 */
export async function dryRun(group: Group, backendName: string, steps: number, say: (line: string) => void = (l) => void process.stderr.write(`${l}\n`)): Promise<void> {
  if (group.rank === 0) say(`dry run: ${group.worldSize} ranks joined the group at ${group.env.masterAddr}:${group.env.masterPort}`);
  let waited = 0;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await group.barrier("dry-run");
    waited += performance.now() - t0;
    // A pause between barriers, so that a long dry run leaves the host's cores to other work.
    await new Promise((r) => setTimeout(r, DRY_RUN_PAUSE_MS));
  }
  const barrierMs = waited / Math.max(1, steps);
  let checked = "store barriers only (no collective on this backend)";
  if (backendName === "cuda") {
    const backend = await rankBackend("cuda", group);
    const world = Array.from({ length: group.worldSize }, (_, r) => r);
    const collective = await groupCollective(group, backend, world, "dry-run");
    const dtype: DType = "f32";
    const mine = tensor([group.rank + 1], [1], { dtype, backend });
    const sum = collective.allReduce(mine, "sum");
    const got = (await sum.data())[0];
    const want = (group.worldSize * (group.worldSize + 1)) / 2;
    mine.dispose();
    sum.dispose();
    collective.dispose();
    if (got !== want) throw new GroupError(`NCCL all-reduce on rank ${group.rank} (cuda:${group.env.localRank}) gave ${got}, expected ${want}`);
    checked = `NCCL all-reduce over ${group.worldSize} ranks correct`;
  }
  await group.leave();
  if (group.rank === 0) say(`dry run: ${group.worldSize} ranks met at ${steps} barrier${steps === 1 ? "" : "s"} (${barrierMs.toFixed(2)} ms each); ${checked}`);
}
