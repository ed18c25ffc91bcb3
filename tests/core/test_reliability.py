"""Post-hoc reliability from MiSuRe's outputs: the fitted model finds a planted dependence, round-trips through
JSON, refuses too few examples, and runs end to end from a seg-explain batch on the sample."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from napari_seg_explain.cli import main  # noqa: E402
from napari_seg_explain.core import reliability as rel  # noqa: E402
from napari_seg_explain.core.errors import UserError  # noqa: E402
from napari_seg_explain.core.sample import SAMPLE_CARD, sample_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def synthetic(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reliability planted on Dice explained (higher = reliable); the other features are noise."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.integers(0, 20, n), rng.uniform(0.5, 1.0, n), rng.uniform(0.1, 3.0, n),
                         rng.uniform(2, 4, n)]).astype(float)
    y = (X[:, 1] + rng.normal(0, 0.03, n) > 0.75).astype(int)
    return X, y


def test_planted_feature_gives_high_auc_and_right_sign():
    X, y = synthetic()
    auc = rel.cross_validated_auc(X, y, folds=5, seed=0)
    assert auc > 0.9
    model = rel.fit(X, y, threshold=0.9, folds=5, seed=0)
    assert model.cv_auc == pytest.approx(auc)
    coef = model.coefficients
    assert coef["dice_explained"] > 0
    assert abs(coef["dice_explained"]) == max(abs(v) for v in coef.values())
    assert model.n_train == len(y) and model.n_reliable == int(y.sum())
    # seeded: the same AUC again
    assert rel.cross_validated_auc(X, y, folds=5, seed=0) == auc


def test_json_round_trip_predicts_identically(tmp_path):
    X, y = synthetic(120, seed=1)
    model = rel.fit(X, y, folds=3, seed=2)
    p = rel.save_model(model, tmp_path / "m.json")
    d = json.loads(p.read_text())
    assert d["feature_names"] == list(rel.FEATURES) and d["threshold"] == 0.9 and d["n_train"] == 120
    assert {"coefficients", "intercept", "scaler_mean", "scaler_scale", "cv_auc", "versions"} <= set(d)
    assert "scikit_learn" in d["versions"]
    loaded = rel.load_model(p)
    np.testing.assert_array_equal(rel.predict(loaded, X), rel.predict(model, X))
    assert loaded.cv_auc == model.cv_auc
    d["format"] = "something else"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="not a reliability model"):
        rel.load_model(tmp_path / "bad.json")


def test_too_few_examples_of_a_class_is_a_clear_error():
    X, y = synthetic(40)
    y[:] = 0
    y[:3] = 1
    with pytest.raises(UserError, match="at least 5 reliable and 5 unreliable.*got 3 reliable"):
        rel.cross_validated_auc(X, y, folds=5)
    with pytest.raises(UserError, match="got 3 reliable"):
        rel.fit(X, y, folds=5)
    with pytest.raises(UserError, match=r"\(n, 4\)"):
        rel.fit(X[:, :3], y)


def test_features_from_misure_stats():
    stats = {"dilations": 3, "dice_explained": 0.91, "perturbation_ratio": 0.5, "object_pixels": 1000}
    assert rel.feature_row(stats) == [3.0, 0.91, 0.5, 3.0]
    with pytest.raises(UserError, match="dice_explained"):
        rel.feature_row({"dilations": 1})


def _make_set_module():
    path = ROOT / "benchmarks" / "make_reliability_set.py"
    if not path.exists():
        pytest.skip("benchmarks/ is not part of this copy")
    spec = importlib.util.spec_from_file_location("make_reliability_set", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_end_to_end_batch_then_fit_and_predict(tmp_path):
    mod = _make_set_module()
    # clean and lightly blurred slices are segmented well (Dice > 0.9), noisy ones badly
    m = mod.build(tmp_path / "set", slices=(44, 76), degradations=("clean", "blur1", "noise2", "noise4"))
    card = str(sample_path(SAMPLE_CARD))
    out = tmp_path / "run"
    fast = ["--set", "misure.iterations=3", "--set", "misure.max_dilations=6", "--threads", "1"]
    assert main(["--quiet", "batch", str(m), "--model", card, "--method", "misure", *fast, "-o", str(out)]) == 0
    model_json = tmp_path / "rel.json"
    assert main(["--quiet", "reliability", "fit", str(out), "--manifest", str(m), "--folds", "2",
                 "-o", str(model_json)]) == 0
    d = json.loads(model_json.read_text())
    assert d["n_train"] == 8 and d["n_reliable"] == 4 and 0 <= d["cv_auc"] <= 1
    rows = list(csv.DictReader((tmp_path / "rel_rows.csv").open()))
    assert len(rows) == 8
    assert {r["reliable"] for r in rows if "clean" in r["name"]} == {"1"}
    assert {r["reliable"] for r in rows if "noise4" in r["name"]} == {"0"}
    assert (tmp_path / "rel_global_views.png").stat().st_size > 1000
    # a results.csv with the Dice column already there
    assert main(["--quiet", "reliability", "fit", str(tmp_path / "rel_rows.csv"), "--dice-column", "label_dice",
                 "--folds", "2", "--plot", str(tmp_path / "views"), "-o", str(tmp_path / "rel2.json")]) == 0
    assert (tmp_path / "views.png").stat().st_size > 1000, "a plot name without a suffix gets .png, as matplotlib"
    assert json.loads((tmp_path / "rel2.json").read_text())["coefficients"] == d["coefficients"]
    pred = tmp_path / "pred.csv"
    assert main(["--quiet", "reliability", "predict", str(out / "results.csv"), "--model-json", str(model_json),
                 "-o", str(pred)]) == 0
    probs = [float(r["probability_reliable"]) for r in csv.DictReader(pred.open())]
    assert len(probs) == 8 and all(0 <= p <= 1 for p in probs)
    # without the Dice: a clear error
    assert main(["--quiet", "reliability", "fit", str(out), "-o", str(tmp_path / "x.json")]) == 2
