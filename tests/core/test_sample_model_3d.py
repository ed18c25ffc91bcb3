"""The shipped 3-D sample model segments its held-out slab as its card says, through the project's own loader."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from sample_paths import SAMPLE_DIR
from napari_seg_explain import load_model, read_image
from napari_seg_explain.core.metrics import dice_np

CARD = SAMPLE_DIR / "model" / "mni152_wm_unet3d.yaml"
T1 = SAMPLE_DIR / "mni152_t1_3mm.nii.gz"
LABEL = SAMPLE_DIR / "mni152_wm_label_3mm.nii.gz"


@pytest.fixture(scope="module")
def model():
    return load_model(CARD, device="cpu")


def test_card_describes_a_3d_patch_model(model):
    card = model.card
    assert card.spatial_dims == 3 and card.input_size == (32, 32, 32)
    assert card.orientation == "file" and card.normalization == "minmax"
    assert card.classes == ("background", "white_matter") and card.spacing == (3.0, 3.0, 3.0)
    img = nib.load(T1)
    assert img.shape == (64, 52, 54) and nib.aff2axcodes(img.affine) == ("P", "L", "S")
    assert np.allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)), 3.0)


def test_heldout_dice_matches_card(model):
    training = yaml.safe_load(CARD.read_text())["training"]
    held, margin = training["heldout_slices"], training["excluded_margin_slices"]
    assert held and margin and not set(held) & set(margin)
    image = read_image(T1)
    pred = model.segment(image)  # sliding window, returned in display order (== file order for PLS)
    assert pred.shape == image.spatial_shape == (64, 52, 54)
    ref = np.asarray(nib.load(LABEL).dataobj) > 0
    pooled = dice_np(pred[:, :, held] == 1, ref[:, :, held])
    assert pooled >= 0.8
    assert abs(pooled - training["heldout_dice"]) < 0.02, "the card reports what the model does"


def test_patch_in_probabilities_out(model):
    x = np.random.default_rng(0).random((1, 1, 32, 32, 32), dtype=np.float32)
    with torch.no_grad():
        logits = model.net(torch.from_numpy(x))
    assert tuple(logits.shape) == (1, 2, 32, 32, 32)
    probs = model.predict(x)  # the loader's own path: normalise, run, softmax
    assert probs.shape == (1, 2, 32, 32, 32)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
