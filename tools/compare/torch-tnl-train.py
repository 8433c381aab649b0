#!/usr/bin/env python3
"""Trains the official PyTorch TNL from our initial weights on our batches; writes its per-step losses.

The PyTorch half of tools/compare (README.md there). `pnpm train ... --save-init --dump-batches FILE`
writes the weights a run starts from (Hugging Face layout, with trainer-config.json beside them) and
the token ids of every step's batch. This script
  * loads those weights into the official TransnormerForCausalLM (the OpenNLPLab modeling code, imported
    from --tnl-dir, not copied), failing loudly unless every parameter is assigned, with the same shape
    and the same values, and nothing is left over;
  * trains it as our trainer does: the same rows in the same order, AdamW with our settings, groups
    (no weight decay on the embedding, lm_head and LRPE theta), warmup + cosine schedule with its floor
    and global gradient-norm clipping; bf16 autocast over f32 master weights;
  * does the token mixer's attention with fla's chunk_simple_gla (g_gamma = -slope, scale 1), as
    tools/anchors/tnl-train-bench.py does: the shipped Triton kernel builds an n x n mask in training.
    LRPE gets f32 positions (the shipped code builds them in the activation dtype, so bf16 rounds every
    position above 256: docs/ALGORITHM.md E.9); everything else is the official forward.
Losses go to --out as JSON: {"losses": [{"step", "loss", "grad_norm", "lr"}, ...], ...}.

  python3 tools/compare/torch-tnl-train.py --tnl-dir .anchors/tnl --fla-dir .anchors/fla \\
      --init runs/compare/ours/init --batches runs/compare/batches.u32 --out runs/compare/torch.json
"""
import argparse
import json
import math
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--tnl-dir", required=True, help="folder holding the official HF modeling package folder tnl/")
ap.add_argument("--fla-dir", required=True, help="folder holding the package folder fla/")
ap.add_argument("--init", required=True, help="our --save-init folder: config.json, model.safetensors, trainer-config.json")
ap.add_argument("--batches", required=True, help="our --dump-batches file (uint32 ids; FILE.json describes it)")
ap.add_argument("--out", required=True, help="where to write the per-step losses (JSON)")
ap.add_argument("--steps", type=int, help="steps to train (default: the trainer's, at most the batches dumped)")
ap.add_argument("--micro-batch", type=int, help="rows per forward/backward pass (default: the trainer's)")
ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16", help="autocast dtype; f32 turns autocast off")
args = ap.parse_args()
sys.path.insert(0, os.path.abspath(args.tnl_dir))
sys.path.insert(0, os.path.abspath(args.fla_dir))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.utils as _tu  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

# The 2023 modeling code imports docstring helpers that newer transformers dropped.
for _name in ("add_start_docstrings", "add_start_docstrings_to_model_forward", "replace_return_docstrings"):
    if not hasattr(_tu, _name):
        setattr(_tu, _name, lambda *a, **k: (lambda f: f))

import tnl.modeling_transnormer as MT  # noqa: E402
from tnl import TransnormerConfig, TransnormerForCausalLM  # noqa: E402


def fail(message):
    sys.exit(f"torch-tnl-train: {message}")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load_weights(model, folder):
    """Assigns every parameter of `model` from folder/model.safetensors; fails on any mismatch."""
    stored = load_file(os.path.join(folder, "model.safetensors"))
    if model.config.tie_word_embeddings:
        # Tied: lm_head is the embedding (our writer, like save_pretrained, leaves it out of the file).
        model.lm_head.weight = model.model.embed_tokens.weight
        stored.setdefault("lm_head.weight", stored["model.embed_tokens.weight"])
    state = model.state_dict()
    missing = sorted(set(state) - set(stored))
    unexpected = sorted(set(stored) - set(state))
    if missing or unexpected:
        fail(f"{folder}: parameters missing from the checkpoint: {missing}; tensors the official model lacks: {unexpected}")
    shapes = [f"{n}: ours {list(stored[n].shape)}, official {list(t.shape)}" for n, t in state.items() if stored[n].shape != t.shape]
    if shapes:
        fail(f"{folder}: shapes differ: {shapes}")
    result = model.load_state_dict({n: t.to(torch.float32) for n, t in stored.items()}, strict=True)
    if result.missing_keys or result.unexpected_keys:
        fail(f"{folder}: load_state_dict: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    for name, p in model.named_parameters(remove_duplicate=False):
        if not torch.equal(p.detach(), stored[name].to(torch.float32)):
            fail(f"{folder}: {name} does not hold the checkpoint's values after loading")
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in stored.values()})
    return {"tensors": len(stored), "stored_dtypes": dtypes, "parameters": sum(p.numel() for p in model.parameters())}


def patch_fla():
    """The token mixer's training forward with attention by fla chunk_simple_gla (no n x n mask)."""
    from einops import rearrange
    from fla.ops.simple_gla import chunk_simple_gla

    def forward(self, x, attn_mask=None, attn_padding_mask=None, output_attentions=False,
                past_key_value=None, use_cache=False, slope_rate=None):
        q, k, v, u = self.qkvu_proj(x).chunk(4, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.num_heads) for t in (q, k, v))
        q, k = self.act(q), self.act(k)
        if self.linear_use_lrpe:
            # Lrpe builds its positions in its input's dtype: f32 in, so they are exact.
            q, k = self.lrpe(q.float()).to(v.dtype), self.lrpe(k.float()).to(v.dtype)
        g = -slope_rate.reshape(-1).float()
        o, _ = chunk_simple_gla(q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(),
                                v.transpose(1, 2).contiguous(), g_gamma=g, scale=1.0)
        o = rearrange(o, "b n h d -> b n (h d)")
        return self.out_proj(u * self.norm(o)), None, None

    MT.NormLinearAttention.forward = forward
    # The n x n decay mask (4096 x 4096 per head at 2049 tokens) feeds only the attention replaced above.
    MT.TransnormerModel._prepare_decoder_linear_attn_mask = lambda self, *a, **k: None


def warmup_cosine(peak, warmup, total, floor):
    """Our warmupCosine (packages/autograd/src/optim/schedule.ts); i = 0 for the first update."""
    def lr(i):
        if i < warmup:
            return peak * min(1.0, (i + 1) / warmup)
        decay = total - warmup
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(i - warmup, decay) / decay))
    return lr


def main():
    t0 = time.time()
    settings = read_json(os.path.join(args.init, "trainer-config.json"))
    info = read_json(args.batches + ".json")
    if info.get("format") != "lightning-ts.batches/1" or info.get("dtype") != "uint32":
        fail(f"{args.batches}.json: not a lightning-ts batch dump")
    if info["first_step"] != 1:
        fail(f"{args.batches} starts at step {info['first_step']}; the comparison needs a run from step 1")
    rows, span = info["rows"], info["span"]
    if span != settings["seqLen"] + 1:
        fail(f"{args.batches}: rows of {span} ids, but trainer-config.json says seqLen {settings['seqLen']}")
    batches = np.fromfile(args.batches, dtype="<u4")
    if batches.size % (rows * span) != 0:
        fail(f"{args.batches}: {batches.size} ids are not whole steps of {rows} x {span}")
    batches = batches.reshape(-1, rows, span)
    steps = args.steps or settings["steps"]
    if steps > len(batches):
        fail(f"{args.batches} holds {len(batches)} steps, fewer than {steps}")
    micro = args.micro_batch or settings["microBatch"] or rows

    config = TransnormerConfig.from_pretrained(args.init)
    config.use_cache = False
    model = TransnormerForCausalLM(config).float()
    loaded = load_weights(model, args.init)
    print(f"loaded {args.init}: {loaded['tensors']} tensors ({', '.join(loaded['stored_dtypes'])}) into the official "
          f"TransnormerForCausalLM, {loaded['parameters']:,} parameters, every one checked", flush=True)
    if (batches[:steps] == config.pad_token_id).any():
        # nn.Embedding(padding_idx) gives the pad row no gradient, ours does: a pad id in the data makes them differ.
        print(f"warning: the pad id {config.pad_token_id} occurs in the batches", flush=True)
    patch_fla()
    dev = torch.device("cuda")
    model.to(dev).train()

    no_decay = [p for n, p in model.named_parameters() if "embed_tokens" in n or n == "lm_head.weight" or "lrpe.theta" in n]
    decay = [p for n, p in model.named_parameters() if not any(p is q for q in no_decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weightDecay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=settings["lr"], betas=(settings["beta1"], settings["beta2"]), eps=1e-8)
    lr_at = warmup_cosine(settings["lr"], max(1, settings["warmupSteps"]), settings["steps"],
                          settings["lr"] * settings["minLrRatio"])
    clip = settings["gradClip"] if settings["gradClip"] > 0 else float("inf")

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    out = {"losses": [], "init": os.path.abspath(args.init), "batches": os.path.abspath(args.batches),
           "loaded": loaded, "dtype": args.dtype, "attention": "fla chunk_simple_gla",
           "settings": {k: settings[k] for k in ("lr", "minLrRatio", "warmupSteps", "steps", "weightDecay", "beta1", "beta2", "gradClip", "seqLen", "seed")},
           "rows": rows, "micro_batch": micro,
           "env": {"torch": torch.__version__, "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name(0)}}

    def save():
        out["seconds"] = time.time() - t0
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)

    updates = 0  # the schedule and AdamW count the updates taken, as ours do
    for i in range(steps):
        lr = lr_at(updates)
        for group in opt.param_groups:
            group["lr"] = lr
        ids = torch.from_numpy(batches[i].astype(np.int64)).to(dev)
        loss = torch.zeros((), device=dev)
        for r in range(0, rows, micro):
            part = ids[r:r + micro]
            with autocast():
                part_loss = model(input_ids=part, labels=part).loss * (part.shape[0] / rows)
            part_loss.backward()
            loss += part_loss.detach().float()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        loss, norm = float(loss), float(norm)
        if math.isfinite(loss) and math.isfinite(norm):
            opt.step()
            updates += 1
            out["losses"].append({"step": i + 1, "loss": loss, "grad_norm": norm, "lr": lr})
        else:
            out.setdefault("skipped", []).append(i + 1)
        opt.zero_grad(set_to_none=True)
        if (i + 1) % 10 == 0 or i + 1 == steps:
            print(f"step {i + 1}/{steps}: loss {loss:.4f}, grad norm {norm:.3g}, lr {lr:.3g}, {time.time() - t0:.0f} s", flush=True)
            save()
    out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    save()
    print(f"wrote {args.out}", flush=True)


main()
