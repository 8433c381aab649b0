#!/usr/bin/env python3
"""Serving anchor: decode throughput of the official HF TransNormerLLM code (436M TNL-385M shape, bf16) on one GPU.

It imports the OpenNLPLab modeling code (vendored in weigao266/TNL-MoE) and copies none of it.
For batch B in --batches: prefill a P-token prompt, then N greedy decode steps through past_key_values (the
model's recurrent path), timed with CUDA synchronisation; reports decode tokens/s (B*N / decode time), prefill
tokens/s, and the bandwidth bound (bf16 weights + f32 states read once per step at the measured copy rate).

  python3 tools/anchors/tnl-decode-bench.py --tnl-dir .cache/anchors/tnl --out runs/anchors/tnl-decode.json
"""
import argparse, json, os, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--tnl-dir", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--batches", default="1,16,64")
ap.add_argument("--prompt", type=int, default=512)
ap.add_argument("--new", type=int, default=64)
args = ap.parse_args()
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
sys.path.insert(0, os.path.abspath(args.tnl_dir))
import torch  # noqa: E402
import transformers.utils as _tu  # noqa: E402
for _n in ("add_start_docstrings", "add_start_docstrings_to_model_forward", "replace_return_docstrings"):
    if not hasattr(_tu, _n):
        setattr(_tu, _n, lambda *a, **k: (lambda f: f))
import tnl.modeling_transnormer as MT  # noqa: E402
from tnl import TransnormerConfig, TransnormerForCausalLM  # noqa: E402

dev = torch.device("cuda")
D, L, H, GLU, V = 1024, 24, 8, 2816, 50272
cfg = TransnormerConfig(vocab_size=V, decoder_embed_dim=D, decoder_layers=L, decoder_attention_heads=H, hidden_dim=D,
                        glu_dim=GLU, linear_use_lrpe_list=[1] + [0] * (L - 1), norm_type="simplermsnorm",
                        linear_act_fun="silu", bias=False, use_cache=True, tie_word_embeddings=False)
model = TransnormerForCausalLM(cfg).to(dev, torch.bfloat16).eval()
params = sum(p.numel() for p in model.parameters())
x = torch.empty(2**30 // 4, device=dev)
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10):
    y.copy_(x)
torch.cuda.synchronize(); copy_gbps = 2 * 2**30 * 10 / (time.perf_counter() - t) / 1e9
del x, y
hd = D // H
state_bytes = 4 * H * hd * hd * L + 4 * H * (2 * hd) * hd  # f32 states, layer 0 has LRPE-doubled keys
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "params": params, "copy_gbps": copy_gbps,
       "prompt": args.prompt, "new": args.new, "rows": []}
for B in [int(b) for b in args.batches.split(",")]:
    ids = torch.randint(3, V, (B, args.prompt), device=dev)
    for layer in model.model.layers:
        layer.token_mixer.offset = 0
    with torch.no_grad():
        torch.cuda.synchronize(); t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, return_dict=True)
        torch.cuda.synchronize(); t1 = time.perf_counter()
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)
        for _ in range(args.new):
            out = model(input_ids=nxt[:, None], use_cache=True, past_key_values=past, return_dict=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)
        torch.cuda.synchronize(); t2 = time.perf_counter()
    step_s = (t2 - t1) / args.new
    bound_s = (2 * params + B * state_bytes * 2) / (copy_gbps * 1e9)
    row = {"B": B, "prefill_tokens_per_s": B * args.prompt / (t1 - t0), "decode_step_ms": step_s * 1e3,
           "decode_tokens_per_s": B / step_s, "bandwidth_bound_step_ms": bound_s * 1e3,
           "pct_of_bound": 100 * bound_s / step_s}
    res["rows"].append(row)
    print(json.dumps(row), flush=True)
    json.dump(res, open(args.out, "w"), indent=1)
