#!/usr/bin/env python3
"""PyTorch reference timing of one OCRNet-HRNet training step (forward, both losses, backward), float32 on CPU,
the same model as Tools/make_golden.py (mmseg HRNet + ocrnet_hr18 heads, BN in training mode), to put beside
`ocr-ddp bench Configs/ocrnet_hr18_4xb2-80k_cityscapes-512x1024.yaml --cfg-options data.batch_size=1` on the same
machine.

    python3 Tools/bench_hrnet_torch.py [--models hr18,hr48] [--crop 512x1024] [--batch 1] [--threads 2] [--iters 2]

Peak RSS is the process's so far: give one model per run to compare memory.
"""

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import HROCRNet, hrnet_extra, init_model, seg_loss  # noqa: E402

VARIANTS = {"hr18s": (18, 2, (3, 2)), "hr18": (18, 4, (4, 3)), "hr48": (48, 4, (4, 3))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="hr18,hr48")
    ap.add_argument("--crop", default="512x1024")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    h, w = map(int, args.crop.split("x"))
    for name in args.models.split(","):
        width, blocks, modules = VARIANTS[name]
        torch.manual_seed(0)
        model = HROCRNet(hrnet_extra([width << i for i in range(4)], blocks, 64, modules), 512, 256, 19)
        init_model(model, residual_gamma=1.0)
        model.train()
        x = torch.randn(args.batch, 3, h, w)
        label = torch.randint(0, 19, (args.batch, h, w))
        # Fastest of `iters` after one warm-up: on a shared machine single steps vary by several times.
        step = forward = float("inf")
        for i in range(args.iters + 1):
            model.zero_grad(set_to_none=False)
            start = time.perf_counter()
            _, aux, ocr = model(x)
            forward_time = time.perf_counter() - start
            loss = 0.4 * seg_loss(aux, label) + seg_loss(ocr, label)
            loss.backward()
            if i > 0:
                step = min(step, time.perf_counter() - start)
                forward = min(forward, forward_time)
        print(f"torch {torch.__version__} {name} {h}x{w} batch {args.batch}, {args.threads} threads: "
              f"step {step * 1000:.0f} ms (forward {forward * 1000:.0f} ms), fastest of {args.iters}, "
              f"{args.batch / step:.3f} img/s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
              f"(the process so far)")


if __name__ == "__main__":
    main()
