"""Issue 12 item 8: the multi-contrast sample model (T1, T1c, T2, FLAIR; a synthetic lesion visible in T2 and
FLAIR, an enhancing rim in T1c, invisible in T1) segments its held-out lesions, and contrast-level Shapley values
on every held-out lesion cross-section rank the contrasts that show it above T1, the one that does not
(the default baseline, zero after normalisation: the contrast dropout the model was trained with).

This test can fail: it measures what the trained model does (nothing here forces the ranking). With the ``mean``
or ``blur`` baselines, which the model never saw in training, T1 is not always last (sample_data/README.md).

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/core/test_shapley_sample.py -q``.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy import ndimage

from sample_paths import SAMPLE_DIR
from napari_seg_explain.core.explainers.shapley import ShapleyConfig, explain_shapley
from napari_seg_explain.core.images import read_image, stack_channels
from napari_seg_explain.core.metrics import dice_np
from napari_seg_explain.core.models import load_model
from napari_seg_explain.core.sample import (MULTICONTRAST_CARD, MULTICONTRAST_LABEL, MULTICONTRAST_NAMES,
                                            MULTICONTRAST_VOLUMES)

CARD = SAMPLE_DIR / MULTICONTRAST_CARD


@pytest.fixture(scope="module")
def sample():
    card = yaml.safe_load(CARD.read_text())
    image = stack_channels([read_image(SAMPLE_DIR / p) for p in MULTICONTRAST_VOLUMES], list(MULTICONTRAST_NAMES))
    label = read_image(SAMPLE_DIR / MULTICONTRAST_LABEL).data[0] > 0
    return card, image, label, load_model(CARD, device="cpu")


def test_heldout_lesion_dice(sample):
    card, image, label, model = sample
    held = card["training"]["heldout_slices"]
    assert card["in_channels"] == 4 and card["channels"] == list(MULTICONTRAST_NAMES)
    pred = np.stack([model.segment(image, z) for z in held], axis=-1) == 1
    pooled = dice_np(pred, label[:, :, held])
    assert pooled >= 0.7, pooled
    assert abs(pooled - card["training"]["heldout_dice"]) < 0.02, "the card reports what the model does"


def _lesions(label: np.ndarray, held: list[int], min_px: int = 12) -> list[tuple[int, tuple[slice, slice]]]:
    """Every lesion cross-section of at least ``min_px`` pixels on the held-out slices: (slice, its box)."""
    out = []
    for z in held:
        comps, n = ndimage.label(label[:, :, z])
        for k, box in enumerate(ndimage.find_objects(comps), start=1):
            if (comps[box] == k).sum() >= min_px:
                out.append((z, box))
    return out


def test_shapley_ranks_lesion_contrasts_above_t1(sample):
    card, image, label, model = sample
    held = card["training"]["heldout_slices"]
    lesions = _lesions(label, held)
    assert len(lesions) >= 3, "the held-out slices hold several lesions"
    t1 = MULTICONTRAST_NAMES.index("T1")
    tops = []
    for z, (rows, cols) in lesions:
        roi = np.zeros(label.shape[:2], bool)
        roi[max(rows.start - 4, 0):rows.stop + 4, max(cols.start - 4, 0):cols.stop + 4] = True
        expl = explain_shapley(model, image.data[:, :, :, z], roi, 1, label=label[:, :, z].astype(np.uint8),
                               config=ShapleyConfig(), geometry={"channel_names": list(MULTICONTRAST_NAMES)})
        s = expl.stats
        phi = np.array(s["shapley"])
        assert s["contrasts"] == list(MULTICONTRAST_NAMES)
        assert abs(s["efficiency_error"]) < 1e-6
        assert s["v_all"] > 0.5, (z, s["v_all"])  # the model finds this lesion with every contrast
        # the contrasts that show the lesion all rank above T1, which does not
        assert s["ranking"][-1] == t1, (z, dict(zip(MULTICONTRAST_NAMES, phi.round(3))))
        assert all(phi[i] > phi[t1] for i in range(4) if i != t1)
        tops.append(s["top_contrast"])
    # mostly a hyperintense contrast matters most (measured: FLAIR 11, T2 3, T1c 1 of the 15 cross-sections)
    assert sum(t in ("T2", "FLAIR") for t in tops) >= 2 * len(tops) / 3, tops
