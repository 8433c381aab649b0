#!/usr/bin/env python3
"""GPU anchor benchmark: linear attention with per-head decay (Lightning Attention style) on one GPU.

It only *imports* third-party packages (OpenNLPLab lightning_attn, fla-org fla); none of their code
is copied here. Run on a machine with an NVIDIA GPU from the repository root (tools/anchors/README.md
says how to get the peer sources into .cache/anchors):

    FLA_COMMIT=bc3b101d LA_COMMIT=d15c3852 python3 tools/anchors/gpu-anchor-bench.py \
        --anchors .cache/anchors --out runs/anchors/peers.json --budget 400

Measures (bf16 unless noted, B*N = 65536 tokens, H = 16 heads, d = e = 128, d = e = 64 and, with --n256,
d = 256, e = 128; --kernels runs only the named kernels, --no-decode skips the decode step):
  * lightning_attn2 (OpenNLPLab Triton kernel), variants chunk_loop and parallel: fwd and fwd+bwd
  * fla chunk_simple_gla (scalar per-head decay g_gamma = -slope), fla chunk_lightning_attn: fwd and fwd+bwd
  * fla fused_recurrent_simple_gla: fwd at small N only
  * torch SDPA causal (flash and cuDNN backends): fwd and fwd+bwd
  * naive masked quadratic linear attention (bf16, O(N^2)) fwd at N <= 8192
  * correctness of all of the above vs a float64 quadratic oracle at N = 2048 (B = 2)
  * physical limits: device-to-device copy bandwidth, bf16 8192^3 matmul TFLOP/s
  * decoding: one recurrent step (state B x 16 x 128 x 128 fp32) for B = 1 and 64
Every measurement is wrapped in try/except; failures are recorded as one line and the run continues.
Results are written incrementally to --out (JSON) so a killed run still leaves data.
"""
import argparse
import json
import math
import os
import sys
import time
import traceback
import types

ap = argparse.ArgumentParser()
ap.add_argument("--anchors", default=".cache/anchors", help="folder holding fla/ and lightning/ (the peer sources)")
ap.add_argument("--out", default="bench.json")
ap.add_argument("--budget", type=float, default=400.0, help="seconds for the whole script (soft)")
ap.add_argument("--warmup", type=float, default=10.0, help="do_bench warmup, ms")
ap.add_argument("--rep", type=float, default=40.0, help="do_bench rep, ms")
ap.add_argument("--n128", default="1024,2048,4096,8192,16384,32768,65536,131072",
                help="sequence lengths for d=128 (B = max(1, 65536 // N))")
ap.add_argument("--n64", default="1024,8192,65536", help="sequence lengths for d=64")
ap.add_argument("--no-oracle", action="store_true")
ap.add_argument("--n256", default="", help="sequence lengths for d=256, e=128 (the LRPE layer's doubled key width)")
ap.add_argument("--kernels", default="", help="comma-separated kernel names to run (default: all)")
ap.add_argument("--no-decode", action="store_true", help="skip the decode-step measurements")
args = ap.parse_args()
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

T0 = time.time()


def elapsed():
    return time.time() - T0


def left():
    return args.budget - elapsed()


ANCH = os.path.abspath(args.anchors)
sys.path.insert(0, os.path.join(ANCH, "lightning"))
sys.path.insert(0, os.path.join(ANCH, "fla"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from triton.testing import do_bench  # noqa: E402

R = {"env": {}, "limits": {}, "decode": [], "bench": [], "oracle": [], "errors": [], "skipped": []}


def save():
    R["elapsed_s"] = round(elapsed(), 1)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(R, f, indent=1)
    os.replace(tmp, args.out)


def err1(e):
    s = f"{type(e).__name__}: {e}".replace("\n", " | ")
    return s[:400]


def log(*a):
    print(f"[{elapsed():6.1f}s]", *a, flush=True)


def bench_ms(fn, grad_to_none=None):
    return do_bench(fn, warmup=args.warmup, rep=args.rep, grad_to_none=grad_to_none, return_mode="median")


dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
props = torch.cuda.get_device_properties(0)
R["env"] = {
    "gpu": torch.cuda.get_device_name(0),
    "sm_count": props.multi_processor_count,
    "total_mem_GiB": round(props.total_memory / 2**30, 2),
    "l2_MB": round(getattr(props, "L2_cache_size", 0) / 1e6, 1),
    "capability": list(torch.cuda.get_device_capability(0)),
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version(),
    "triton": triton.__version__,
    "python": sys.version.split()[0],
    "fla_commit": os.environ.get("FLA_COMMIT", "?"),
    "lightning_attn_commit": os.environ.get("LA_COMMIT", "?"),
    "do_bench": {"warmup_ms": args.warmup, "rep_ms": args.rep, "return_mode": "median", "l2_flush": "triton default"},
}

H = 16


def alibi_slopes(h):
    # ALiBi-style geometric schedule as used by Lightning Attention / TNL for power-of-two h:
    # s_i = 2^(-8 (i+1) / h), i = 0..h-1
    assert h & (h - 1) == 0
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)], dtype=torch.float32)


# ---------------------------------------------------------------- imports of the kernels under test
LA = {}
try:
    from lightning_attn.ops import lightning_attn_func  # type: ignore
    from lightning_attn.utils import _build_slope_tensor  # type: ignore

    LA["func"] = lightning_attn_func
    s_la = _build_slope_tensor(H).to(torch.float32).flatten()
    R["env"]["slopes_match_lightning_attn"] = bool(torch.allclose(s_la, alibi_slopes(H)))
    R["env"]["lightning_attn_import"] = "ok"
except Exception as e:  # noqa: BLE001
    R["env"]["lightning_attn_import"] = err1(e)
    R["errors"].append("import lightning_attn: " + err1(e))

FLA = {}


def _import_fla():
    from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla  # type: ignore

    FLA["chunk_simple_gla"] = chunk_simple_gla
    FLA["fused_recurrent_simple_gla"] = fused_recurrent_simple_gla
    try:
        from fla.ops.lightning_attn import chunk_lightning_attn  # type: ignore

        FLA["chunk_lightning_attn"] = chunk_lightning_attn
    except Exception as e:  # noqa: BLE001
        R["errors"].append("import fla.ops.lightning_attn: " + err1(e))


try:
    _import_fla()
    R["env"]["fla_import"] = "ok (full package)"
except Exception as e:  # noqa: BLE001
    # fall back: skip fla/__init__ (layers/models, which pull in transformers) and import fla.ops only
    first = err1(e)
    for k in [k for k in sys.modules if k == "fla" or k.startswith("fla.")]:
        del sys.modules[k]
    m = types.ModuleType("fla")
    m.__path__ = [os.path.join(ANCH, "fla", "fla")]
    sys.modules["fla"] = m
    try:
        _import_fla()
        R["env"]["fla_import"] = "ok (fla.ops only; package import failed: " + first + ")"
    except Exception as e2:  # noqa: BLE001
        R["env"]["fla_import"] = err1(e2)
        R["errors"].append("import fla: " + err1(e2))
try:
    import fla  # type: ignore

    R["env"]["fla_version"] = getattr(fla, "__version__", "?")
except Exception:  # noqa: BLE001
    pass
save()
log("env", json.dumps(R["env"]))

# ---------------------------------------------------------------- physical limits
try:
    for gb in (4, 1):
        n = gb * (1 << 30) // 4
        src = torch.randn(n, device=dev, dtype=torch.float32)
        dst = torch.empty_like(src)
        ms = bench_ms(lambda: dst.copy_(src))
        R["limits"][f"copy_{gb}GB_GBps"] = round(2 * n * 4 / ms / 1e6, 1)
        R["limits"][f"copy_{gb}GB_ms"] = round(ms, 4)
        del src, dst
        torch.cuda.empty_cache()
except Exception as e:  # noqa: BLE001
    R["errors"].append("copy: " + err1(e))
try:
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    ms = bench_ms(lambda: a @ b)
    R["limits"]["matmul_bf16_8192_TFLOPs"] = round(2 * 8192**3 / ms / 1e9, 1)
    R["limits"]["matmul_bf16_8192_ms"] = round(ms, 4)
    del a, b
    torch.cuda.empty_cache()
except Exception as e:  # noqa: BLE001
    R["errors"].append("matmul: " + err1(e))
COPY_BW = R["limits"].get("copy_4GB_GBps", float("nan"))
save()
log("limits", R["limits"])

# ---------------------------------------------------------------- decoding: one recurrent step
DK = DV = 128
for Bd in (() if args.no_decode else (1, 64)):
    try:
        g = torch.Generator(device=dev).manual_seed(10 + Bd)
        S = torch.randn(Bd, H, DK, DV, device=dev, generator=g) * 0.1
        q = torch.randn(Bd, H, DK, device=dev, generator=g) / DK**0.25
        k = torch.randn(Bd, H, DK, device=dev, generator=g) / DK**0.25
        v = torch.randn(Bd, H, DV, device=dev, generator=g)
        lam = torch.exp(-alibi_slopes(H)).to(dev).view(1, H, 1, 1)

        def step_outer():
            S.mul_(lam).add_(k.unsqueeze(-1) * v.unsqueeze(-2))
            return torch.matmul(q.unsqueeze(-2), S)

        S3 = S.view(Bd * H, DK, DV)
        k3 = k.reshape(Bd * H, DK, 1)
        v3 = v.reshape(Bd * H, 1, DV)
        q3 = q.reshape(Bd * H, 1, DK)

        def step_baddbmm():
            S.mul_(lam)
            S3.baddbmm_(k3, v3)
            return torch.bmm(q3, S3)

        state_bytes = 2 * Bd * H * DK * DV * 4  # read + write the fp32 state once
        row = {"B": Bd, "state": f"{Bd}x{H}x{DK}x{DV} fp32", "min_bytes": state_bytes}
        for name, fn in (("torch_mul_add_outer+matmul", step_outer), ("torch_mul_+baddbmm_+bmm", step_baddbmm)):
            try:
                ms = bench_ms(fn)
                row[name + "_eager_us"] = round(ms * 1e3, 2)
            except Exception as e:  # noqa: BLE001
                row[name + "_eager_err"] = err1(e)
            try:
                ms = triton.testing.do_bench_cudagraph(fn, rep=args.rep, return_mode="median")
                row[name + "_cudagraph_us"] = round(ms * 1e3, 2)
            except Exception as e:  # noqa: BLE001
                row[name + "_cudagraph_err"] = err1(e)
        if "fused_recurrent_simple_gla" in FLA:
            try:
                fr = FLA["fused_recurrent_simple_gla"]
                qf = q.to(torch.bfloat16).view(Bd, 1, H, DK)
                kf = k.to(torch.bfloat16).view(Bd, 1, H, DK)
                vf = v.to(torch.bfloat16).view(Bd, 1, H, DV)
                gg = (-alibi_slopes(H)).to(dev)
                h0 = S.clone()
                fn = lambda: fr(qf, kf, vf, g_gamma=gg, scale=1.0, initial_state=h0, output_final_state=True)  # noqa: E731
                ms = bench_ms(fn)
                row["fla_fused_recurrent_step_eager_us"] = round(ms * 1e3, 2)
            except Exception as e:  # noqa: BLE001
                row["fla_fused_recurrent_step_err"] = err1(e)
        R["decode"].append(row)
        del S, q, k, v
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        R["errors"].append(f"decode B={Bd}: " + err1(e))
    save()
    log("decode", R["decode"][-1] if R["decode"] else None)

# ---------------------------------------------------------------- kernels


def mk_inputs(B, N, d, e, layout, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    shp_qk = (B, H, N, d) if layout == "bhnd" else (B, N, H, d)
    shp_v = (B, H, N, e) if layout == "bhnd" else (B, N, H, e)
    q = (torch.randn(shp_qk, device=dev, generator=g) / d**0.25).to(torch.bfloat16)
    k = (torch.randn(shp_qk, device=dev, generator=g) / d**0.25).to(torch.bfloat16)
    v = torch.randn(shp_v, device=dev, generator=g).to(torch.bfloat16)
    do = torch.randn(shp_v, device=dev, generator=g).to(torch.bfloat16)
    return q, k, v, do


SLOPES = alibi_slopes(H).to(dev)
S_LA = SLOPES.view(H, 1, 1).contiguous()  # lightning_attn expects (h, 1, 1) fp32
G_GAMMA = (-SLOPES).contiguous()  # fla: log-decay per step, shape [H]
FLA_LAYER_IDX, FLA_NUM_LAYERS = 0, 24


def fla_lightning_slopes(h, layer_idx=FLA_LAYER_IDX, num_layers=FLA_NUM_LAYERS):
    # decay used inside fla.ops.lightning_attn.chunk_lightning_attn (read from its source):
    # g_gamma = -(8/H * (1 - layer_idx/num_layers)) * [0, 1, ..., H-1]
    return torch.tensor([8.0 / h * (1 - layer_idx / num_layers) * i for i in range(h)], dtype=torch.float32)


KERNELS = []  # (name, layout, fn(q,k,v)->o, has_bwd, max_N or None)
if "func" in LA:
    KERNELS.append(("la2_chunk_loop", "bhnd", lambda q, k, v: LA["func"](q, k, v, S_LA, variant="chunk_loop"), True, None))
    KERNELS.append(("la2_parallel", "bhnd", lambda q, k, v: LA["func"](q, k, v, S_LA, variant="parallel"), True, None))
if "chunk_simple_gla" in FLA:
    KERNELS.append(("fla_chunk_simple_gla", "bnhd",
                    lambda q, k, v: FLA["chunk_simple_gla"](q, k, v, g_gamma=G_GAMMA, scale=1.0)[0], True, None))
if "chunk_lightning_attn" in FLA:
    KERNELS.append(("fla_chunk_lightning_attn", "bnhd",
                    lambda q, k, v: FLA["chunk_lightning_attn"](q, k, v, layer_idx=FLA_LAYER_IDX,
                                                               num_layers=FLA_NUM_LAYERS, scale=1.0)[0], True, None))
if "fused_recurrent_simple_gla" in FLA:
    KERNELS.append(("fla_fused_recurrent_simple_gla", "bnhd",
                    lambda q, k, v: FLA["fused_recurrent_simple_gla"](q, k, v, g_gamma=G_GAMMA, scale=1.0)[0],
                    False, 8192))

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def _sdpa(backend):
        def f(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return f

    KERNELS.append(("sdpa_flash_causal", "bhnd", _sdpa(SDPBackend.FLASH_ATTENTION), True, None))
    KERNELS.append(("sdpa_cudnn_causal", "bhnd", _sdpa(SDPBackend.CUDNN_ATTENTION), True, None))
except Exception as e:  # noqa: BLE001
    R["errors"].append("sdpa setup: " + err1(e))

_MASKS = {}


def decay_mask(N, slopes, dtype):
    key = (N, dtype, float(slopes.sum()))
    if key not in _MASKS:
        _MASKS.clear()
        i = torch.arange(N, device=dev)
        diff = (i[:, None] - i[None, :])
        m = torch.exp(-slopes.to(dev, torch.float64).view(-1, 1, 1) * diff.clamp(min=0)) * (diff >= 0)
        _MASKS[key] = m.to(dtype)
    return _MASKS[key]


def naive_linear_attn(q, k, v, slopes):
    # masked quadratic form: o = ((q k^T) * M) v, M[h,i,j] = exp(-s_h (i-j)) for i >= j else 0; layout bhnd
    M = decay_mask(q.shape[2], slopes, q.dtype)
    return torch.matmul(torch.matmul(q, k.transpose(-1, -2)) * M, v)


KERNELS.append(("naive_quadratic_bf16", "bhnd", lambda q, k, v: naive_linear_attn(q, k, v, SLOPES), False, 8192))


def run_sweep(d, sizes, deadline, e=None):
    e = e or d
    for (B, N) in sizes:
        if elapsed() > deadline:
            R["skipped"].append(f"sweep d={d} B={B} N={N}: time budget")
            continue
        ins = {}
        try:
            for layout in ("bhnd", "bnhd"):
                ins[layout] = mk_inputs(B, N, d, e, layout, seed=1000 + N + d)
        except Exception as ex:  # noqa: BLE001
            R["errors"].append(f"inputs d={d} B={B} N={N}: " + err1(ex))
            continue
        tok = B * N
        fwd_bytes = tok * H * (2 * d + 2 * e) * 2
        bwd_bytes = tok * H * (2 * d + 2 * e + 2 * d + e) * 2
        for (name, layout, fn, has_bwd, maxN) in KERNELS:
            if maxN is not None and N > maxN:
                continue
            if args.kernels and name not in args.kernels.split(","):
                continue
            if elapsed() > deadline:
                R["skipped"].append(f"{name} d={d} B={B} N={N}: time budget")
                continue
            if name.startswith("naive") and B * H * N * N * 2 * 2 > 40e9:
                R["skipped"].append(f"{name} d={d} B={B} N={N}: memory")
                continue
            row = {"kernel": name, "d": d, "e": e, "H": H, "B": B, "N": N, "tokens": tok}
            q, k, v, do = ins[layout]
            try:
                torch.cuda.reset_peak_memory_stats()
                ms = bench_ms(lambda: fn(q, k, v))
                row["fwd_ms"] = round(ms, 4)
                row["fwd_tok_per_s"] = round(tok / ms * 1e3)
                row["fwd_GBps_qkvo"] = round(fwd_bytes / ms / 1e6, 1)
                row["fwd_frac_copy_bw"] = round(fwd_bytes / ms / 1e6 / COPY_BW, 3)
                if name.startswith("sdpa"):
                    row["fwd_TFLOPs"] = round(4 * B * H * N * N * d / 2 / ms / 1e9, 1)
            except Exception as ex:  # noqa: BLE001
                row["fwd_err"] = err1(ex)
            if has_bwd and "fwd_err" not in row and elapsed() <= deadline:
                try:
                    qg, kg, vg = (t.detach().clone().requires_grad_(True) for t in (q, k, v))

                    def fb():
                        o = fn(qg, kg, vg)
                        o.backward(do)

                    ms = bench_ms(fb, grad_to_none=[qg, kg, vg])
                    row["fwdbwd_ms"] = round(ms, 4)
                    row["fwdbwd_tok_per_s"] = round(tok / ms * 1e3)
                    row["fwdbwd_GBps_min"] = round((fwd_bytes + bwd_bytes) / ms / 1e6, 1)
                    if name.startswith("sdpa"):
                        row["fwdbwd_TFLOPs"] = round(3.5 * 4 * B * H * N * N * d / 2 / ms / 1e9, 1)
                    del qg, kg, vg
                except Exception as ex:  # noqa: BLE001
                    row["fwdbwd_err"] = err1(ex)
            row["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            R["bench"].append(row)
            save()
            log("bench", json.dumps(row))
        del ins
        _MASKS.clear()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- oracle


def rel(a, b):
    a = a.double()
    b = b.double()
    return {"rel_l2": float((a - b).norm() / b.norm()), "max_rel": float((a - b).abs().max() / b.abs().max())}


def run_oracle(d, B=2, N=2048):
    e = d
    q, k, v, do = mk_inputs(B, N, d, e, "bhnd", seed=7 + d)

    def ref(slopes, dtype):
        qd, kd, vd = (t.detach().to(dtype).requires_grad_(True) for t in (q, k, v))
        o = naive_linear_attn(qd, kd, vd, slopes)
        o.backward(do.to(dtype))
        out = (o.detach(), qd.grad, kd.grad, vd.grad)
        _MASKS.clear()
        return out

    ref64 = ref(SLOPES, torch.float64)
    ref32 = ref(SLOPES, torch.float32)
    res = {"d": d, "B": B, "N": N, "H": H, "reference": "naive quadratic masked form in float64 (inputs: the bf16 tensors upcast)"}
    res["naive_fp32_vs_fp64"] = {n: rel(a, b) for n, a, b in zip(("o", "dq", "dk", "dv"), ref32, ref64)}
    del ref32
    cand = []
    for (name, layout, fn, has_bwd, _) in KERNELS:
        if name.startswith("sdpa"):
            continue
        cand.append((name, layout, fn, has_bwd))
    for (name, layout, fn, has_bwd) in cand:
        try:
            if name == "fla_chunk_lightning_attn":
                r = ref(fla_lightning_slopes(H).to(dev), torch.float64)
                note = "vs float64 oracle with fla's own lightning decay s_h = 8/H*(1-l/L)*h (l=0, L=24)"
            else:
                r = ref64
                note = "vs float64 oracle, ALiBi slopes"
            if layout == "bnhd":
                qi, ki, vi, doi = (t.transpose(1, 2).contiguous() for t in (q, k, v, do))
            else:
                qi, ki, vi, doi = q, k, v, do
            qi, ki, vi = (t.detach().clone().requires_grad_(has_bwd) for t in (qi, ki, vi))
            o = fn(qi, ki, vi)
            entry = {"kernel": name, "note": note}
            if has_bwd:
                o.backward(doi)
            tr = (lambda t: t.transpose(1, 2)) if layout == "bnhd" else (lambda t: t)
            entry["o"] = rel(tr(o.detach()), r[0])
            if has_bwd:
                entry["dq"] = rel(tr(qi.grad), r[1])
                entry["dk"] = rel(tr(ki.grad), r[2])
                entry["dv"] = rel(tr(vi.grad), r[3])
            entry["finite"] = bool(torch.isfinite(o).all())
            res.setdefault("kernels", []).append(entry)
            log("oracle", d, json.dumps(entry))
        except Exception as ex:  # noqa: BLE001
            res.setdefault("kernels", []).append({"kernel": name, "err": err1(ex)})
            log("oracle", d, name, "ERR", err1(ex))
        torch.cuda.empty_cache()
    R["oracle"].append(res)
    save()


TOK = 65536


def _sizes(spec):
    return [(max(1, TOK // int(n)), int(n)) for n in spec.split(",") if n.strip()]


SIZES_128 = _sizes(args.n128)
SIZES_64 = _sizes(args.n64)
SIZES_256 = _sizes(args.n256)
R["env"]["sizes"] = {"d128": SIZES_128, "d64": SIZES_64, "d256_e128": SIZES_256, "oracle": not args.no_oracle}

ORACLE_RESERVE = 0.0 if args.no_oracle else 45.0
D64_RESERVE = (70.0 if SIZES_64 else 0.0) + (0.3 * args.budget if SIZES_256 else 0.0)
try:
    run_sweep(128, SIZES_128, deadline=args.budget - ORACLE_RESERVE - D64_RESERVE)
except Exception as ex:  # noqa: BLE001
    R["errors"].append("sweep128: " + err1(ex) + " " + traceback.format_exc()[-300:])
for d in (() if args.no_oracle else (128, 64)):
    try:
        run_oracle(d)
    except Exception as ex:  # noqa: BLE001
        R["errors"].append(f"oracle d={d}: " + err1(ex))
try:
    run_sweep(256, SIZES_256, deadline=args.budget - (70.0 if SIZES_64 else 5.0), e=128)
except Exception as ex:  # noqa: BLE001
    R["errors"].append("sweep256: " + err1(ex))
try:
    run_sweep(64, SIZES_64, deadline=args.budget - 5)
except Exception as ex:  # noqa: BLE001
    R["errors"].append("sweep64: " + err1(ex))
save()

# ---------------------------------------------------------------- table
print("\n==== limits:", json.dumps(R["limits"]))
print("==== decode:")
for r in R["decode"]:
    print("  ", json.dumps(r))
print("==== kernels (bf16, H=16, B*N=65536 except N=131072 B=1); GB/s fwd counts q,k,v read + o write;"
      " fwd+bwd GB/s counts the minimal 11 passes; %copy = fwd GB/s / copy GB/s")
hdr = f"{'kernel':32s} {'d':>4s} {'e':>4s} {'B':>3s} {'N':>7s} {'fwd ms':>9s} {'f+b ms':>9s} {'Mtok/s fwd':>10s} {'fwd GB/s':>9s} {'%copy':>6s} {'f+b GB/s':>9s}"
print(hdr)
for r in R["bench"]:
    def g(k, fmt):
        return fmt.format(r[k]) if k in r else "-"
    print(f"{r['kernel']:32s} {r['d']:4d} {r['e']:4d} {r['B']:3d} {r['N']:7d} {g('fwd_ms', '{:9.3f}'):>9s} {g('fwdbwd_ms', '{:9.3f}'):>9s} "
          f"{(r['fwd_tok_per_s'] / 1e6 if 'fwd_tok_per_s' in r else float('nan')):10.1f} {g('fwd_GBps_qkvo', '{:9.0f}'):>9s} "
          f"{g('fwd_frac_copy_bw', '{:6.2f}'):>6s} {g('fwdbwd_GBps_min', '{:9.0f}'):>9s}"
          + (f"  ERR fwd: {r['fwd_err'][:80]}" if 'fwd_err' in r else "")
          + (f"  ERR bwd: {r['fwdbwd_err'][:80]}" if 'fwdbwd_err' in r else ""))
print("==== oracle (N=2048, B=2): rel_l2 / max_rel")
for o in R["oracle"]:
    print(f"  d={o['d']} naive fp32 vs fp64: o {o['naive_fp32_vs_fp64']['o']['rel_l2']:.2e}")
    for kk in o.get("kernels", []):
        if "err" in kk:
            print(f"   {kk['kernel']:32s} ERR {kk['err'][:120]}")
            continue
        parts = [f"{t}: {kk[t]['rel_l2']:.2e}/{kk[t]['max_rel']:.2e}" for t in ("o", "dq", "dk", "dv") if t in kk]
        print(f"   {kk['kernel']:32s} " + "  ".join(parts))
print("==== errors:", len(R["errors"]))
for e_ in R["errors"]:
    print("  ", e_[:300])
print("==== skipped:", R["skipped"])
print(f"==== done in {elapsed():.1f}s")
