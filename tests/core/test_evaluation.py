"""Evaluation metrics (attribution score, deletion/insertion curves, summary) on models whose answer is known.

The planted 2-D model (tests/known_models.py) segments its object from the object's own pixels, shifted up
by a cue block far from the RoI and down by a suppressor block; every other pixel is ignored. An oracle map
(+1 on the cue, -1 on the suppressor) must therefore beat random maps, which must beat the inverted oracle.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import known_models as km
from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.evaluation import SUMMARY_KEYS, evaluate, summary_metrics
from napari_seg_explain.core.explainers.misure import MiSuReConfig, explain_misure
from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
from napari_seg_explain.core.modelcard import ModelCard
from napari_seg_explain.core.models import SegmentationModel
from napari_seg_explain.core.perturb.pools import pool_from_arrays
from napari_seg_explain.core.rois import roi_from_bounds, roi_from_box

RANDOM_SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def setup2d():
    sc = km.cue_scene()
    model = SegmentationModel(km.CueModel(), device="cpu")
    pool = pool_from_arrays(model, km.dark_pool_images())
    roi = roi_from_box((km.H, km.W), *sc["box"])
    oracle = np.zeros((km.H, km.W), np.float32)
    oracle[km.CUE] = 1.0
    oracle[km.SUPPRESSOR] = -1.0
    return {"sc": sc, "model": model, "pool": pool, "roi": roi, "oracle": oracle}


def _eval(s, amap, **kw):
    kw.setdefault("pool", s["pool"])
    kw.setdefault("label", s["sc"]["label"])
    return evaluate(s["model"], s["sc"]["image"], s["roi"], 1, amap, **kw)


def _random_maps(shape):
    return [np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32) for seed in RANDOM_SEEDS]


def test_oracle_beats_random_beats_inverted_2d(setup2d):
    s = setup2d
    oracle = _eval(s, s["oracle"])
    inverted = _eval(s, -s["oracle"])
    randoms = [_eval(s, m) for m in _random_maps(s["oracle"].shape)]

    def mean(key):
        return float(np.mean([r[key] for r in randoms]))

    m0 = oracle["M0"]
    for r in [oracle, inverted, *randoms]:
        assert r["M0"] == m0
        assert r["deletion_curve"][0] == m0, "the deletion curve starts at the unperturbed Dice"
        assert r["insertion_curve"][-1] == m0, "the insertion curve ends at the unperturbed Dice"
        assert r["deletion_curve"][-1] == pytest.approx(r["insertion_curve"][0]), "both curves share the fully " \
                                                                                  "perturbed image"
        assert len(r["deletion_curve"]) == len(r["fractions"]) == 21
    # attribution score: perturbing the oracle's top 10 removes the cue; the inverted map's removes the suppressor
    assert oracle["attribution_score"] > 10
    assert inverted["attribution_score"] < -10
    assert oracle["attribution_score"] > mean("attribution_score") > inverted["attribution_score"]
    # deletion: lower AUC = better map; insertion the other way
    assert oracle["deletion_auc"] < mean("deletion_auc") < inverted["deletion_auc"]
    assert oracle["insertion_auc"] > mean("insertion_auc") > inverted["insertion_auc"]
    for r in randoms:  # every single random map lies between the two (the model ignores every other block)
        assert oracle["deletion_auc"] <= r["deletion_auc"] + 1e-6
        assert r["deletion_auc"] <= inverted["deletion_auc"] + 1e-6
    print(f"\n2-D M0 {m0:.2f}; attribution score oracle {oracle['attribution_score']:.2f}, random "
          f"{mean('attribution_score'):.2f}, inverted {inverted['attribution_score']:.2f}; deletion AUC "
          f"{oracle['deletion_auc']:.2f} / {mean('deletion_auc'):.2f} / {inverted['deletion_auc']:.2f}; insertion "
          f"AUC {oracle['insertion_auc']:.2f} / {mean('insertion_auc'):.2f} / {inverted['insertion_auc']:.2f}")
    json.dumps(oracle, allow_nan=False)  # JSON-serialisable as it is


def test_forward_passes_batching_and_seeds(setup2d):
    s = setup2d
    a = _eval(s, s["oracle"], seed=3, batch_size=7)
    b = _eval(s, s["oracle"], seed=3, batch_size=7)
    c = _eval(s, s["oracle"], seed=3, batch_size=64)
    for key in ("attribution_score", "deletion_curve", "insertion_curve", "deletion_auc", "insertion_auc",
                "deletion_curves_per_draw"):
        assert a[key] == b[key], f"a seeded run repeats exactly ({key})"
        assert a[key] == c[key], f"the batch size does not change the result ({key})"
    # one unperturbed pass + distinct perturbed images: 20 deletion steps + 20 insertion steps per draw, the
    # 100 % deletion and 0 % insertion images shared, the top-k image a new one (k = 10 of 60 is no step)
    assert a["perturbed_images"] == 3 * (20 + 20 - 1 + 1)
    assert a["forward_passes"] == a["perturbed_images"] + 1
    assert a["batch"]["batch_size"] == 7 and a["seconds"] > 0
    soft = [_eval(s, s["oracle"], seed=seed, label=None)["attribution_score_per_draw"] for seed in (3, 3, 4)]
    assert soft[0] == soft[1] and soft[0] != soft[2], "the seed chooses the crops"


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_other_fills_rank_the_oracle_first(setup2d, fill):
    s = setup2d
    oracle = _eval(s, s["oracle"], fill=fill, draws=5)
    inverted = _eval(s, -s["oracle"], fill=fill)
    assert oracle["draws"] == 1 and oracle["pool"] is None, "a deterministic fill needs one draw"
    assert oracle["attribution_score"] > 0 > inverted["attribution_score"]
    assert oracle["deletion_auc"] < inverted["deletion_auc"]
    assert oracle["insertion_auc"] > inverted["insertion_auc"]


def test_pdcr_map_is_evaluated_with_its_sign(setup2d):
    """A PdCR Explanation ranks its most negative (supporting) blocks first; the PdCR map matches the oracle."""
    s = setup2d
    expl = explain_pdcr(s["model"], s["sc"]["image"], s["roi"], 1, pool=s["pool"], label=s["sc"]["label"],
                        config=PdCRConfig(n=6))
    auto = _eval(s, expl)
    assert auto["direction"] == "low"
    oracle = _eval(s, s["oracle"])
    assert auto["attribution_score"] == oracle["attribution_score"]
    assert auto["deletion_auc"] == oracle["deletion_auc"]
    wrong_way = _eval(s, expl, direction="high")
    assert wrong_way["attribution_score"] < 0 < auto["attribution_score"]
    assert _eval(s, expl.map, direction="low")["deletion_auc"] == auto["deletion_auc"]


def test_without_label_soft_dice_vs_own_prediction(setup2d):
    s = setup2d
    r = _eval(s, s["oracle"], label=None)
    assert r["metric"] == "soft_dice_vs_own_prediction"
    inverted = _eval(s, -s["oracle"], label=None)
    # soft Dice vs the own prediction drops for any change of the probabilities, so the inverted map's
    # suppressor also costs Dice points, but fewer than the oracle's cue
    assert r["attribution_score"] > inverted["attribution_score"] and r["attribution_score"] > 5
    assert r["deletion_auc"] < inverted["deletion_auc"]


def test_self_pool_fallback_warns(setup2d):
    s = setup2d
    r = _eval(s, s["oracle"], pool=None)
    assert r["pool"]["self_pool"] is True
    assert any("itself" in w for w in r["warnings"])


def test_bad_inputs_are_user_errors(setup2d):
    s = setup2d
    with pytest.raises(UserError, match="map has shape"):
        _eval(s, np.zeros((32, 32), np.float32))
    with pytest.raises(UserError, match="map has shape"):
        _eval(s, np.zeros((1, km.H, km.W), np.float32))
    with pytest.raises(UserError, match="no finite value"):
        _eval(s, np.full((km.H, km.W), np.nan, np.float32))
    for kw in ({"k": 0}, {"steps": 0}, {"draws": 0}, {"fill": "noise"}, {"direction": "up"}, {"block": 0}):
        with pytest.raises(UserError):
            _eval(s, s["oracle"], **kw)
    r = _eval(s, s["oracle"], k=1000, steps=4, draws=1)
    assert r["k"] == 60 and r["warnings"], "k is capped at the number of blocks, with a warning"


def test_summary_metrics_same_keys_for_every_method(setup2d):
    s = setup2d
    pd = explain_pdcr(s["model"], s["sc"]["image"], s["roi"], 1, pool=s["pool"], label=s["sc"]["label"],
                      config=PdCRConfig(n=4))
    ms = explain_misure(s["model"], s["sc"]["image"], s["roi"], 1, config=MiSuReConfig(iterations=5))
    a, b = summary_metrics(pd), summary_metrics(ms)
    assert set(a) == set(b) == {"method", *SUMMARY_KEYS}
    assert a["method"] == "pdcr" and b["method"] == "misure"
    assert a["negative_share"] == pd.stats["negative_share"] and a["min_ate"] == pd.stats["min_ate"]
    assert a["roi_dice"] == pd.stats["M0"] and a["forward_passes"] == pd.stats["forward_passes"]
    assert math.isnan(a["dice_explained"]) and math.isnan(a["perturbation_ratio"])
    assert b["dice_explained"] == ms.stats["dice_explained"]
    assert b["perturbation_ratio"] == ms.stats["perturbation_ratio"]
    assert math.isnan(b["negative_share"]) and math.isnan(b["min_ate"])
    assert a["runtime_s"] > 0 and b["runtime_s"] > 0 and b["forward_passes"] > 0


# ------------------------------------------------------------------------------------------------ 3-D
N3 = 24
OBJ3 = (slice(8, 16), slice(8, 16), slice(8, 12))
CUE3 = (slice(8, 16), slice(8, 16), slice(16, 20))
SUPP3 = (slice(8, 16), slice(8, 16), slice(0, 4))


class Cue3D(nn.Module):
    """logit = 10 (x - 0.5) + 6 mean(cue) - 6 mean(suppressor): the 3-D planted model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cue = x[:, :, CUE3[0], CUE3[1], CUE3[2]].mean(dim=(1, 2, 3, 4))[:, None, None, None, None]
        supp = x[:, :, SUPP3[0], SUPP3[1], SUPP3[2]].mean(dim=(1, 2, 3, 4))[:, None, None, None, None]
        logit = 10 * (x[:, :1] - 0.5) + 6 * cue - 6 * supp
        return torch.cat([torch.zeros_like(logit), logit], dim=1)


def test_oracle_beats_random_beats_inverted_3d():
    vol = np.zeros((1, N3, N3, N3), np.float32)
    vol[(0, *OBJ3)] = np.linspace(0.3, 0.9, 8, dtype=np.float32)[:, None, None]
    vol[(0, *CUE3)] = vol[(0, *SUPP3)] = 0.4
    label = np.zeros((N3,) * 3, np.uint8)
    label[OBJ3] = 1
    model = SegmentationModel(Cue3D(), ModelCard(name="cue3d", spatial_dims=3), device="cpu")
    rng = np.random.default_rng(2)
    pool = pool_from_arrays(model, [rng.uniform(0, 0.2, (1, N3, N3, N3)).astype(np.float32) for _ in range(3)])
    roi = roi_from_bounds((N3,) * 3, (8, 8, 8), (16, 16, 12))
    oracle = np.zeros((N3,) * 3, np.float32)
    oracle[CUE3] = 1.0
    oracle[SUPP3] = -1.0

    def run(amap, **kw):
        return evaluate(model, vol, roi, 1, amap, label=label, pool=pool, block=4, steps=10, draws=2, **kw)

    o, inv = run(oracle), run(-oracle)
    randoms = [run(m) for m in _random_maps(oracle.shape)[:3]]
    assert o["n_blocks"] == 6 ** 3 - 4 and o["block"] == [4, 4, 4]
    assert o["deletion_curve"][0] == o["M0"] and inv["deletion_curve"][0] == o["M0"]
    ra = float(np.mean([r["attribution_score"] for r in randoms]))
    rd = float(np.mean([r["deletion_auc"] for r in randoms]))
    ri = float(np.mean([r["insertion_auc"] for r in randoms]))
    assert o["attribution_score"] > ra > inv["attribution_score"]
    assert o["deletion_auc"] < rd < inv["deletion_auc"]
    assert o["insertion_auc"] > ri > inv["insertion_auc"]
    again = run(oracle)
    assert {k: v for k, v in again.items() if k not in ("seconds", "batch")} == \
        {k: v for k, v in o.items() if k not in ("seconds", "batch")}, "a seeded 3-D run repeats exactly"
    print(f"\n3-D M0 {o['M0']:.2f}; attribution score {o['attribution_score']:.2f} / {ra:.2f} / "
          f"{inv['attribution_score']:.2f}; deletion AUC {o['deletion_auc']:.2f} / {rd:.2f} / "
          f"{inv['deletion_auc']:.2f}; insertion AUC {o['insertion_auc']:.2f} / {ri:.2f} / {inv['insertion_auc']:.2f}")
