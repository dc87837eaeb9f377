#!/usr/bin/env python3
"""Checks that the synthetic dataset needs object context: building windows (label 6) and car windows (label 7)
should be indistinguishable from a pixel's own colour and separable once the surroundings are seen.

Fits a gradient-boosted classifier (window kind from features) on train pixels of both window classes and reports
the balanced accuracy on val pixels for (a) the pixel's RGB and its 3×3 mean, (b) those plus the mean and standard
deviation of 13×13, 25×25 and 49×49 boxes around it. Expected: (a) far from 1, (b) close to 1.

Usage: python3 Tools/check_synthetic_context.py DATA_ROOT   (ocr-ddp make-synthetic DATA_ROOT first;
       needs: pip install pillow numpy scikit-learn)
"""
import glob
import sys

import numpy as np
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier

BUILDING_WINDOW, CAR_WINDOW = 6, 7


def box_mean(a, k):
    """Mean over the (2k+1)² box around each pixel (edges replicated), via an integral image; a: H×W×C."""
    s = 2 * k + 1
    padded = np.pad(a, ((k + 1, k), (k + 1, k), (0, 0)), mode="edge")
    ii = padded.cumsum(0).cumsum(1)
    h, w = a.shape[:2]
    return (ii[s:s + h, s:s + w] - ii[0:h, s:s + w] - ii[s:s + h, 0:w] + ii[0:h, 0:w]) / (s * s)


def window_pixels(root, split, limit):
    own, with_context, is_car = [], [], []
    for path in sorted(glob.glob(f"{root}/leftImg8bit/{split}/*/*_leftImg8bit.png"))[:limit]:
        image = np.asarray(Image.open(path)).astype(np.float64)
        label_path = path.replace("/leftImg8bit/", "/gtFine/", 1).replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
        label = np.asarray(Image.open(label_path))
        mask = (label == BUILDING_WINDOW) | (label == CAR_WINDOW)
        local = [image, box_mean(image, 1)]
        context = []
        for k in (6, 12, 24):
            mean, mean_sq = box_mean(image, k), box_mean(image * image, k)
            context += [mean, np.sqrt(np.maximum(mean_sq - mean * mean, 0))]
        own.append(np.concatenate(local, -1)[mask])
        with_context.append(np.concatenate(local + context, -1)[mask])
        is_car.append(label[mask] == CAR_WINDOW)
    return np.concatenate(own), np.concatenate(with_context), np.concatenate(is_car)


def main():
    root = sys.argv[1]
    own, context, y = window_pixels(root, "train", 300)
    own_val, context_val, y_val = window_pixels(root, "val", 100)
    subset = np.random.default_rng(0).choice(len(y), min(len(y), 150_000), replace=False)
    for name, train, val in [("pixel colour and 3×3 mean", own, own_val), ("plus surrounding boxes", context, context_val)]:
        model = HistGradientBoostingClassifier(max_iter=200, class_weight="balanced").fit(train[subset], y[subset])
        predicted = model.predict(val)
        balanced = 0.5 * (predicted[y_val].mean() + (~predicted[~y_val]).mean())
        print(f"{name}: balanced accuracy {balanced:.3f} (0.5 = chance)")


if __name__ == "__main__":
    main()
