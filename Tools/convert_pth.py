#!/usr/bin/env python3
"""Convert an mmsegmentation / PyTorch checkpoint (.pth) to safetensors with the same keys, for `--load-from`.

    python3 Tools/convert_pth.py iter_80000.pth model.safetensors
    python3 Tools/convert_pth.py resnet50_v1c.pth resnet50_v1c.safetensors --add-prefix backbone.

mmseg checkpoints keep the weights under 'state_dict' (and DDP wraps keys in 'module.'); both are unwrapped.
ImageNet-pretrained backbones (open-mmlab://resnet50_v1c) have keys without 'backbone.': --add-prefix adds it and
--drop-prefix removes e.g. a classifier's 'fc.' entries. Float tensors are written as F32, integer buffers
(num_batches_tracked) as I64. Needs: pip install torch safetensors.
"""
import argparse

import torch
from safetensors.torch import save_file


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help=".pth checkpoint")
    parser.add_argument("target", help="output .safetensors")
    parser.add_argument("--add-prefix", default="", help="prepend to every key (e.g. 'backbone.')")
    parser.add_argument("--drop-prefix", action="append", default=[], help="leave out keys starting with this")
    args = parser.parse_args()

    checkpoint = torch.load(args.source, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue
        if key.startswith("module."):
            key = key[len("module."):]
        if any(key.startswith(p) for p in args.drop_prefix):
            continue
        value = value.detach().contiguous()
        value = value.to(torch.int64) if not value.is_floating_point() else value.to(torch.float32)
        out[args.add_prefix + key] = value
    save_file(out, args.target)
    print(f"wrote {len(out)} tensors to {args.target}")


if __name__ == "__main__":
    main()
