"""Post-hoc reliability from MiSuRe (Hasany et al. 2024): does the explanation say the segmentation is good?

MiSuRe's outputs describe how the model reached its prediction: how many dilations stage 1 needed before the
masked image reproduced the prediction, how much of the prediction the minimal region explains, how large the
minimal region is against the object. The paper uses them to predict whether a segmentation is reliable; here:

* features (:data:`FEATURES`): ``dilations``, ``dice_explained``, ``perturbation_ratio`` and
  ``log10_object_pixels`` (log10 of the predicted mask's size in pixels, inside the RoI when there is one);
* label: reliable = Dice of the model's prediction vs the ground truth (inside the RoI) > ``threshold``
  (default 0.9);
* model: scikit-learn ``Pipeline(StandardScaler, LogisticRegression)``; :func:`cross_validated_auc` is the
  stratified k-fold ROC AUC (seeded);
* the fitted model is saved as JSON (coefficients, scaler mean and scale, feature names, threshold, training
  size, CV AUC, versions), never pickled.

Qt-free; scikit-learn is imported only when a function needs it (``pip install 'napari-seg-explain[reliability]'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    from .manifest import Row
    from .models import SegmentationModel

#: the model's inputs, in this order
FEATURES = ("dilations", "dice_explained", "perturbation_ratio", "log10_object_pixels")
FORMAT = "napari-seg-explain reliability model"
FORMAT_VERSION = 1


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise UserError("post-hoc reliability needs scikit-learn: pip install 'napari-seg-explain[reliability]'") \
            from exc
    import sklearn

    return sklearn


def feature_row(stats: Mapping[str, Any]) -> list[float]:
    """The :data:`FEATURES` of one MiSuRe result (its ``stats``, or a row of a batch ``results.csv``)."""
    def num(key: str) -> float:
        try:
            return float(stats[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"a MiSuRe result needs {key!r} (got {stats.get(key)!r}); run the batch with "
                            "--method misure") from exc

    return [num("dilations"), num("dice_explained"), num("perturbation_ratio"),
            math.log10(max(num("object_pixels"), 1.0))]


def feature_matrix(features: Any) -> np.ndarray:
    """``(n, 4)`` float array from an array, or from MiSuRe stats / results rows (mappings)."""
    if len(features) and isinstance(features[0], Mapping):
        arr = np.array([feature_row(r) for r in features], dtype=float)
    else:
        arr = np.asarray(features, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(FEATURES):
        raise UserError(f"features must be an (n, {len(FEATURES)}) array of {', '.join(FEATURES)} "
                        f"(got shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise UserError("features contain NaN or infinite values")
    return arr


def reliable_labels(dice: Sequence[float], threshold: float = 0.9) -> np.ndarray:
    """1 where the prediction's Dice vs the ground truth is above ``threshold`` (reliable), else 0."""
    return (np.asarray(dice, dtype=float) > threshold).astype(int)


def _check_classes(labels: np.ndarray, need: int, what: str) -> None:
    labels = np.asarray(labels).astype(int)
    if not set(np.unique(labels)) <= {0, 1}:
        raise UserError("labels must be 0 (unreliable) or 1 (reliable)")
    pos, neg = int(labels.sum()), int(len(labels) - labels.sum())
    if min(pos, neg) < need:
        raise UserError(f"{what} needs at least {need} reliable and {need} unreliable examples; got {pos} reliable "
                        f"and {neg} unreliable of {len(labels)}. Add rows (inputs where the model fails and where it "
                        "succeeds), change the Dice threshold, or lower the number of folds")


def _pipeline(C: float = 1.0, seed: int = 0):
    _sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(C=C, random_state=seed))])


def cross_validated_auc(features: Any, labels: Sequence[int], folds: int = 5, seed: int = 0, C: float = 1.0,
                        return_predictions: bool = False) -> float | tuple[float, np.ndarray]:
    """ROC AUC of out-of-fold probabilities: stratified ``folds``-fold (shuffled with ``seed``), the scaler and
    the logistic regression refitted on each training split. Every class needs at least ``folds`` examples."""
    X = feature_matrix(features)
    y = np.asarray(labels).astype(int)
    if len(y) != len(X):
        raise UserError(f"{len(X)} feature rows but {len(y)} labels")
    if folds < 2:
        raise UserError(f"cross-validation needs at least 2 folds (got {folds})")
    _check_classes(y, folds, f"{folds}-fold cross-validation")
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(_pipeline(C, seed), X, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, proba))
    return (auc, proba) if return_predictions else auc


@dataclass
class ReliabilityModel:
    """A fitted reliability model: the scikit-learn pipeline and what it was fitted on."""

    pipeline: Any
    feature_names: tuple[str, ...] = FEATURES
    threshold: float = 0.9
    n_train: int = 0
    n_reliable: int = 0
    cv_auc: float | None = None
    cv_folds: int = 0
    seed: int = 0
    C: float = 1.0
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def coefficients(self) -> dict[str, float]:
        """Logistic-regression weights per feature, on standardised features (log-odds per standard deviation)."""
        coef = self.pipeline.named_steps["logreg"].coef_[0]
        return {n: float(c) for n, c in zip(self.feature_names, coef)}

    def predict_proba(self, features: Any) -> np.ndarray:
        return self.pipeline.predict_proba(feature_matrix(features))[:, 1]

    def to_dict(self) -> dict[str, Any]:
        scale, logreg = self.pipeline.named_steps["scale"], self.pipeline.named_steps["logreg"]
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "feature_names": list(self.feature_names),
                "label": f"reliable = Dice(prediction, ground truth) > {self.threshold}",
                "threshold": self.threshold, "coefficients": [float(c) for c in logreg.coef_[0]],
                "intercept": float(logreg.intercept_[0]), "scaler_mean": [float(v) for v in scale.mean_],
                "scaler_scale": [float(v) for v in scale.scale_], "C": self.C, "n_train": self.n_train,
                "n_reliable": self.n_reliable, "cv_auc": self.cv_auc, "cv_folds": self.cv_folds, "seed": self.seed,
                "versions": self.versions}


def _versions() -> dict[str, str]:
    import platform

    import sklearn

    from .. import __version__

    return {"napari_seg_explain": __version__, "scikit_learn": sklearn.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def fit(features: Any, labels: Sequence[int], *, threshold: float = 0.9, folds: int = 5, seed: int = 0,
        C: float = 1.0) -> ReliabilityModel:
    """Fit the pipeline on every row; ``cv_auc`` is :func:`cross_validated_auc` (``folds`` 0: not computed).
    ``threshold`` is recorded (the Dice above which ``labels`` say 1)."""
    X = feature_matrix(features)
    y = np.asarray(labels).astype(int)
    if len(y) != len(X):
        raise UserError(f"{len(X)} feature rows but {len(y)} labels")
    _check_classes(y, max(folds, 2), "fitting the reliability model")
    auc = cross_validated_auc(X, y, folds, seed, C) if folds else None
    pipe = _pipeline(C, seed).fit(X, y)
    return ReliabilityModel(pipe, FEATURES, float(threshold), len(y), int(y.sum()), auc, folds, seed, C, _versions())


def predict(model: ReliabilityModel, features: Any) -> np.ndarray:
    """Probability that each segmentation is reliable."""
    return model.predict_proba(features)


def save_model(model: ReliabilityModel, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(model.to_dict(), indent=2) + "\n")
    return path


def model_from_dict(d: Mapping[str, Any]) -> ReliabilityModel:
    """Rebuild the fitted pipeline from :meth:`ReliabilityModel.to_dict` (no pickle)."""
    if d.get("format") != FORMAT:
        raise UserError(f"not a reliability model (format {d.get('format')!r}, expected {FORMAT!r})")
    if int(d.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"reliability model format {d['format_version']} is newer than this version reads "
                        f"({FORMAT_VERSION}); update napari-seg-explain")
    names = tuple(d["feature_names"])
    if names != FEATURES:
        raise UserError(f"the reliability model uses features {', '.join(names)}; this version computes "
                        f"{', '.join(FEATURES)}")
    pipe = _pipeline(float(d.get("C", 1.0)), int(d.get("seed", 0)))
    scale, logreg = pipe.named_steps["scale"], pipe.named_steps["logreg"]
    scale.mean_ = np.asarray(d["scaler_mean"], dtype=float)
    scale.scale_ = np.asarray(d["scaler_scale"], dtype=float)
    scale.var_ = scale.scale_ ** 2
    scale.n_features_in_ = len(names)
    scale.n_samples_seen_ = int(d.get("n_train", 0))
    logreg.coef_ = np.asarray([d["coefficients"]], dtype=float)
    logreg.intercept_ = np.asarray([d["intercept"]], dtype=float)
    logreg.classes_ = np.array([0, 1])
    logreg.n_features_in_ = len(names)
    logreg.n_iter_ = np.array([0])
    return ReliabilityModel(pipe, names, float(d["threshold"]), int(d.get("n_train", 0)),
                            int(d.get("n_reliable", 0)), d.get("cv_auc"), int(d.get("cv_folds", 0)),
                            int(d.get("seed", 0)), float(d.get("C", 1.0)), dict(d.get("versions", {})))


def load_model(path: str | Path) -> ReliabilityModel:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read reliability model {path}: {exc}") from exc
    except ValueError as exc:
        raise UserError(f"{path} is not JSON: {exc}") from exc
    return model_from_dict(d)


def prediction_dice(model: "SegmentationModel", row: "Row") -> float:
    """Dice of ``model``'s prediction of the row's class vs the row's label file, inside the row's RoI (box and/or
    mask; the whole explained image without one), on the plane a 2-D model explains (or the volume). 1.0 when
    both are empty there."""
    from .images import read_image
    from .job_inputs import array_from_file, explained_slice, resolve_roi
    from .metrics import dice_np

    if not row.label:
        raise UserError(f"{row.title}: the manifest row has no label: the prediction's Dice needs the ground truth")
    image = read_image(row.image)
    z = explained_slice(image, model, row.slice_index)
    pred = model.segment(image, z) if z is not None else model.segment(image)
    shape = tuple(pred.shape)
    cls = model.card.class_index(row.target)
    lab = array_from_file(row.label, z, shape, "label")
    roi = resolve_roi(shape, row.roi_box, row.roi_mask, z, required=False)
    scope = np.ones(shape, bool) if roi is None else np.asarray(roi, bool)
    p, g = (pred == cls) & scope, (np.rint(lab) == cls) & scope
    if not p.any() and not g.any():
        return 1.0
    return dice_np(p, g)


def plot_global_views(features: Any, labels: Sequence[int] | None, path: str | Path, *,
                      threshold: float = 0.9, title: str = "") -> Path:
    """MiSuRe's global views: dilations and perturbation ratio against the prediction size (pixels, log axis),
    each point coloured reliable / unreliable (or grey when ``labels`` is None). A PNG at ``path``."""
    from matplotlib.figure import Figure  # no pyplot: no backend is chosen or changed

    X = feature_matrix(features)
    size = 10 ** X[:, 3]
    fig = Figure(figsize=(10, 4.2), dpi=120)
    axes = fig.subplots(1, 2)
    groups = ([(np.ones(len(X), bool), "results", "0.4")] if labels is None else
              [(np.asarray(labels) == 1, f"reliable (Dice > {threshold:g})", "tab:blue"),
               (np.asarray(labels) == 0, f"unreliable (Dice ≤ {threshold:g})", "tab:red")])
    for ax, col, name in ((axes[0], 0, "stage-1 dilations"), (axes[1], 2, "perturbation ratio")):
        for sel, lab, colour in groups:
            ax.scatter(size[sel], X[sel, col], s=18, alpha=0.75, c=colour, label=f"{lab} (n={int(sel.sum())})",
                       edgecolors="none")
        ax.set_xscale("log")
        ax.set_xlabel("prediction size (pixels)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or "MiSuRe global views")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
