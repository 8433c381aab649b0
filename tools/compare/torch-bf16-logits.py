#!/usr/bin/env python3
"""How far the official PyTorch TNL's bf16 logits are from its f32 logits, on one checkpoint.

The reference for the bf16 error of our own forward (packages/cuda/test/published-1b.test.ts prints
ours for the same checkpoint and prompt): the official TransnormerForCausalLM (the OpenNLPLab modeling
code, imported from --tnl-dir, not copied) loads the checkpoint's weights three ways and runs the same
prompt:
  * f32: the weights upcast to f32, computed in f32 (the oracle);
  * bf16: the weights and the whole forward in bf16 (`torch_dtype=torch.bfloat16`, as HF loads the
    published bf16 checkpoints);
  * autocast: f32 weights under `torch.autocast("cuda", torch.bfloat16)`.
Prints the relative RMS of each against f32 as JSON.

  python3 tools/compare/torch-bf16-logits.py --tnl-dir .anchors/tnl --checkpoint /tmp/tc/tnl-1b-random
"""
import argparse
import json
import os
import sys

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--tnl-dir", required=True, help="folder holding the official HF modeling package folder tnl/")
ap.add_argument("--checkpoint", required=True, help="folder with config.json and pytorch_model.bin (or model.safetensors)")
ap.add_argument("--prompt", default="1,1037,2201,30,9999,412,63999,7", help="token ids, comma-separated")
args = ap.parse_args()
sys.path.insert(0, os.path.abspath(args.tnl_dir))

import torch  # noqa: E402
import transformers.utils as _tu  # noqa: E402

# The 2023 modeling code imports docstring helpers that newer transformers dropped.
for _name in ("add_start_docstrings", "add_start_docstrings_to_model_forward", "replace_return_docstrings"):
    if not hasattr(_tu, _name):
        setattr(_tu, _name, lambda *a, **k: (lambda f: f))

from tnl import TransnormerConfig, TransnormerForCausalLM  # noqa: E402

ids = torch.tensor([[int(t) for t in args.prompt.split(",")]], device="cuda")
config = TransnormerConfig.from_pretrained(args.checkpoint)
weights_file = os.path.join(args.checkpoint, "pytorch_model.bin")
if os.path.exists(weights_file):
    weights = torch.load(weights_file, map_location="cpu", weights_only=True)
else:
    from safetensors.torch import load_file

    weights = load_file(os.path.join(args.checkpoint, "model.safetensors"))


def logits(dtype, autocast=False):
    # Built from the config and given the weights directly: from_pretrained makes the model on the
    # meta device, which the 2023 code cannot leave (it copies its decay slopes in __init__).
    model = TransnormerForCausalLM(config)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not getattr(config, "tie_word_embeddings", True)]
    if missing or unexpected:
        sys.exit(f"torch-bf16-logits: parameters missing from the checkpoint: {missing}; tensors the official model lacks: {unexpected}")
    if getattr(config, "tie_word_embeddings", True):
        model.lm_head.weight = model.model.embed_tokens.weight
    model = model.to(dtype).cuda().eval()
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids).logits.float().cpu()
    del model
    torch.cuda.empty_cache()
    return out


def rel_rms(a, b):
    return float(((a.double() - b.double()).pow(2).sum() / b.double().pow(2).sum()).sqrt())


want = logits(torch.float32)
result = {
    "checkpoint": os.path.basename(os.path.normpath(args.checkpoint)),
    "prompt": args.prompt,
    "torch": torch.__version__,
    "device": torch.cuda.get_device_name(),
    "bf16_vs_f32_rel_rms": rel_rms(logits(torch.bfloat16), want),
    "autocast_vs_f32_rel_rms": rel_rms(logits(torch.float32, autocast=True), want),
}
print(json.dumps(result))
