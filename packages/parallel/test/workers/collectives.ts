/** Rank side of collectives.test.ts: every call of the CPU collective on seeded data. */
import { cpuRank } from "@lightning-ts/tensor/node";
import { type DType, tensor } from "@lightning-ts/tensor";

export interface CollectivesArgs {
  /** Per rank, the values it contributes. */
  values: number[][];
  shape: number[];
  dtype: DType;
}

cpuRank<Record<string, number[]>, CollectivesArgs>(async ({ collective: c, rank, worldSize, args }) => {
  const x = tensor(args.values[rank], args.shape, { dtype: args.dtype });
  const read = (t: { dataSync(): ArrayLike<number> }) => Array.from(t.dataSync());
  const out: Record<string, number[]> = {
    sum: read(c.allReduce(x)),
    max: read(c.allReduce(x, "max")),
    min: read(c.allReduce(x, "min")),
    gather: read(c.allGather(x)),
    scatter: read(c.reduceScatter(x)),
    bcast: read(c.broadcast(x, worldSize - 1)),
    async: read(c.allReduceAsync(x).wait()),
  };
  if (args.dtype !== "i32") out.avg = read(c.allReduce(x, "avg"));
  // A ring by send/recv: even ranks send first, so the rendezvous never cycles.
  if (worldSize > 1) {
    const next = (rank + 1) % worldSize;
    const prev = (rank + worldSize - 1) % worldSize;
    let got;
    if (rank % 2 === 0) {
      c.send(x, next);
      got = c.recv(args.shape, args.dtype, prev);
    } else {
      got = c.recv(args.shape, args.dtype, prev);
      c.send(x, next);
    }
    out.ring = read(got);
  }
  // In place: the result shares the input's storage, so the input reads as the reduction too.
  const scratch = tensor(args.values[rank], args.shape, { dtype: args.dtype });
  const maxInPlace = c.allReduce(scratch, "max", { inPlace: true });
  out.maxInPlace = read(maxInPlace);
  out.maxInPlaceInput = read(scratch);
  const scratch2 = tensor(args.values[rank], args.shape, { dtype: args.dtype });
  out.asyncInPlace = read(c.allReduceAsync(scratch2, "sum", { inPlace: true }).wait());
  out.asyncInPlaceInput = read(scratch2);
  // Out of place leaves the input alone.
  out.inputAfter = read(x);
  await c.barrier();
  return out;
});
