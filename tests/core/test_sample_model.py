"""The shipped sample model segments its held-out slices (Dice >= 0.8) through the project's own loader."""

from __future__ import annotations

import numpy as np
import yaml

from sample_paths import SAMPLE_DIR
from napari_seg_explain.core.images import read_image
from napari_seg_explain.core.metrics import dice_np
from napari_seg_explain.core.models import load_model

CARD = SAMPLE_DIR / "model" / "mni152_wm_unet.yaml"


def test_heldout_volume_slices_dice():
    card = yaml.safe_load(CARD.read_text())
    held = card["training"]["heldout_slices"]
    assert held, "the card lists its held-out slices"
    model = load_model(CARD, device="cpu")
    vol = read_image(SAMPLE_DIR / "mni152_t1.nii.gz")
    lab = read_image(SAMPLE_DIR / "mni152_wm_label.nii.gz")
    pred = model.segment(vol)  # the whole volume, slice by slice
    assert pred.shape == vol.spatial_shape
    ref = lab.data[0] > 0
    pooled = dice_np(pred[:, :, held] == 1, ref[:, :, held])
    assert pooled >= 0.8
    assert abs(pooled - card["training"]["heldout_dice_pooled"]) < 0.02, "the card reports what the model does"


def test_png_slices_dice():
    model = load_model(CARD, device="cpu")
    scores = []
    for png in sorted((SAMPLE_DIR / "slices").glob("*.png")):
        if png.stem.endswith("_label"):
            continue
        img = read_image(png)
        ref = read_image(png.with_name(png.stem + "_label.png")).data[0] > 0
        scores.append(dice_np(model.segment(img) == 1, ref))
    assert len(scores) >= 3 and min(scores) >= 0.8, scores
