"""Write the comparison manifest: 10 held-out sample slices x 2 white-matter RoIs (left and right hemisphere).

``python benchmarks/make_compare_manifest.py [OUT.csv]`` (default ``docs/compare/sample_manifest.csv``). Each RoI is
the 16-pixel, block-aligned box holding the most labelled white matter in that half of the slice.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

from napari_seg_explain.core.images import read_image
from napari_seg_explain.core.sample import SAMPLE_LABEL, SAMPLE_VOLUME, pick_bounds, sample_path

SLICES = (57, 58, 60, 61, 63, 64, 66, 67, 69, 70)  # inside the held-out slab z = 56-71 (sample_data/README.md)


def main(out: Path) -> Path:
    label = read_image(sample_path(SAMPLE_LABEL))
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731 - paths relative to the manifest
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "roi", "class", "label", "slice", "name"])
        for z in SLICES:
            wm = label.slice2d(z)[0] > 0
            half = wm.shape[1] // 2
            for side, cols in (("right", slice(0, half)), ("left", slice(half, None))):
                part = np.zeros_like(wm)
                part[:, cols] = wm[:, cols]
                (y0, x0), (y1, x1) = pick_bounds(part, 16, 8)
                w.writerow([rel(sample_path(SAMPLE_VOLUME)), f"{y0} {x0} {y1} {x1}", "1",
                            rel(sample_path(SAMPLE_LABEL)), z, f"z{z} {side} WM"])
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/compare/sample_manifest.csv")))
