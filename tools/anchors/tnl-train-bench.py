#!/usr/bin/env python3
"""Model-level anchor: training throughput of a TNL-385M-shaped model vs sequence length, on one GPU.

It imports the OpenNLPLab Hugging Face TransNormerLLM modeling code (vendored in
github.com/weigao266/TNL-MoE smoe/models/tnl/), fla, and transformers' Llama; it copies none of them.

Three PyTorch models of the same shape (d = 1024, 24 layers, 8 heads, GLU 2816, vocab 50,272, bf16,
AdamW), each trained for a few steps at a fixed number of tokens per step (B * T = 65,536) for
T in --lengths:
  * tnl_official:  the HF modeling code exactly as shipped (its Triton kernel + its n x n mask)
  * tnl_fla:       the same model with the token mixer's attention done by fla chunk_simple_gla
                   (the best PyTorch linear-attention kernel), no n x n mask
  * llama_sdpa:    a Llama of the same width/depth/heads/FFN with SDPA attention (softmax baseline)
Per (model, T): median step time over --steps timed steps after 2 warm-ups, tokens/s, peak memory.
Results are appended to --out (JSON) after every measurement.

  python3 tools/anchors/tnl-train-bench.py --tnl-dir .cache/anchors/tnl --fla-dir .cache/anchors/fla \
      --out runs/anchors/tnl-train.json
"""
import argparse
import json
import os
import sys
import time
import traceback

ap = argparse.ArgumentParser()
ap.add_argument("--tnl-dir", required=True, help="folder holding the package folder tnl/")
ap.add_argument("--fla-dir", required=True, help="folder holding the package folder fla/")
ap.add_argument("--out", required=True)
ap.add_argument("--lengths", default="2048,8192,32768")
ap.add_argument("--tokens", type=int, default=65536)
ap.add_argument("--steps", type=int, default=4)
ap.add_argument("--models", default="tnl_fla,tnl_official,llama_sdpa")
ap.add_argument("--budget", type=float, default=420)
ap.add_argument("--compile", action="store_true", help="torch.compile the model (the tnl_fla and llama_sdpa rows)")
args = ap.parse_args()
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
T0 = time.time()
sys.path.insert(0, os.path.abspath(args.tnl_dir))
sys.path.insert(0, os.path.abspath(args.fla_dir))

import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.utils as _tu  # noqa: E402

for _name in ("add_start_docstrings", "add_start_docstrings_to_model_forward", "replace_return_docstrings"):
    if not hasattr(_tu, _name):
        setattr(_tu, _name, lambda *a, **k: (lambda f: f))

import tnl.modeling_transnormer as MT  # noqa: E402
from tnl import TransnormerConfig, TransnormerForCausalLM  # noqa: E402

dev = torch.device("cuda")
D, L, H, GLU, V = 1024, 24, 8, 2816, 50272
results = {"env": {"torch": torch.__version__, "transformers": transformers.__version__,
                   "gpu": torch.cuda.get_device_name(0), "has_lightning_attention": MT.has_lightning_attention},
           "shape": dict(d=D, layers=L, heads=H, glu=GLU, vocab=V, tokens_per_step=args.tokens), "rows": []}


def save():
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


def tnl_model():
    cfg = TransnormerConfig(vocab_size=V, decoder_embed_dim=D, decoder_layers=L, decoder_attention_heads=H,
                            hidden_dim=D, glu_dim=GLU, linear_use_lrpe_list=[1] + [0] * (L - 1),
                            norm_type="simplermsnorm", linear_act_fun="silu", no_scale_embedding=False,
                            bias=False, init_std=0.02, use_cache=False, tie_word_embeddings=False)
    return TransnormerForCausalLM(cfg)


def patch_fla():
    """Token-mixer forward for training without the n x n mask, attention by fla chunk_simple_gla."""
    from einops import rearrange
    from fla.ops.simple_gla import chunk_simple_gla

    def forward(self, x, attn_mask=None, attn_padding_mask=None, output_attentions=False,
                past_key_value=None, use_cache=False, slope_rate=None):
        q, k, v, u = self.qkvu_proj(x).chunk(4, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.num_heads) for t in (q, k, v))
        q, k = self.act(q), self.act(k)
        if self.linear_use_lrpe:
            q, k = self.lrpe(q, offset=0), self.lrpe(k, offset=0)
        g = -slope_rate.reshape(-1).float()
        o, _ = chunk_simple_gla(q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(),
                                v.transpose(1, 2).contiguous(), g_gamma=g, scale=1.0)
        o = rearrange(o, "b n h d -> b n (h d)")
        return self.out_proj(u * self.norm(o)), None, None

    MT.NormLinearAttention.forward = forward


def llama_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=H, intermediate_size=GLU, max_position_embeddings=131072,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


orig_forward = MT.NormLinearAttention.forward
for name in args.models.split(","):
    for T in [int(t) for t in args.lengths.split(",")]:
        if time.time() - T0 > args.budget:
            results["rows"].append({"model": name, "T": T, "skipped": "budget"})
            save()
            continue
        row = {"model": name, "T": T, "B": max(1, args.tokens // T)}
        try:
            MT.NormLinearAttention.forward = orig_forward
            if name == "tnl_fla":
                patch_fla()
            model = (llama_model() if name == "llama_sdpa" else tnl_model()).to(dev, torch.bfloat16)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
            if args.compile and name != "tnl_official":
                model = torch.compile(model)
                row["compiled"] = True
            row["params"] = sum(p.numel() for p in model.parameters())
            if args.compile and name != "tnl_official":
                row["compile_note"] = "first 2 steps (warm-up, not timed) include compilation"
            B = row["B"]
            ids = torch.randint(3, V, (B, T), device=dev)
            torch.cuda.reset_peak_memory_stats()
            times = []
            for i in range(2 + args.steps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                out = model(input_ids=ids, labels=ids)
                out.loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                if i >= 2:
                    times.append(time.perf_counter() - t)
            times.sort()
            med = times[len(times) // 2]
            row.update(step_s=med, tokens_per_s=B * T / med, loss=float(out.loss),
                       peak_gib=torch.cuda.max_memory_allocated() / 2**30)
            del model, opt, out
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:400]
            row["trace"] = traceback.format_exc()[-800:]
        torch.cuda.empty_cache()
        results["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
        save()
results["seconds"] = time.time() - T0
save()
