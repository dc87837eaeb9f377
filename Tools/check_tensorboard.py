#!/usr/bin/env python3
"""Reads WORK_DIR/tensorboard/ back with the tensorboard package's EventAccumulator and compares every scalar with
WORK_DIR/log.jsonl: train/{loss, loss_aux, loss_ocr, lr, time, memory_mb} at each log interval, val/{mIoU, aAcc,
mAcc} and val/IoU/<class> at each evaluation (log.jsonl rounds those to 2 decimals; event files hold float32).

    python3 Tools/check_tensorboard.py WORK_DIR

Prints the number of scalars compared and the largest difference; exits 1 naming the first mismatch.
(pip install tensorboard)
"""
import json
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def expected_scalars(log_path):
    """(tag, step) -> value from log.jsonl, with the tolerance each kind of value allows."""
    expected = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        step = record["iter"]
        if "loss" in record:
            for key in ["loss", "loss_aux", "loss_ocr", "lr", "time", "memory_mb"]:
                expected[(f"train/{key}", step)] = (record[key], 1e-6)
        if "mIoU" in record:
            for key in ["mIoU", "aAcc", "mAcc"]:
                if record[key] is not None:
                    expected[(f"val/{key}", step)] = (record[key], 0.005 + 1e-4)
            for name, iou in record["IoU"].items():
                if iou is not None:
                    expected[(f"val/IoU/{name}", step)] = (iou, 0.005 + 1e-4)
    return expected


def main():
    work_dir = Path(sys.argv[1])
    accumulator = EventAccumulator(str(work_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    actual = {}
    for tag in accumulator.Tags()["scalars"]:
        for event in accumulator.Scalars(tag):
            actual[(tag, event.step)] = event.value
    expected = expected_scalars(work_dir / "log.jsonl")
    if set(actual) != set(expected):
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        print(f"tags/steps differ: missing {missing[:5]}, unexpected {extra[:5]}")
        return 1
    worst = 0.0
    for key, (value, tolerance) in sorted(expected.items()):
        difference = abs(actual[key] - value)
        allowed = tolerance * max(1.0, abs(value)) if tolerance < 1e-3 else tolerance
        if difference > allowed:
            print(f"{key}: event file {actual[key]}, log.jsonl {value}")
            return 1
        worst = max(worst, difference / max(1.0, abs(value)))
    print(f"{len(expected)} scalars agree with log.jsonl (largest relative difference {worst:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
