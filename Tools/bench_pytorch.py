#!/usr/bin/env python3
"""PyTorch reference timing of one OCRNet training step, the network `ocr-ddp bench` times: ResNetV1c-D8 (base 64) +
FCNHead (256 ch, 3×3, dropout 0.1, loss 0.4) + OCRHead (512/256 ch, dropout 0.1, loss 1.0), 19 classes, built by
Tools/make_golden.py with mmseg key names. A step is: zero grads, forward (BN in training mode), 0.4·CE(aux) +
1.0·CE(ocr) on logits upsampled to the labels, backward, SGD (lr 0.01, momentum 0.9, weight decay 5e-4).

Needs torch, numpy and safetensors (make_golden's imports).

    python3 Tools/bench_pytorch.py [--depth 18|50] [--crop 256x256] [--batch 2] [--threads 2] [--ranks 1]
                                   [--iters 5] [--warmup 2] [--mode nchw|channels_last|compile|bf16]

Modes, PyTorch at its best on each precision: fp32 as plain NCHW, as channels_last (model and input), or through
torch.compile (inductor); bf16 as a PyTorch user turns it on, channels_last + torch.autocast('cpu',
dtype=torch.bfloat16) around forward and loss (SGD, master weights and gradients stay fp32).

With --ranks p > 1 it runs p processes under DistributedDataParallel over gloo, each with --threads threads and
--batch images. Prints, last, one JSON line with the fields of `ocr-ddp bench` that apply, plus "framework",
"torch_threads", "mkldnn", "mode", "precision" and "forward_conv_gflop" (forward FLOPs of all convolutions and the OCR head's batched
matmuls per step and rank, 2 per multiply-add): effective training GFLOP/s ≈ 3 × forward_conv_gflop × ranks / step
seconds, for either tool, since both run the same network.
"""

import argparse
import inspect
import json
import os
import resource
import socket
import sys
import time

NUM_CLASSES = 19
AUX_LOSS_WEIGHT = 0.4
DROPOUT = 0.1
MODES = ("nchw", "channels_last", "compile", "bf16")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, choices=(18, 50), default=50)
    ap.add_argument("--crop", default="512x1024", help="HxW")
    ap.add_argument("--batch", type=int, default=1, help="images per rank")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads per rank")
    ap.add_argument("--ranks", type=int, default=1, help="DDP processes (gloo); 1 = no DDP")
    ap.add_argument("--iters", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (torch.compile compiles in the first)")
    ap.add_argument("--mode", choices=MODES, default="nchw")
    args = ap.parse_args()
    args.height, args.width = map(int, args.crop.lower().split("x"))
    return args


def median(values):
    """The upper median, as ocr-ddp's bench takes it (sorted[n / 2]), so both tools pick the same kind of step."""
    return sorted(values)[len(values) // 2]


def peak_rss_mb():
    """ru_maxrss is KiB on Linux; /1024 as ocr-ddp's peakResidentMB (so "MB" here is MiB in both tools)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(depth):
    from make_golden import OCRNet, init_model
    from torch import nn
    model = OCRNet(depth, 64, 256, 512, 256, NUM_CLASSES)
    # make_golden builds the heads without dropout (golden data must be deterministic); mmseg's configs use 0.1.
    for head in model.decode_head:
        head.dropout = nn.Dropout2d(DROPOUT)
    init_model(model)
    return model.train()


def forward_gflop(args):
    """Forward FLOPs of one rank's step, counted on shapes alone (meta tensors: no compute, no memory). The model
    has no linear layers, so what the counter sees is exactly the convolutions and the OCR head's bmm's."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = build_model(args.depth)
        images = torch.empty(args.batch, 3, args.height, args.width)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    return counter.get_total_flops() / 1e9


def run_rank(rank, args, port):
    """One process: the whole benchmark when ranks == 1, else one DDP rank (rank 0 prints the JSON line)."""
    import torch
    import torch.distributed as dist
    from make_golden import seg_loss

    torch.set_num_threads(args.threads)
    distributed = args.ranks > 1
    if distributed:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=args.ranks)

    torch.manual_seed(0)  # the same weights on every rank (DDP would broadcast rank 0's anyway)
    model = build_model(args.depth)
    channels_last = args.mode in ("channels_last", "bf16")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trained = model
    if distributed:
        # No buffer broadcast before each forward, as mmengine wraps mmseg models: BN running stats stay per rank
        # (PyTorch 2.15 deprecates broadcast_buffers for forward_sync_buffers). DDP's default buckets, 1 MiB first
        # and 25 MiB after, are ocr-ddp's too.
        ddp_class = torch.nn.parallel.DistributedDataParallel
        no_buffer_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp_class).parameters
                          else "broadcast_buffers")
        trained = ddp_class(model, **{no_buffer_sync: False})
    if args.mode == "compile":
        trained = torch.compile(trained)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "bf16")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    generator = torch.Generator().manual_seed(7 + rank)  # each rank its own images, as in data-parallel training
    images = torch.randn(args.batch, 3, args.height, args.width, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (args.batch, args.height, args.width), generator=generator)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    steps, forwards, backwards, optimizer_steps = [], [], [], []
    for i in range(args.warmup + args.iters):
        start = time.perf_counter()
        optimizer.zero_grad()
        with autocast():
            _, aux, ocr = trained(images)
            loss = AUX_LOSS_WEIGHT * seg_loss(aux, labels) + seg_loss(ocr, labels)
        forward_end = time.perf_counter()  # forward with the losses, as ocr-ddp's phases count it
        # Under DDP, backward returns only once every gradient bucket is all-reduced: communication that backward
        # did not hide is inside this interval and cannot be told apart from it.
        loss.backward()
        backward_end = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        if i >= args.warmup:
            steps.append(end - start)
            forwards.append(forward_end - start)
            backwards.append(backward_end - forward_end)
            optimizer_steps.append(end - backward_end)

    rss = peak_rss_mb()
    if distributed:
        # The largest rank's peak, as ocr-ddp reports it: the per-rank budget is what limits a run.
        rss_tensor = torch.tensor([rss], dtype=torch.float64)
        dist.all_reduce(rss_tensor, op=dist.ReduceOp.MAX)
        rss = rss_tensor.item()
        dist.destroy_process_group()
    if rank != 0:
        return

    step = median(steps)
    phases = {"data": 0, "forward": median(forwards) * 1e3, "backward": median(backwards) * 1e3,
              "optimizer": median(optimizer_steps) * 1e3}
    result = {
        "img_per_s": args.batch * args.ranks / step, "ms_per_step": step * 1e3, "ranks": args.ranks,
        "threads_per_rank": args.threads, "batch_per_rank": args.batch, "crop": [args.height, args.width],
        "peak_rss_mb": rss, "phases": phases, "framework": f"pytorch {torch.__version__}",
        "torch_threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available(),
        "mode": args.mode, "precision": "bfloat16" if args.mode == "bf16" else "float32",
        "forward_conv_gflop": forward_gflop(args),
    }
    if distributed:
        result["note"] = ("DDP over gloo with plain BN; SyncBatchNorm is CUDA-only in PyTorch. The all-reduce "
                          "overlaps backward and its exposed part is inside phases.backward")
    else:
        phases["allreduce_exposed"] = 0  # one process: nothing to all-reduce
    print(json.dumps(result, sort_keys=True), flush=True)


def free_port():
    """A port the OS just handed out; it is released again for gloo's rendezvous to bind (a small, accepted race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    args = parse_args()
    # Thread pools are sized when torch loads, so the environment must be set before the first `import torch`;
    # spawned ranks inherit it.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.ranks == 1:
        run_rank(0, args, port=None)
    else:
        import torch.multiprocessing as mp
        mp.spawn(run_rank, args=(args, free_port()), nprocs=args.ranks)


if __name__ == "__main__":
    main()
