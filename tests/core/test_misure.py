"""MiSuRe keeps what the model depends on (object + far cue) and drops the rest (distractor, unused areas)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import known_models as km
from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.explainers.misure import MiSuReConfig, explain_misure
from napari_seg_explain.core.models import SegmentationModel


@pytest.fixture(scope="module")
def result():
    img = km.cue_scene(object_value=0.45, context=0.2)["image"]
    model = SegmentationModel(km.CueModel(gain=40, cue_w=12, supp_w=0.0), device="cpu")
    return explain_misure(model, img, None, 1)


def test_sufficient_region_grows_to_reach_the_cue(result):
    sr = result.maps["sufficient_region"].astype(bool)
    assert sr[km.OBJECT].all() and sr[km.CUE].all()
    assert sr[km.DISTRACTOR].all(), "the distractor is nearer than the cue, so dilation covers it too"
    assert result.stats["dilations"] > 5
    assert result.stats["stage1_dice"][-1] > 0.9 >= max(result.stats["stage1_dice"][:-1])


def test_saliency_keeps_dependencies_and_drops_the_rest(result):
    sal = result.map
    assert (sal[km.OBJECT] > 0).all(), "the object's own pixels are needed"
    assert (sal[km.CUE] > 0).all(), "the far cue is needed"
    assert (sal[km.DISTRACTOR] == 0).all(), "the distractor is never used by the model"
    keep = np.zeros_like(sal, bool)
    keep[km.OBJECT] = keep[km.CUE] = True
    halo = ndimage.binary_dilation(keep)  # TV smoothing may leave a one-pixel rim
    assert (sal[~halo] == 0).all(), "nothing away from the object and the cue is kept"
    assert sal.min() >= 0 and sal.max() <= 1
    assert result.stats["dice_explained"] > 0.9
    assert (256 + 64) / 256 <= result.stats["perturbation_ratio"] <= halo.sum() / 256


def test_single_logit_and_two_class_agree():
    img = km.cue_scene(object_value=0.45, context=0.2)["image"]
    cfg = MiSuReConfig(iterations=20)
    a = explain_misure(SegmentationModel(km.CueModel(gain=40, cue_w=12, supp_w=0), device="cpu"), img, config=cfg)
    b = explain_misure(SegmentationModel(km.CueModel(two_class=True, gain=40, cue_w=12, supp_w=0), device="cpu"),
                       img, config=cfg)
    np.testing.assert_allclose(a.map, b.map, atol=1e-4)


def test_nothing_predicted_is_a_clear_error():
    img = np.zeros((1, 64, 64), np.float32)
    with pytest.raises(UserError, match="predicts no pixel"):
        explain_misure(SegmentationModel(km.CueModel(), device="cpu"), img)


def test_bad_parameter_is_named():
    with pytest.raises(UserError, match="lr"):
        MiSuReConfig(lr=0)
