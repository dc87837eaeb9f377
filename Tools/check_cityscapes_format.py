#!/usr/bin/env python3
"""Scores `ocr-ddp eval --format-only` output with the official Cityscapes evaluator (PyPI cityscapesscripts) and
compares its class mIoU with ocr-ddp's own.

    python3 Tools/check_cityscapes_format.py DATA_ROOT PREDICTIONS_DIR EXPECTED_MIOU [SPLIT]

DATA_ROOT is a Cityscapes layout whose gtFine/SPLIT (default val) holds *_gtFine_labelTrainIds.png or
*_gtFine_labelIds.png; train ids are turned into label ids (255 → 0, "unlabeled") in a temporary ground truth, as
cityscapesScripts reads only label ids. EXPECTED_MIOU is `ocr-ddp eval`'s mIoU in percent (2 decimals). Exits 1
when they differ by more than 0.01. cityscapesscripts 2.x calls numpy's in1d, which numpy 2 removed: it is put back
as isin before the import. (pip install cityscapesscripts)
"""
import glob
import os
import sys
import tempfile

import numpy as np

if not hasattr(np, "in1d"):
    np.in1d = np.isin

from PIL import Image  # noqa: E402  (cityscapesscripts depends on Pillow)
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as evaluator  # noqa: E402
from cityscapesscripts.helpers.labels import trainId2label  # noqa: E402


def label_id_ground_truth(data_root, split, out_root):
    """gtFine/<split>/<city>/<name>_gtFine_labelIds.png under out_root, from the data root's labels."""
    written = []
    for path in sorted(glob.glob(os.path.join(data_root, "gtFine", split, "*", "*_gtFine_labelTrainIds.png"))):
        train_ids = np.array(Image.open(path))
        lookup = np.zeros(256, dtype=np.uint8)
        for train_id, label in trainId2label.items():
            if 0 <= train_id < 255:
                lookup[train_id] = label.id
        city = os.path.basename(os.path.dirname(path))
        target = os.path.join(out_root, "gtFine", split, city,
                              os.path.basename(path).replace("_labelTrainIds.png", "_labelIds.png"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Image.fromarray(lookup[train_ids]).save(target)
        written.append(target)
    # Label ids as they are where there are no train-id files (both exist in a full Cityscapes download).
    return written or sorted(glob.glob(os.path.join(data_root, "gtFine", split, "*", "*_gtFine_labelIds.png")))


def main():
    data_root, predictions, expected = sys.argv[1], sys.argv[2], float(sys.argv[3])
    split = sys.argv[4] if len(sys.argv) > 4 else "val"
    with tempfile.TemporaryDirectory() as scratch:
        ground_truth = label_id_ground_truth(data_root, split, scratch)
        args = evaluator.args
        args.predictionPath = predictions
        args.predictionWalk = None
        args.evalInstLevelScore = False
        args.JSONOutput = False
        args.quiet = True
        args.exportFile = os.path.join(scratch, "result.json")
        prediction_list = [evaluator.getPrediction(args, gt) for gt in ground_truth]
        result = evaluator.evaluateImgLists(prediction_list, ground_truth, args)
    miou = 100 * result["averageScoreClasses"]
    print(f"cityscapesScripts class mIoU {miou:.2f} over {len(ground_truth)} images; ocr-ddp eval {expected:.2f}")
    return 0 if abs(round(miou, 2) - expected) <= 0.01 + 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
