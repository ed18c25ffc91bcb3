"""Contrast-level Shapley values (Ren et al. 2025): which input contrast (T1, T1c, T2, FLAIR...) the model
relied on for a structure.

Exact Shapley values over the C input channels: every coalition (all 2^C subsets, C <= 8) is one forward pass
with the absent contrasts replaced by a baseline in the model's input space (``zero``: 0 after normalisation,
the default; ``mean``: each contrast's mean; ``blur``: a heavy Gaussian blur of it), all coalitions batched by
the engine. The value of a coalition is the RoI metric (``dice``: hard Dice of the prediction, the paper's;
``soft-dice``) against a label, or against the model's own prediction with every contrast present; without a
RoI, over the whole image (the whole predicted structure). Efficiency: the values sum to v(all) - v(none).
More than 8 contrasts: the values are estimated from random orders (each order's marginal contributions),
with their standard error.
A ranking (most important first) and, given a clinician's ranking, Kendall's tau and the top-1 match.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Engine
from ..errors import UserError
from ..progress import Progress, drive
from ..score import RoIScore
from .base import ExplainerSpec, ResultLayer, Stat, batch_size_param, check_ranges, param, seed_param, threshold_param
from .common import check_image, check_mask, provenance
from .registry import register

if TYPE_CHECKING:
    import torch

    from ..models import SegmentationModel
    from ..results import Explanation

MAX_EXACT = 8


@dataclass(frozen=True)
class ShapleyConfig:
    """Contrast Shapley parameters (defaults: Ren et al. 2025's exact values with Dice)."""

    metric: str = param("dice", choices=("dice", "soft-dice"), label="Metric",
                        tip="hard Dice of the prediction (the paper) or soft Dice of the probabilities")
    baseline: str = param("zero", choices=("zero", "mean", "blur"), label="Absent contrast",
                          tip="what replaces an absent contrast in the model's input space")
    threshold: float = threshold_param("probability threshold of a predicted pixel")
    clinician_ranking: str = param("", label="Clinician's ranking", flag="--ranking",
                                   tip="contrast names or indices, most important first, comma-separated "
                                       "(e.g. FLAIR,T2,T1c,T1): Kendall's tau and top-1 agreement")
    permutations: int = param(200, lo=1, hi=100000, label="Permutations",
                              tip="more than 8 contrasts: Shapley values estimated from this many random orders "
                                  "(each costs C + 1 passes); the standard error is reported")
    seed: int = seed_param("seed of the random orders (more than 8 contrasts)")
    batch_size: int = batch_size_param("coalitions per forward pass; 0 = auto")

    def __post_init__(self) -> None:
        check_ranges(self, "Shapley")


def shapley_weights(c: int) -> np.ndarray:
    """``(C, 2^C)``: the weight of coalition ``S`` (bitmask) in player ``i``'s value: +w if ``i in S``, -w if not,
    ``w = |S without i|! (C - |S without i| - 1)! / C!``."""
    out = np.zeros((c, 2 ** c))
    for mask in range(2 ** c):
        members = [(mask >> i) & 1 for i in range(c)]
        for i in range(c):
            k = sum(members) - members[i]
            w = math.factorial(k) * math.factorial(c - k - 1) / math.factorial(c)
            out[i, mask] = w if members[i] else -w
    return out


def _baseline(x: "torch.Tensor", kind: str) -> "torch.Tensor":
    """The stand-in for every contrast of ``x`` ``(1, C, *S)`` (model input space)."""
    import torch

    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
    from scipy import ndimage

    arr = x[0].cpu().numpy()
    sigma = [0] + [max(2.0, s / 16) for s in arr.shape[1:]]
    return torch.as_tensor(ndimage.gaussian_filter(arr, sigma=sigma), device=x.device)[None]


def parse_ranking(text: str, names: list[str]) -> list[int]:
    """A ranking given as names or indices (comma-separated) -> channel indices."""
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if tok.isdigit() and int(tok) < len(names):
            out.append(int(tok))
        elif tok in names:
            out.append(names.index(tok))
        else:
            raise UserError(f"the clinician's ranking names {tok!r}, which is not a contrast ({', '.join(names)})")
    if sorted(out) != list(range(len(names))):
        raise UserError(f"the clinician's ranking must name every contrast once ({', '.join(names)}), got {text!r}")
    return out


def shapley(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None, target: int = 1, *,
            label: np.ndarray | None = None, config: ShapleyConfig = ShapleyConfig(),
            geometry: dict[str, Any] | None = None) -> Generator[Progress, None, "Explanation"]:
    """Generator form: yields :class:`Progress`, returns an Explanation whose ``stats`` hold ``contrasts``,
    ``shapley`` (one value per contrast, in Dice), ``ranking`` and the coalition values; ``map`` is the scored
    reference region (1 inside)."""
    import torch

    from ..results import Explanation

    t0 = time.perf_counter()
    cfg = config
    image = check_image(model, image)
    c, shape = image.shape[0], image.shape[1:]
    exact = c <= MAX_EXACT
    region = np.ones(shape, bool) if roi is None else check_mask(roi, shape, "RoI").astype(bool)
    label = check_mask(label, shape, "label")
    names = [str(n) for n in (geometry or {}).get("channel_names") or []][:c]
    names = names if len(names) == c else [f"contrast {i}" for i in range(c)]
    score = RoIScore(region, target, labels=label, threshold=cfg.threshold, hard=cfg.metric == "dice")
    engine = Engine(model, cfg.batch_size)
    dev = model.device
    passes0 = model.forward_passes
    if exact:
        masks = torch.tensor([[(m >> i) & 1 for i in range(c)] for m in range(2 ** c)], dtype=torch.float32)
    else:  # random orders: the coalitions along each order (the empty one first)
        orders = np.stack([np.random.default_rng(cfg.seed + k).permutation(c) for k in range(cfg.permutations)])
        prefix = np.zeros((cfg.permutations, c + 1, c), np.float32)
        for j in range(c):
            prefix[np.arange(cfg.permutations), j + 1:, orders[:, j]] = 1
        masks = torch.as_tensor(prefix.reshape(-1, c))
    n_coal = len(masks)
    with model.eval_mode():
        with torch.inference_mode():
            x = model.normalize(torch.as_tensor(image, device=dev)[None])
            base = _baseline(x, cfg.baseline)
            score.prepare(model.forward_normalized(x))
        keep = masks.to(dev).reshape(n_coal, c, *([1] * len(shape)))

        def build(a: int, b: int) -> "torch.Tensor":
            return x * keep[a:b] + base * (1 - keep[a:b])

        values = yield from engine.run(n_coal, build, lambda p: score(p)[:, 0] / 100, stage="coalitions",
                                       done0=1, total=1 + n_coal, shape=tuple(x.shape[1:]))
    v = values.double().numpy()
    stderr = None
    if exact:
        phi = shapley_weights(c) @ v
        v_all, v_none = float(v[-1]), float(v[0])
    else:
        steps = np.diff(v.reshape(cfg.permutations, c + 1), axis=1)  # marginal contribution of orders[:, j]
        contrib = np.zeros((cfg.permutations, c))
        contrib[np.arange(cfg.permutations)[:, None], orders] = steps
        phi = contrib.mean(axis=0)
        stderr = (contrib.std(axis=0, ddof=1) / np.sqrt(cfg.permutations)).tolist() if cfg.permutations > 1 \
            else [float("nan")] * c
        v_all, v_none = float(v.reshape(cfg.permutations, c + 1)[0, -1]), float(v[0])
    ranking = [int(i) for i in np.argsort(-phi, kind="stable")]
    stats: dict[str, Any] = {"contrasts": names, "shapley": phi.tolist(), "ranking": ranking,
                             "ranking_names": [names[i] for i in ranking], "v_all": v_all, "v_none": v_none,
                             "efficiency_error": float(phi.sum() - (v_all - v_none)),
                             "estimator": "exact" if exact else f"{cfg.permutations} random orders",
                             "metric": score.metric, "top_contrast": names[ranking[0]],
                             **({"coalition_values": {"".join(str((m >> i) & 1) for i in range(c)): float(v[m])
                                                      for m in range(2 ** c)}} if exact else
                                {"shapley_stderr": stderr}),
                             "forward_passes": model.forward_passes - passes0}
    if cfg.clinician_ranking:
        from scipy.stats import kendalltau

        theirs = parse_ranking(cfg.clinician_ranking, names)
        ours_rank = np.argsort(ranking)  # position of each contrast
        their_rank = np.argsort(theirs)
        stats["kendall_tau"] = float(kendalltau(ours_rank, their_rank).statistic) if c > 1 else 1.0
        stats["top1_match"] = bool(theirs[0] == ranking[0])
    devs = ["Absent contrasts are replaced by a baseline in the model's input space "
            f"({cfg.baseline}); the paper's baseline choice may differ."]
    if label is None:
        devs.append("No ground-truth label: the value is Dice against the model's own prediction with every contrast.")
    params = asdict(cfg) | {"target_class": int(target), "scope": "roi" if roi is not None else "image"}
    return Explanation(method="shapley", map=region.astype(np.float32), roi=roi if roi is None else region,
                       stats=stats, params=params,
                       provenance=provenance(model, t0, stats["forward_passes"], cfg.seed, **engine.describe()),
                       deviations=devs, geometry=dict(geometry or {}))


def explain_shapley(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None, target: int = 1,
                    progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking form of :func:`shapley`."""
    return drive(shapley(model, image, roi, target, **kwargs), progress, cancel)


def across_models(expls: list["Explanation"]) -> dict[str, Any]:
    """Uncertainty across models (e.g. the folds of a cross-validated model), as Ren et al. report it: the mean and
    standard deviation of each contrast's value, each model's ranks, the mean rank and the variance of the ranks."""
    phi = np.array([e.stats["shapley"] for e in expls], dtype=float)  # (models, C)
    ranks = np.array([np.argsort(e.stats["ranking"]) for e in expls], dtype=float)  # rank of each contrast, 0 = top
    mean = phi.mean(axis=0)
    return {"contrasts": expls[0].stats["contrasts"], "n_models": len(expls), "shapley": mean.tolist(),
            "shapley_std": phi.std(axis=0, ddof=1).tolist() if len(expls) > 1 else [0.0] * phi.shape[1],
            "ranking": [int(i) for i in np.argsort(-mean, kind="stable")],
            "ranks_per_model": ranks.astype(int).tolist(), "mean_rank": ranks.mean(axis=0).tolist(),
            "rank_variance": ranks.var(axis=0, ddof=1).tolist() if len(expls) > 1 else [0.0] * phi.shape[1]}


def summary(expl: "Explanation") -> str:
    s = expl.stats
    return f"Shapley done: {s['top_contrast']} matters most (ranking {', '.join(s['ranking_names'])})"


SPEC = register(ExplainerSpec(
    name="shapley", title="Shapley", paper="Ren et al. 2025", config=ShapleyConfig, run=shapley,
    needs=frozenset({"roi_optional", "label"}), dims=(2, 3),
    stats=(Stat("top_contrast", "most important contrast", "{}"), Stat("v_all", "Dice, all contrasts", "{:.3f}"),
           Stat("v_none", "Dice, no contrast", "{:.3f}"), Stat("kendall_tau", "Kendall's tau vs clinician", "{:.2f}")),
    layers=(ResultLayer("roi", "RoI", "outline"),),
    estimate=lambda cfg, roi: 1 + max(2 ** MAX_EXACT, cfg.permutations * (MAX_EXACT + 2)), summary=summary, stages=(("coalitions",),),
    json_keys=("contrasts", "shapley", "ranking"), aggregate=across_models,
    description="Exact Shapley values of the input contrasts for the segmentation (in Dice)."))
