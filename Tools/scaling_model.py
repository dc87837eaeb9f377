#!/usr/bin/env python3
"""How ocr-ddp's data-parallel training scales across nodes: a model fitted from Launch/measure_scaling.sh's
measurements on simulated clusters, checked against them, and used to predict users' clusters.

    python3 Tools/scaling_model.py MEASUREMENTS.jsonl [--markdown OUT.md] [--plot OUT.png]

The model, per training step of one rank:

    step = forward + backward + optimizer + sync_bn + exposed

- compute (forward, backward, optimizer): `ocr-ddp bench`'s single-process phases on one core; a node of C cores is
  taken to run C times that rate (an upper bound: this 2-core machine cannot measure many-thread efficiency).
- one bucket's all-reduce of n bytes over p ranks, N nodes of r ranks:
      t(n) = 2(p-1)·alpha + bytes_per_link(n)·beta
  with alpha a message latency and beta seconds per byte of one link. The pairwise reduce-scatter + allgather sends
  2(p-1)/p·n per rank, of which 2r(N-1)/N·n leaves each node (flat); hierarchical sums inside the node first, so
  2(N-1)/N·n leaves it, and its ring over nodes has 2(N-1) latency steps. alpha is fitted from the 4 B and 64 B
  all-reduces of 2 ranks, beta from 4 MB ... 64 MB (the link's token bucket lets the first megabyte through at host
  speed, so mid sizes are neither); per link rate, payload (bf16 counts fp32 bytes: beta halves) and overlap mode.
  Users' links: beta = 1 / (efficiency · rate), the efficiency measured at 1 Gbit/s (the faster simulated links
  are limited by this machine's veth pairs, not by their rate).
- the gradient goes in buckets (1 MiB, then bucket_cap_mb = 25 MiB), one after another: comm = sum of t(bucket).
  Backward hides up to h of itself's worth of comm, but never the last bucket, ready only when backward ends:
      exposed = max(t(last bucket), comm - h·backward)
  h is fitted per overlap mode from the 2-host training runs (the one fitted parameter of the step model).
- sync BN, per batch-norm layer and step: forward allgathers every rank's per-channel count, mean and M2 (24 bytes
  a channel from each of p ranks), backward all-reduces 2 sums a channel; each a latency of ceil(log2 p)·alpha_small.
"""
import argparse
import json
import math
import statistics
import sys

import numpy as np

RATES = {"1gbit": 1e9, "10gbit": 10e9, "25gbit": 25e9, "100gbit": 100e9}
FIRST_BUCKET, BUCKET = 1 << 20, 25 << 20
PREDICTED_NODES = [2 ** k for k in range(1, 11)]


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Link:
    """alpha, beta of one simulated (rate, payload, overlap), from a 2-rank sweep."""

    def __init__(self, points):
        self.points = points                       # (bytes, seconds)
        small = [t for n, t in points if n <= 64]
        self.small = statistics.median(small)      # one small all-reduce of 2 ranks
        self.alpha = self.small / 2                # its 2 latency steps
        large = [(n, t) for n, t in points if n >= 4 << 20]
        # Least squares of t - 2·alpha = n·beta (p = 2: each rank sends the buffer's bytes once in all).
        self.beta = sum(n * (t - 2 * self.alpha) for n, t in large) / sum(n * n for n, _ in large)

    def time(self, nbytes):
        return 2 * self.alpha + nbytes * self.beta


class Network:
    def __init__(self, sweeps):
        self.links = {}
        for key in {(e["rate"], e["gradient_payload"], e.get("overlap", "polling")) for e in sweeps}:
            self.links[key] = Link([(e["bytes"], e["ms"] / 1e3) for e in sweeps
                                    if (e["rate"], e["gradient_payload"], e.get("overlap", "polling")) == key])
        # Achieved fp32-equivalent bytes per second over the link rate, at 1 Gbit/s.
        self.efficiency = {k: 8 / (v.beta * RATES["1gbit"]) for k, v in self.links.items() if k[0] == "1gbit"}

    def link(self, rate, payload, overlap):
        # bf16 runs the same stages whether polled or on the thread: its polling sweep serves both.
        overlap = "polling" if payload == "bf16" else overlap
        return self.links[(rate, payload, overlap)]

    def parameters(self, rate, payload, overlap, simulated):
        """(alpha, beta, small): the simulated link's fit, or a user's link of that rate."""
        fit = self.link(rate if simulated else "1gbit", payload, overlap)
        if simulated:
            return fit.alpha, fit.beta, fit.small
        key = ("1gbit", "bf16" if payload == "bf16" else payload, "polling" if payload == "bf16" else overlap)
        return fit.alpha, 8 / (self.efficiency[key] * RATES[rate]), fit.small

    def allreduce(self, nbytes, nodes, per_node, rate, payload="fp32", overlap="polling", hierarchical=False,
                  simulated=True):
        alpha, beta, _ = self.parameters(rate, payload, overlap, simulated)
        p = nodes * per_node
        if p == 1:
            return 0.0
        if hierarchical or per_node == 1:
            return 2 * (nodes - 1) * alpha + 2 * (nodes - 1) / nodes * nbytes * beta
        return 2 * (p - 1) * alpha + 2 * per_node * (nodes - 1) / nodes * nbytes * beta


def buckets(gradient_bytes, cap=BUCKET):
    sizes, left = [min(FIRST_BUCKET, gradient_bytes)], gradient_bytes - min(FIRST_BUCKET, gradient_bytes)
    while left > 0:
        sizes.append(min(cap, left))
        left -= sizes[-1]
    return sizes


class Compute:
    """Phases of one step (seconds) from a single-process `bench` line, scaled to `cores` and `images`."""

    def __init__(self, entry, cores=1, images=None):
        p, per = entry["phases"], (images or entry["batch_per_rank"]) / entry["batch_per_rank"] / cores
        self.forward, self.backward = p["forward"] / 1e3 * per, p["backward"] / 1e3 * per
        self.optimizer = p["optimizer"] / 1e3 / cores
        self.gradient_bytes = entry["gradient_mb"] * 1e6
        self.bn_layers, self.bn_channels = entry["batch_norm_layers"], entry["batch_norm_channels"]

    @property
    def alone(self):
        return self.forward + self.backward + self.optimizer


def step(compute, net, nodes, rate, h, payload="fp32", overlap="polling", per_node=1, hierarchical=False,
         cap=BUCKET, simulated=True):
    p = nodes * per_node
    if p == 1:
        return {"step": compute.alone, "comm": 0.0, "exposed": 0.0, "sync_bn": 0.0}
    each = [net.allreduce(s, nodes, per_node, rate, payload, overlap, hierarchical, simulated)
            for s in buckets(compute.gradient_bytes, cap)]
    comm = sum(each)
    exposed = max(each[-1], comm - h * compute.backward)
    alpha, beta, small = net.parameters(rate, "fp32", "polling", simulated)
    latency = math.ceil(math.log2(p)) * small
    gathered = (p - 1) * compute.bn_channels * 24            # forward: every other rank's statistics
    sync_bn = 2 * compute.bn_layers * latency + gathered * beta
    return {"step": compute.alone + sync_bn + exposed, "comm": comm, "exposed": exposed, "sync_bn": sync_bn}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measurements")
    parser.add_argument("--markdown", help="write the tables here")
    parser.add_argument("--plot", help="write the prediction picture here (PNG)")
    args = parser.parse_args()
    entries = load(args.measurements)
    out = []

    net = Network([e for e in entries if e["kind"] == "allreduce" and e["slots"] == 1])
    out.append("#### All-reduce of 2 ranks on 2 hosts (`bench-allreduce`, 4 B ... 64 MB), fitted\n")
    out.append("| link | payload | overlap | latency (us) | bandwidth (Gbit/s, fp32 bytes) | 64 MB measured | 64 MB fitted |")
    out.append("|---|---|---|---|---|---|---|")
    for (rate, payload, overlap), link in sorted(net.links.items(),
                                                 key=lambda kv: (RATES.get(kv[0][0], 1e12), kv[0][1], kv[0][2])):
        measured = dict(link.points).get(64 << 20, float("nan"))
        out.append(f"| {rate} | {payload} | {overlap} | {link.alpha * 1e6:.0f} | {8 / link.beta / 1e9:.2f} | "
                   f"{measured * 1e3:.0f} ms | {link.time(64 << 20) * 1e3:.0f} ms |")
    out.append("")
    out.append("Efficiency at 1 Gbit/s (achieved / link rate): "
               + ", ".join(f"{k[1]} {k[2]} {100 * v:.0f} %" for k, v in sorted(net.efficiency.items())) + ".\n")

    computes = {e["model"]: e for e in entries if e["kind"] == "compute"}
    trains = [e for e in entries if e["kind"] == "train" and e["slots"] == 1]

    def predict(e, h):
        return step(Compute(computes[e["model"]]), net, 2, e["rate"], h, e["gradient_payload"], e["overlap"])

    fitted = {}
    for mode in ("polling", "thread"):
        runs = [e for e in trains if e["overlap"] == mode]
        grid = np.linspace(0, 1.5, 151)
        cost = [sum(((predict(e, h)["step"] - e["ms_per_step"] / 1e3) / (e["ms_per_step"] / 1e3)) ** 2 for e in runs)
                for h in grid]
        fitted[mode] = float(grid[int(np.argmin(cost))]) if runs else 0.0

    out.append("#### Model against the simulated training runs (2 hosts x 1 rank x 1 thread)\n")
    out.append(f"Fitted overlap h: {fitted['polling']:.2f} of backward (polling), {fitted['thread']:.2f} (thread). "
               "Compute comes from the single-process run, so the error includes this machine's run-to-run noise "
               "and the slowdown of two ranks sharing it.\n")
    out.append("| model | link | overlap | payload | step ms | predicted | error | exposed ms | predicted |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    errors = []
    for e in sorted(trains, key=lambda e: (e["model"], RATES.get(e["rate"], 1e12), e["overlap"], e["gradient_payload"])):
        p, measured = predict(e, fitted[e["overlap"]]), e["ms_per_step"] / 1e3
        errors.append(abs(p["step"] - measured) / measured)
        out.append(f"| {e['model']} | {e['rate']} | {e['overlap']} | {e['gradient_payload']} | {measured * 1e3:.0f} | "
                   f"{p['step'] * 1e3:.0f} | {100 * (p['step'] - measured) / measured:+.0f} % | "
                   f"{e['phases']['allreduce_exposed']:.0f} | {p['exposed'] * 1e3:.0f} |")
    out.append("")
    out.append(f"Step-time error: median {100 * statistics.median(errors):.0f} %, largest {100 * max(errors):.0f} %.\n")

    four = [e for e in entries if e["kind"] == "allreduce" and e["slots"] == 2]
    if four:
        out.append("#### 2 hosts x 2 ranks: flat and hierarchical (`bench-allreduce`, 4 ranks)\n")
        out.append("| link | payload | all-reduce | 4 B ms | 1 MB ms | 16 MB ms | 64 MB ms | 64 MB predicted |")
        out.append("|---|---|---|---|---|---|---|---|")
        for rate in sorted({e["rate"] for e in four}, key=lambda r: RATES.get(r, 1e12)):
            for payload in ("fp32", "bf16"):
                for topology in ("flat", "hierarchical"):
                    rows = {e["bytes"]: e["ms"] for e in four
                            if (e["rate"], e["gradient_payload"], e["allreduce"]) == (rate, payload, topology)}
                    if rows:
                        guess = net.allreduce(64 << 20, 2, 2, rate, payload, "polling", topology == "hierarchical")
                        out.append(f"| {rate} | {payload} | {topology} | {rows.get(4, 0):.2f} | "
                                   f"{rows.get(1 << 20, 0):.1f} | {rows.get(16 << 20, 0):.0f} | "
                                   f"{rows.get(64 << 20, 0):.0f} | {guess * 1e3:.0f} |")
        out.append("")
    four_train = [e for e in entries if e["kind"] == "train" and e["slots"] == 2]
    if four_train:
        out.append("Training R18-D8 256x256, batch 1 per rank, on those 4 ranks (2 per core, so compute is slowed): "
                   + "; ".join(f"{e['gradient_payload']} {e['allreduce']}: step {e['ms_per_step']:.0f} ms, exposed "
                               f"{e['phases']['allreduce_exposed']:.0f} ms" for e in four_train) + ".\n")

    if "r50" in computes:
        h = fitted["polling"]
        out.append("#### Prediction: R50-D8 OCRNet 512x1024, 2 images per node, 1 rank per node, polling overlap\n")
        out.append(f"Scaling efficiency (step without communication / predicted step) with the overlap fitted here "
                   f"(h = {h:.2f}: on one core per host the communication's work takes the compute core), and in "
                   "brackets with h = 1 (backward hides its own length of communication, as a node with a core to "
                   "spare for it could); then the cluster's img/s at the fitted h.\n")
        shown = (2, 8, 32, 128, 1024)
        out.append("| cores/node | link | " + " | ".join(f"{n} nodes" for n in shown) + " |")
        out.append("|" + "---|" * (2 + len(shown)))
        curves = {}
        for cores in (32, 64):
            node = Compute(computes["r50"], cores=cores, images=2)
            for rate in RATES:
                for overlap in (h, 1.0):
                    curves[(cores, rate, overlap)] = [
                        (n, node.alone / step(node, net, n, rate, overlap, simulated=False)["step"])
                        for n in PREDICTED_NODES]
                cells = [f"{100 * eff:.0f} % ({100 * bound:.0f} %), {2 * n * eff / node.alone:.0f} img/s"
                         for (n, eff), (_, bound) in zip(curves[(cores, rate, h)], curves[(cores, rate, 1.0)])
                         if n in shown]
                out.append(f"| {cores} | {rate} | " + " | ".join(cells) + " |")
        out.append("")
        node = Compute(computes["r50"], cores=64, images=2)
        out.append("64-core nodes, what the knobs change (efficiency at 8 / 128 / 1024 nodes, fitted h; the 4-rank "
                   "columns keep the node's work, each rank a quarter of it):\n")
        out.append("| link | as above | bf16 payload | 100 MB buckets | 4 ranks x 16 threads, flat | 4 ranks, hierarchical |")
        out.append("|---|---|---|---|---|---|")
        for rate in RATES:
            def effs(**kw):
                return " / ".join(f"{100 * node.alone / step(node, net, n, rate, h, simulated=False, **kw)['step']:.0f} %"
                                  for n in (8, 128, 1024))
            out.append(f"| {rate} | {effs()} | {effs(payload='bf16')} | {effs(cap=100 << 20)} | "
                       f"{effs(per_node=4)} | {effs(per_node=4, hierarchical=True)} |")
        out.append("")
        for nodes in (128, 1024):
            parts = step(node, net, nodes, "10gbit", h, simulated=False)
            out.append(f"At {nodes} nodes and 10 Gbit/s a {1e3 * parts['step']:.0f} ms step is {1e3 * node.alone:.0f} ms "
                       f"compute, {1e3 * parts['exposed']:.0f} ms gradient all-reduce (of {1e3 * parts['comm']:.0f} ms) "
                       f"and {1e3 * parts['sync_bn']:.0f} ms sync BN.")
        out.append("")
        if args.plot:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
            for rate, color in zip(RATES, ("tab:red", "tab:orange", "tab:green", "tab:blue")):
                for overlap, style in ((h, "-"), (1.0, ":")):
                    curve = curves[(64, rate, overlap)]
                    ax.plot([n for n, _ in curve], [100 * e for _, e in curve], marker="o" if style == "-" else None,
                            markersize=3, linestyle=style, color=color,
                            label=f"{rate}" + (f", h = {h:.2f} (fitted)" if style == "-" else ", h = 1"))
            ax.set_xscale("log", base=2)
            ax.set_xlabel("nodes (64 cores, 1 rank, 2 images each)")
            ax.set_ylabel("scaling efficiency (%)")
            ax.set_ylim(0, 105)
            ax.set_title("R50-D8 OCRNet 512x1024: predicted from simulated-cluster fits", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2, loc="lower left")
            fig.tight_layout()
            fig.savefig(args.plot)

    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
