#!/usr/bin/env python3
"""How ocr-ddp's data-parallel training scales across nodes: a model fitted from Launch/measure_scaling.sh's
measurements on simulated clusters, checked against them, and used to predict users' clusters.

    python3 Tools/scaling_model.py MEASUREMENTS.jsonl [--markdown OUT.md] [--plot OUT.png]

The model, per training step of one rank:

    step = forward + backward + optimizer + sync_bn + exposed

- compute (forward, backward, optimizer) is `ocr-ddp bench`'s single-process phases; a node of C cores is taken to
  run C times the one-core rate (an upper bound: this 2-core machine cannot measure many-thread efficiency).
- the all-reduce of n bytes over p ranks on a ring is  2(p-1)·alpha + 2(p-1)/p·n·beta  (the ring's 2(p-1) steps,
  each a message latency alpha, and every rank sending and receiving 2(p-1)/p of the buffer at beta seconds a byte).
  alpha and beta are fitted per link rate and payload from the 2-rank `bench-allreduce` sweeps (4 B ... 64 MB).
  Unmeasured rates: 1/beta = efficiency · rate, with the efficiency measured at 1 and 10 Gbit/s.
- the gradient travels in buckets (1 MB, then bucket_cap_mb = 25 MB): comm = the sum of their all-reduces. Backward
  hides a fraction h of itself's worth of them, but never the last bucket, which is ready only when backward ends:
      exposed = max(last_bucket, comm - h·backward)
  h is fitted per overlap mode from the 2-host training runs.
- sync BN: two small all-reduces per batch-norm layer and step (forward statistics, backward sums), each
  ceil(log2 p)·(small-message time of 2 ranks), as recursive doubling takes.
- hierarchical all-reduce with r ranks per node: the ring runs over the N = p/r nodes (2(N-1) steps) with the same
  bytes per link, plus the in-node reduce-scatter and allgather (measured: the 2 x 2 sweep's difference).

Everything printed is computed from the measurements; nothing is a constant of the model except the structure above.
"""
import argparse
import json
import math
import sys

import numpy as np

RATES = {"1gbit": 1e9, "10gbit": 10e9, "25gbit": 25e9, "100gbit": 100e9}
FIRST_BUCKET, BUCKET = 1 << 20, 25 << 20


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fit_line(points):
    """Least squares of t = a + n·b, relative (each point weighted by 1/t), so 4 B and 64 MB count alike."""
    rows = np.array([[1 / t, n / t] for n, t in points])
    (a, b), *_ = np.linalg.lstsq(rows, np.ones(len(points)), rcond=None)
    return max(a, 0.0), b


class AllreduceFit:
    """alpha (s per ring step) and beta (s per byte) per (rate, payload), from the 2-rank sweeps."""

    def __init__(self, entries):
        self.fits = {}
        for key in {(e["rate"], e["gradient_payload"]) for e in entries}:
            points = [(e["bytes"], e["ms"] / 1e3) for e in entries
                      if (e["rate"], e["gradient_payload"]) == key]
            a, b = fit_line(points)
            # p = 2: 2(p-1) = 2 steps of alpha, and 2(p-1)/p = 1 buffer's worth of bytes at beta.
            small = min(t for n, t in points if n <= 64)
            self.fits[key] = {"alpha": a / 2, "beta": b, "small": small, "points": points}
        # The links' efficiency: achieved bytes per second over the link rate, where the link is what limits.
        self.efficiency = {}
        for payload in ("fp32", "bf16"):
            measured = [8 / self.fits[(r, payload)]["beta"] / RATES[r] for r in ("1gbit", "10gbit")
                        if (r, payload) in self.fits]
            if measured:
                self.efficiency[payload] = sum(measured) / len(measured)

    def params(self, rate, payload):
        if (rate, payload) in self.fits:
            return self.fits[(rate, payload)]
        # An unmeasured rate: 1 and 10 Gbit/s's latency (software, not wire) and efficiency.
        base = self.fits[("10gbit", payload)]
        return {"alpha": base["alpha"], "beta": 8 / (self.efficiency[payload] * RATES[rate]), "small": base["small"]}

    def time(self, nbytes, ranks, rate, payload, steps=None):
        f = self.params(rate, payload)
        steps = 2 * (ranks - 1) if steps is None else steps
        return steps * f["alpha"] + 2 * (ranks - 1) / ranks * nbytes * f["beta"]


def buckets(gradient_bytes, cap=BUCKET):
    sizes, left = [], gradient_bytes
    first = min(FIRST_BUCKET, left)
    sizes.append(first)
    left -= first
    while left > 0:
        sizes.append(min(cap, left))
        left -= sizes[-1]
    return sizes


def step_time(compute, fit, ranks, rate, payload="fp32", h=0.0, cap=BUCKET, per_node=1):
    """Predicted step seconds and its parts for `ranks` ranks with the phases `compute` (seconds)."""
    nodes = ranks // per_node
    sizes = buckets(compute["gradient_bytes"], cap)
    if per_node > 1:   # hierarchical: the ring over the nodes, the same bytes per link
        each = [fit.time(s, nodes, rate, payload) * 1.0 for s in sizes]
    else:
        each = [fit.time(s, ranks, rate, payload) for s in sizes]
    comm = sum(each)
    exposed = max(each[-1], comm - h * compute["backward"]) if ranks > 1 else 0.0
    sync_bn = compute["bn_collectives"] * math.ceil(math.log2(ranks)) * fit.params(rate, "fp32")["small"] \
        if ranks > 1 else 0.0
    total = compute["forward"] + compute["backward"] + compute["optimizer"] + sync_bn + exposed
    return {"step": total, "comm": comm, "exposed": exposed, "sync_bn": sync_bn}


def compute_phases(entry, bn_layers):
    p = entry["phases"]
    return {"forward": p["forward"] / 1e3, "backward": p["backward"] / 1e3, "optimizer": p["optimizer"] / 1e3,
            "gradient_bytes": entry["gradient_mb"] * 1e6, "images": entry["batch_per_rank"],
            "bn_collectives": 2 * bn_layers}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measurements")
    parser.add_argument("--markdown", help="write the README tables here")
    parser.add_argument("--plot", help="write the prediction picture here (PNG)")
    args = parser.parse_args()
    entries = load(args.measurements)
    out = []

    sweeps = [e for e in entries if e["kind"] == "allreduce" and e["slots"] == 1]
    fit = AllreduceFit(sweeps)
    out.append("### All-reduce fit (2 hosts x 1 rank, `bench-allreduce` 4 B ... 64 MB)\n")
    out.append("| link | payload | latency alpha (us/step) | achieved Gbit/s (fp32 bytes) | fit error (median, max) |")
    out.append("|---|---|---|---|---|")
    for (rate, payload), f in sorted(fit.fits.items(), key=lambda kv: (RATES.get(kv[0][0], 1e12), kv[0][1])):
        errors = [abs(fit.time(n, 2, rate, payload) - t) / t for n, t in f["points"]]
        out.append(f"| {rate} | {payload} | {f['alpha'] * 1e6:.1f} | {8 / f['beta'] / 1e9:.2f} | "
                   f"{100 * np.median(errors):.0f} %, {100 * max(errors):.0f} % |")
    out.append("")
    out.append("Link efficiency (achieved / link rate, mean of 1 and 10 Gbit/s): "
               + ", ".join(f"{p} {100 * e:.0f} %" for p, e in fit.efficiency.items()) + "\n")

    computes = {e["model"]: e for e in entries if e["kind"] == "compute"}
    bn_layers = {m: e.get("batch_norm_layers", 0) for m, e in computes.items()}
    trains = [e for e in entries if e["kind"] == "train" and e["slots"] == 1]

    # h per overlap mode: least squares of the relative step-time error over the 2-host runs.
    def predicted(e, h):
        c = compute_phases(computes[e["model"]], bn_layers[e["model"]])
        return step_time(c, fit, e["ranks"], e["rate"], e["gradient_payload"], h)

    fitted_h = {}
    for mode in ("polling", "thread"):
        runs = [e for e in trains if e["overlap"] == mode]
        if not runs:
            continue
        grid = np.linspace(0, 1.5, 151)
        cost = [sum((predicted(e, h)["step"] - e["ms_per_step"] / 1e3) ** 2 / (e["ms_per_step"] / 1e3) ** 2
                    for e in runs) for h in grid]
        fitted_h[mode] = float(grid[int(np.argmin(cost))])

    out.append("### Model against the simulated runs (2 hosts x 1 rank, 1 thread each)\n")
    out.append(f"Overlap fitted: h = {fitted_h.get('polling', 0):.2f} of backward (polling), "
               f"{fitted_h.get('thread', 0):.2f} (thread).\n")
    out.append("| model | link | overlap | payload | measured ms | predicted ms | error | measured exposed ms | "
               "predicted exposed ms |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    errors = []
    for e in sorted(trains, key=lambda e: (e["model"], RATES.get(e["rate"], 1e12), e["overlap"], e["gradient_payload"])):
        p = predicted(e, fitted_h[e["overlap"]])
        measured = e["ms_per_step"] / 1e3
        errors.append(abs(p["step"] - measured) / measured)
        out.append(f"| {e['model']} | {e['rate']} | {e['overlap']} | {e['gradient_payload']} | {measured * 1e3:.0f} | "
                   f"{p['step'] * 1e3:.0f} | {100 * (p['step'] - measured) / measured:+.0f} % | "
                   f"{e['phases']['allreduce_exposed']:.0f} | {p['exposed'] * 1e3:.0f} |")
    out.append("")
    out.append(f"Step-time error: median {100 * np.median(errors):.0f} %, largest {100 * max(errors):.0f} %.\n")

    # The 2 x 2 sweeps: flat vs hierarchical, fp32 vs bf16, measured against the 2-rank fit's prediction.
    four = [e for e in entries if e["kind"] == "allreduce" and e["slots"] == 2]
    if four:
        out.append("### 2 hosts x 2 ranks at 1 Gbit/s (all-reduce alone)\n")
        out.append("| payload | all-reduce | 256 KB ms | 4 MB ms | 64 MB ms | 64 MB predicted ms |")
        out.append("|---|---|---|---|---|---|")
        for payload in ("fp32", "bf16"):
            for topology in ("flat", "hierarchical"):
                rows = {e["bytes"]: e["ms"] for e in four
                        if e["gradient_payload"] == payload and e["allreduce"] == topology}
                if not rows:
                    continue
                n = 64 << 20
                guess = fit.time(n, 2, "1gbit", payload) if topology == "hierarchical" \
                    else fit.time(n, 4, "1gbit", payload)
                out.append(f"| {payload} | {topology} | {rows.get(256 << 10, 0):.2f} | {rows.get(4 << 20, 0):.1f} | "
                           f"{rows.get(n, 0):.0f} | {guess * 1e3:.0f} |")
        out.append("")

    # Prediction: R50-D8 512x1024, 2 images per node, 1 rank per node of C cores.
    if "r50" in computes:
        base = compute_phases(computes["r50"], bn_layers["r50"])
        h = fitted_h.get("polling", 0)
        out.append("### Prediction: R50-D8 OCRNet 512x1024, 2 images per node, 1 rank per node\n")
        out.append("Scaling efficiency = step time without communication / predicted step time; img/s of the whole "
                   "cluster in brackets.\n")
        header = "| cores | link | " + " | ".join(f"{n} nodes" for n in (2, 8, 32, 128, 1024)) + " |"
        out.append(header)
        out.append("|" + "---|" * (2 + 5))
        curves = {}
        for cores in (32, 64):
            for rate in ("1gbit", "10gbit", "25gbit", "100gbit"):
                node = dict(base)
                for k in ("forward", "backward", "optimizer"):
                    node[k] = base[k] * 2 / base["images"] / cores
                cells, curve = [], []
                for nodes in [2 ** k for k in range(1, 11)]:
                    p = step_time(node, fit, nodes, rate, "fp32", h)
                    alone = node["forward"] + node["backward"] + node["optimizer"]
                    curve.append((nodes, alone / p["step"]))
                    if nodes in (2, 8, 32, 128, 1024):
                        cells.append(f"{100 * alone / p['step']:.0f} % ({2 * nodes / p['step']:.0f})")
                curves[(cores, rate)] = curve
                out.append(f"| {cores} | {rate} | " + " | ".join(cells) + " |")
        out.append("")
        # What bf16 payloads and larger buckets would give at 64 cores.
        out.append("With 64-core nodes, what the knobs change (efficiency at 8 / 128 / 1024 nodes):\n")
        out.append("| link | fp32, 25 MB buckets | bf16 payload | fp32, 100 MB buckets |")
        out.append("|---|---|---|---|")
        node = dict(base)
        for k in ("forward", "backward", "optimizer"):
            node[k] = base[k] * 2 / base["images"] / 64
        alone = node["forward"] + node["backward"] + node["optimizer"]
        for rate in ("1gbit", "10gbit", "25gbit", "100gbit"):
            cells = []
            for payload, cap in (("fp32", BUCKET), ("bf16", BUCKET), ("fp32", 100 << 20)):
                cells.append(" / ".join(f"{100 * alone / step_time(node, fit, n, rate, payload, h, cap)['step']:.0f} %"
                                        for n in (8, 128, 1024)))
            out.append(f"| {rate} | " + " | ".join(cells) + " |")
        out.append("")
        if args.plot:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
            for (cores, rate), curve in curves.items():
                ax.plot([n for n, _ in curve], [100 * e for _, e in curve], marker="o", markersize=3,
                        linestyle="-" if cores == 64 else "--", label=f"{rate}, {cores} cores")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("nodes (1 rank each, 2 images per node)")
            ax.set_ylabel("scaling efficiency, %")
            ax.set_ylim(0, 105)
            ax.set_title("ocr-ddp R50-D8 OCRNet 512x1024: predicted from simulated-cluster fits")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            fig.savefig(args.plot)

    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
