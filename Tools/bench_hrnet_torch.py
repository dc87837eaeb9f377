#!/usr/bin/env python3
"""PyTorch reference timing of OCRNet-HRNet training steps on CPU, with real mmsegmentation 1.2.2's model built from
its own config files (Tools/mmseg_env.py says how to install it; SyncBN replaced by BN, one process), to put beside
`ocr-ddp bench Configs/ocrnet_hr18_4xb2-80k_cityscapes-512x1024.yaml --crop 512x1024 --cfg-options
data.batch_size=2 [--amp]` on the same machine.

    python3 Tools/bench_hrnet_torch.py [--models hr18,hr48] [--crop 512x1024] [--batch 2] [--threads 2]
                                       [--iters 3] [--warmup 1] [--mode nchw|channels_last|bf16]

A step is mmseg's loss computation (the cascade: FCN head twice, then the OCR head; CrossEntropy 0.4 and 1.0) on a
preprocessed batch, backward and an SGD step (lr 0.01, momentum 0.9, weight decay 5e-4), as `ocr-ddp bench` times
one. Modes as in Tools/bench_pytorch.py: fp32 NCHW or channels_last; bf16 as a PyTorch user turns it on,
channels_last + torch.autocast('cpu', dtype=torch.bfloat16) around the forward and losses (SGD, weights and
gradients stay fp32; mmengine's AmpOptimWrapper refuses CPUs, so autocast is applied directly). Prints per model one
line and one JSON line with the median and fastest of the timed steps. Peak RSS is the process's so far: give one
model per run to compare memory.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden_mmseg as golden  # noqa: E402  (mmseg_env's stand-ins first, then mmseg)

import torch  # noqa: E402

CONFIGS = {"hr18s": "ocrnet_hr18s_4xb2-80k_cityscapes-512x1024", "hr18": "ocrnet_hr18_4xb2-80k_cityscapes-512x1024",
           "hr48": "ocrnet_hr48_4xb2-80k_cityscapes-512x1024"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="hr18,hr48")
    ap.add_argument("--crop", default="512x1024")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--mode", choices=("nchw", "channels_last", "bf16"), default="nchw")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    h, w = map(int, args.crop.split("x"))
    channels_last = args.mode in ("channels_last", "bf16")
    for name in args.models.split(","):
        model = golden.model_dict(CONFIGS[name])
        model["data_preprocessor"]["size"] = (h, w)
        net = golden.build(model).train()
        gen = torch.Generator().manual_seed(0)
        data = net.data_preprocessor(golden.batch(gen, args.batch, h, w, model["decode_head"][0]["num_classes"]),
                                     True)
        inputs, samples = data["inputs"], data["data_samples"]
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(net.parameters(), **{k: v for k, v in golden.OPTIMIZER.items() if k != "type"})
        steps = []
        for i in range(args.warmup + args.iters):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=False)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "bf16"):
                losses = net.loss(inputs, samples)
                loss = sum(v for k, v in losses.items() if "loss" in k)
            loss.backward()
            optimizer.step()
            if i >= args.warmup:
                steps.append(time.perf_counter() - start)
        step, fastest = statistics.median(steps), min(steps)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"torch {torch.__version__} mmseg {name} {h}x{w} batch {args.batch}, {args.threads} threads, "
              f"{args.mode}: step {step * 1000:.0f} ms median of {args.iters} (fastest {fastest * 1000:.0f}), "
              f"{args.batch / step:.3f} img/s, peak RSS {rss:.0f} MiB (the process so far)")
        print(json.dumps({"framework": f"pytorch {torch.__version__}", "mkldnn": torch.backends.mkldnn.is_available(),
                          "model": name, "mode": args.mode, "ranks": 1,
                          "precision": "bfloat16" if args.mode == "bf16" else "float32", "crop": [h, w],
                          "batch_per_rank": args.batch, "threads_per_rank": args.threads,
                          "ms_per_step": step * 1000, "ms_per_step_fastest": fastest * 1000,
                          "img_per_s": args.batch / step, "peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
