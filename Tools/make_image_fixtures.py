#!/usr/bin/env python3
"""Writes the image-codec fixtures of OCRDataTests into Tests/Fixtures/images/.

Pillow encodes small PNG (gray, palette at 8 and 2 bits per index, RGB, RGBA) and JPEG (4:2:0, 4:4:4, gray,
progressive) files and decodes them again; the decoded arrays go into expected.safetensors (U8, shape H×W×C, C = 1
for gray and for palette indices) together with each palette (name + ":palette", N×3). The Swift tests decode the
files with libspng / TurboJPEG and compare pixel for pixel. Pillow's JPEG decoder is libjpeg-turbo with the
accurate integer IDCT and fancy upsampling, the same settings the Swift side asks TurboJPEG for.

Usage: python3 Tools/make_image_fixtures.py   (needs: pip install pillow numpy)
"""
import json
import pathlib

import numpy as np
from PIL import Image

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "Fixtures" / "images"


def voc_palette(n=256):
    """The Pascal VOC colour map: the bits of the index spread over the high bits of R, G and B."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


def smooth_rgb(rng, h, w):
    """A picture-like RGB image: gradients plus noise, so JPEG has both edges and flat parts to code."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    return np.clip(base + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)


def write_safetensors(path, arrays):
    header, offset, blobs = {}, 0, []
    for name, array in arrays.items():
        data = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
        header[name] = {"dtype": "U8", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20241125)
    expected = {}

    def save(name, image, **options):
        image.save(OUT / name, **options)
        decoded = Image.open(OUT / name)
        decoded.load()
        if decoded.mode == "P":
            expected[name + ":palette"] = np.array(decoded.getpalette(), dtype=np.uint8).reshape(-1, 3)
        array = np.asarray(decoded)
        expected[name] = array.reshape(array.shape[0], array.shape[1], -1)

    labels = rng.integers(0, 21, size=(9, 13), dtype=np.uint8)
    labels[0, :] = 255
    save("gray.png", Image.fromarray(labels, mode="L"))

    palette8 = Image.fromarray(labels, mode="P")
    palette8.putpalette(sum(voc_palette(), []))
    save("palette8.png", palette8)

    palette2 = Image.fromarray(rng.integers(0, 4, size=(6, 11), dtype=np.uint8), mode="P")
    palette2.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200])
    save("palette2bit.png", palette2)

    save("rgb.png", Image.fromarray(rng.integers(0, 256, size=(10, 17, 3), dtype=np.uint8), mode="RGB"))
    save("rgba.png", Image.fromarray(rng.integers(0, 256, size=(8, 5, 4), dtype=np.uint8), mode="RGBA"))

    picture = smooth_rgb(rng, 29, 37)
    save("rgb420.jpg", Image.fromarray(picture), quality=90, subsampling=2)
    save("rgb444.jpg", Image.fromarray(picture), quality=95, subsampling=0)
    save("progressive.jpg", Image.fromarray(picture), quality=85, progressive=True)
    save("gray.jpg", Image.fromarray(picture[:, :, 1]), quality=90)

    write_safetensors(OUT / "expected.safetensors", expected)
    print(f"wrote {len(expected)} arrays and their files to {OUT}")


if __name__ == "__main__":
    main()
