#!/usr/bin/env python3
"""PyTorch's NCCL all-reduce bus bandwidth on 2 GPUs: the anchor of `pnpm bench collectives`.

One process per GPU (torch.multiprocessing.spawn), the NCCL backend of torch.distributed, the
sizes and dtypes of the lightning-ts suite, timed the same way: `iters` all-reduces enqueued back
to back, then a device synchronize, repeated `reps` times; the median is reported. Bus bandwidth is
NCCL's: 2(N-1)/N * bytes / time. Rank 0 prints one JSON row per case on stdout, with the field
names of apps/bench/src/suites/collectives.ts.

    python3 tools/anchors/nccl-allreduce-bench.py [--sizes-mib 1,4,...] [--dtypes f32,bf16] [--warmup 5] [--reps 20]

Keep NCCL_NVLS_ENABLE as the machine sets it (NVLink multicast stays off).
"""
import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

MIB = 1 << 20
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def iters_for(nbytes):
    # As the TypeScript suite: several all-reduces per sample, so the host's wait is small beside them.
    return max(1, min(50, round(256 * MIB / nbytes)))


def worker(rank, world, port, args, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    gen = torch.Generator(device="cuda").manual_seed(1 + rank)
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        for mib in (int(s) for s in args.sizes_mib.split(",")):
            nbytes = mib * MIB
            x = (torch.rand(nbytes // torch.tensor([], dtype=dtype).element_size(), device="cuda", generator=gen) * 2 - 1).to(dtype)
            iters = iters_for(nbytes)

            def one_round(n):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(n):
                    dist.all_reduce(x)
                torch.cuda.synchronize()
                return (time.perf_counter() - t0) / n

            one_round(args.warmup)
            times = [one_round(iters) for _ in range(args.reps)]
            # Every rank waits for the slowest: report the larger median, as nccl-tests reports the max.
            med = torch.tensor([statistics.median(times)], device="cuda", dtype=torch.float64)
            dist.all_reduce(med, op=dist.ReduceOp.MAX)
            t = med.item()
            algbw = nbytes / t / 1e9
            if rank == 0:
                out.put({
                    "suite": "collectives",
                    "impl": "torch.distributed",
                    "op": "allreduce",
                    "gpus": world,
                    "dtype": name,
                    "bytes": nbytes,
                    "time_us": t * 1e6,
                    "algbw_gbps": algbw,
                    "busbw_gbps": algbw * 2 * (world - 1) / world,
                    "iters": iters,
                    "reps": args.reps,
                    "torch": torch.__version__,
                    "nccl": ".".join(str(v) for v in torch.cuda.nccl.version()),
                    "device": f"{torch.cuda.get_device_name(0)} x{world}",
                })
            del x
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes-mib", default="1,2,4,8,16,32,64,128,256,512,1024")
    p.add_argument("--dtypes", default="f32,bf16")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--gpus", type=int, default=2)
    args = p.parse_args()
    if torch.cuda.device_count() < args.gpus:
        raise SystemExit(f"{torch.cuda.device_count()} CUDA device(s) here; {args.gpus} are needed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.spawn(worker, args=(args.gpus, port, args, out), nprocs=args.gpus, join=True)
    while not out.empty():
        print(json.dumps(out.get()), flush=True)


if __name__ == "__main__":
    main()
