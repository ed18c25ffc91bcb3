"""The PdCR speed sweep behind ``python benchmarks/bench_pdcr.py`` (without ``--quick``).

For each point: image size (the sample slice resampled to 128, 256, 512 px), block size (4, 8, 16), batch size
(automatic, 4, 16, 64) and 2-D (the sample U-Net) or 3-D (the 3-D sample U-Net on its 32-voxel context box),
PdCR runs (the 2-D card's 128x128 input size dropped, so the U-Net sees the whole resampled image) on
``--blocks`` blocks (the RoI covers everything below a band of blocks at the top, as the first
benchmark did) with N = ``--sweep-n``; recorded: forward passes, seconds, images/s and the model's raw rate at
the same batch size. Written: ``pdcr_sweep.csv``, ``pdcr_sweep.md`` and ``pdcr_sweep.png`` under ``--out``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np


def _band_roi(shape: tuple[int, ...], block: int, n_blocks: int) -> np.ndarray:
    """Everything but a band of blocks along the first axis: about ``n_blocks`` blocks stay outside the RoI."""
    per_row = int(np.prod([-(-s // block) for s in shape[1:]]))
    rows = max(1, -(-n_blocks // per_row))
    roi = np.zeros(shape, bool)
    roi[min((rows + 1) * block, shape[0] - block):] = True  # never empty
    return roi


def _raw_rate(model, x0, bs: int, seconds: float = 0.3, repeats: int = 3) -> float:
    """Images/s of the bare model at batch ``bs``: the best of ``repeats`` windows (the least disturbed)."""
    import torch

    best = 0.0
    with torch.inference_mode():
        xb = x0.repeat(bs, *([1] * (x0.ndim - 1)))
        model.forward_normalized(xb)
        for _ in range(repeats):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                model.forward_normalized(xb)
                n += bs
            best = max(best, n / (time.perf_counter() - t0))
    return best


def _point(model, img, pool, block, bs, n, n_blocks, dims) -> dict:
    import torch

    from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr

    roi = _band_roi(img.shape[1:], block, n_blocks)
    cfg = PdCRConfig(patch=block, n=n, batch_size=bs, screening="exact")
    model.batch_sizes.clear()
    t0 = time.perf_counter()
    e = explain_pdcr(model, img, roi, 1, pool=pool, config=cfg)
    sec = time.perf_counter() - t0
    used = int(e.provenance["batch_size"])
    raw = _raw_rate(model, model.normalize(torch.as_tensor(img)[None]), used)
    passes = e.stats["forward_passes"]
    return {"dims": dims, "size": int(img.shape[-1]), "block": block, "batch": bs or "auto", "batch_used": used,
            "blocks": e.stats["n_blocks"], "passes": passes, "seconds": round(sec, 2),
            "img_per_s": round(passes / sec, 1), "raw_img_per_s": round(raw, 1),
            "fraction_of_raw": round(passes / sec / raw, 3)}


def sweep(args) -> dict:
    from scipy import ndimage

    from napari_seg_explain.core.images import read_image
    from napari_seg_explain.core.models import load_model
    from napari_seg_explain.core.perturb.pools import pool_from_arrays
    from napari_seg_explain.core.sample import SAMPLE_CARD, SAMPLE_CARD_3D, SAMPLE_VOLUME, SAMPLE_VOLUME_3D, sample_path

    rows = []
    image = read_image(sample_path(SAMPLE_VOLUME))
    model = load_model(sample_path(SAMPLE_CARD), device=args.device)
    # the card pads or crops every input to 128x128: without it the U-Net runs on the whole resampled image
    model.card = dataclasses.replace(model.card, input_size=None)
    plane = image.slice2d(64)
    others = [image.slice2d(z) for z in (40, 50, 80, 90)]
    for size in (128, 256, 512):
        zoom = (1, size / plane.shape[1], size / plane.shape[2])
        img = ndimage.zoom(plane, zoom, order=1).astype(np.float32)
        pool = pool_from_arrays(model, [ndimage.zoom(o, zoom, order=1).astype(np.float32) for o in others])
        for block in (4, 8, 16):
            for bs in (0, 4, 16, 64):
                if size != 128 and (block != 8 or bs not in (0, 16)):
                    continue  # large images: block 8, auto and 16 only (the sweep stays affordable)
                rows.append(_point(model, img, pool, block, bs, args.sweep_n, args.blocks, 2))
                print(rows[-1], file=sys.stderr, flush=True)
    vol3 = read_image(sample_path(SAMPLE_VOLUME_3D))
    model3 = load_model(sample_path(SAMPLE_CARD_3D), device=args.device)
    size3 = model3.card.input_size or (32, 32, 32)
    c = [s // 2 for s in vol3.data.shape[1:]]
    box = tuple(slice(ci - si // 2, ci - si // 2 + si) for ci, si in zip(c, size3))
    sub = vol3.data[(slice(None), *box)].astype(np.float32)
    pool3 = pool_from_arrays(model3, [vol3.data.astype(np.float32)])  # crops of the whole scan
    for block in (4, 8):
        for bs in (0, 4, 16):
            rows.append(_point(model3, sub, pool3, block, bs, args.sweep_n, args.blocks, 3))
            print(rows[-1], file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pdcr_sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    table = head + "".join("| " + " | ".join(str(v) for v in r.values()) + " |\n" for r in rows)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    (out / "pdcr_sweep.md").write_text(
        "# PdCR speed sweep\n\n`python benchmarks/bench_pdcr.py` (N = %d, about %d blocks per point; load average at "
        "the end %s on %s; a shared machine: rates are pessimistic, ratios within a row are what to read).\n\n%s"
        % (args.sweep_n, args.blocks, load, model.device, table))
    _plot(rows, out / "pdcr_sweep.png")
    return {"sweep_points": len(rows), "table": str(out / "pdcr_sweep.md"), "device": str(model.device),
            "mean_fraction_of_raw": round(float(np.mean([r["fraction_of_raw"] for r in rows])), 3)}


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for dims, marker in ((2, "o"), (3, "s")):
        sel = [r for r in rows if r["dims"] == dims]
        labels = [f"{r['size']}/{r['block']}/{r['batch']}" for r in sel]
        ax[0].plot(labels, [r["img_per_s"] for r in sel], marker, label=f"{dims}-D ours")
        ax[0].plot(labels, [r["raw_img_per_s"] for r in sel], marker, mfc="none", label=f"{dims}-D raw model")
        ax[1].plot(labels, [r["fraction_of_raw"] for r in sel], marker, label=f"{dims}-D")
    ax[0].set_ylabel("images / s")
    ax[1].set_ylabel("ours / raw model")
    for a in ax:
        a.tick_params(axis="x", rotation=90, labelsize=7)
        a.set_xlabel("size / block / batch")
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
