"""MiSuRe: minimally sufficient region (Hasany, Meriaudeau, Petitjean 2024, arXiv 2406.12173).

Stage 1 (sufficient region): M = the model's predicted mask of class l; X_m = X * M; dilate M with a
7x7 disk until Dice(pred(X), pred(X_m)) > 0.9 (capped; the count is reported).
Stage 2 (minimally sufficient region): a mask parameter at 224x224, upsampled to the image and confined
to the sufficient region, initialised to 1 inside the prediction and 0.5 elsewhere, optimised with AdamW
for 100 iterations on  lambda * mean|M| + gamma * TV_beta(M) + (1 - sum_i alpha_i softDice_i)  over
background and class l. Values are clamped to [0, 1] and those below 0.2 set to 0: the saliency map.

Masking ``X * M`` acts on the model's normalised input (for min-max cards 0 is the image's minimum).
Constants where the paper and the first author's code differ are listed in ``docs/methods.md``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Engine
from ..errors import UserError
from ..metrics import dice
from ..progress import Progress, drive
from .base import ExplainerSpec, ResultLayer, Stat, batch_size_param, check_ranges, param, seed_param, threshold_param
from .common import check_image, check_mask, provenance
from .registry import register

if TYPE_CHECKING:
    import torch

    from ..models import SegmentationModel
    from ..results import Explanation


@dataclass(frozen=True)
class MiSuReConfig:
    """MiSuRe parameters (defaults: paper / first author's code; see docs/methods.md)."""

    dice_threshold: float = param(0.9, lo=1e-6, hi=1.0, step=0.01, label="Dice to reach",
                                  tip="stage 1 stops when Dice(pred(X), pred(X * M)) exceeds this (paper: 0.9)")
    kernel: int = param(7, lo=1, hi=99, label="Dilation disk", tip="diameter of the dilation disk (paper: 7)")
    max_dilations: int = param(50, lo=0, hi=1000, label="Max dilations", tip="cap on stage-1 dilations")
    param_size: int = param(224, lo=8, hi=4096, label="Mask size",
                            tip="resolution of the optimised mask parameter (paper: 224)")
    iterations: int = param(100, lo=0, hi=100000, label="Iterations", advanced=False,
                            tip="MiSuRe optimisation iterations (paper: 100)")
    lr: float = param(0.1, lo=1e-9, hi=100.0, step=0.01, label="Learning rate", tip="AdamW (paper 0.1; code 0.01)")
    l1: float = param(-1.0, lo=-1.0, hi=1e6, step=0.1, label="λ (sparsity)",
                      tip="weight of mean |M|; -1 = auto: 2-D 0.1 over the image (author's code), 3-D 0.5 over the "
                          "sufficient region")
    tv: float = param(-1.0, lo=-1.0, hi=1e6, step=0.1, label="γ (smoothness)",
                      tip="total-variation weight; -1 = auto: 2-D 0 (author's code), 3-D 1")
    tv_beta: float = param(-1.0, lo=-1.0, hi=10.0, step=0.5, label="β (TV)",
                           tip="exponent of TV_beta; -1 = auto: 2-D 3 (author's code), 3-D 2")
    alpha_background: float = param(0.5, lo=0.0, hi=1e6, step=0.1, label="α background",
                                    tip="weight of the background soft Dice (author's code: 0.5)")
    alpha_class: float = param(-1.0, lo=-1.0, hi=1e6, step=0.1, label="α class",
                               tip="weight of the class soft Dice; -1 = auto: 2-D 1.5 (author's code), 3-D 0.5")
    cutoff: float = param(0.2, lo=0.0, hi=1 - 1e-6, step=0.05, label="Cut-off",
                          tip="saliency values below this become 0 (paper: 0.2)")
    threshold: float = threshold_param("probability threshold of the predicted mask")
    seed: int = seed_param("recorded; the method draws nothing at random")
    batch_size: int = batch_size_param("stage-1 dilations per forward pass; 0 = automatic")

    def __post_init__(self) -> None:
        check_ranges(self, "MiSuRe")


#: the "auto" (-1) constants: 2-D follows the first author's code where the paper is silent; 3-D (neither the paper
#: nor the code covers it) keeps this project's values, tuned on a planted 3-D scene (tests/core/test_explain_3d.py)
AUTO = {2: {"l1": 0.1, "tv": 0.0, "tv_beta": 3.0, "alpha_class": 1.5, "sparsity_over": "image"},
        3: {"l1": 0.5, "tv": 1.0, "tv_beta": 2.0, "alpha_class": 0.5, "sparsity_over": "sufficient region"}}


def constants(cfg: MiSuReConfig, nd: int) -> dict[str, Any]:
    """The loss constants a run uses: the config's, with -1 replaced by the :data:`AUTO` value for ``nd``."""
    auto = AUTO[3 if nd == 3 else 2]
    out = {k: (auto[k] if getattr(cfg, k) < 0 else float(getattr(cfg, k)))
           for k in ("l1", "tv", "tv_beta", "alpha_class")}
    return out | {"alpha_background": float(cfg.alpha_background), "sparsity_over": auto["sparsity_over"]}


def disk(diameter: int, ndim: int = 2) -> np.ndarray:
    """A disk (2-D) or ball (3-D) of ``diameter`` pixels: the dilation's structuring element."""
    r = (diameter - 1) / 2
    grids = np.mgrid[tuple(slice(0, diameter) for _ in range(ndim))]
    return sum((g - r) ** 2 for g in grids) <= r ** 2 + 1e-9


def total_variation(m: "torch.Tensor", beta: float) -> "torch.Tensor":
    """TV_beta of a 2-D or 3-D mask: mean over pixels of (sum of squared forward differences)^(beta / 2)."""
    nd = m.ndim
    base = m[(slice(0, -1),) * nd]
    sq = 0
    for axis in range(nd):
        shifted = m[tuple(slice(1, None) if a == axis else slice(0, -1) for a in range(nd))]
        sq = sq + (shifted - base) ** 2
    return ((sq + 1e-12) ** (beta / 2)).mean()


def misure(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None, target: int = 1, *,
           config: MiSuReConfig = MiSuReConfig(), geometry: dict[str, Any] | None = None
           ) -> Generator[Progress, None, "Explanation"]:
    """Generator form of MiSuRe: yields :class:`Progress`, returns an :class:`Explanation`.

    ``image``: ``(C, *S)``; ``roi``: optional bool of shape ``S`` limiting the explained object (and the Dice)
    to part of the image (default: the whole image, as in the paper); ``target``: class index.
    Result: ``map`` = minimally sufficient saliency in [0, 1]; ``maps['sufficient_region']`` (uint8).
    """
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    from ..models import class_probability
    from ..results import Explanation

    if not model.supports_gradients:
        raise UserError(f"MiSuRe optimises a mask by gradient descent; model {model.name!r} ({model.format}) "
                        "gives no gradients. Use PdCR, or load the model as TorchScript/state dict")
    t_start = time.perf_counter()
    cfg = config
    image = check_image(model, image, dims=SPEC_DIMS)
    shape = image.shape[1:]
    nd = len(shape)
    scope = np.ones(shape, bool) if roi is None else check_mask(roi, shape, "RoI").astype(bool)
    dev = model.device
    scope_t = torch.as_tensor(scope.ravel(), device=dev).nonzero()[:, 0]
    passes0 = model.forward_passes
    warnings_out: list[str] = []
    engine = Engine(model, cfg.batch_size)
    mode = "bilinear" if nd == 2 else "trilinear"

    def class_in_scope(probs: "torch.Tensor") -> "torch.Tensor":
        return class_probability(probs, target).reshape(len(probs), -1)[:, scope_t]

    with model.eval_mode():
        with torch.no_grad():  # not inference_mode: x takes part in stage 2's autograd graph
            x = model.normalize(torch.as_tensor(image)[None])
            p_full = class_probability(model.forward_normalized(x), target)[0]
        y0 = (p_full > cfg.threshold).cpu().numpy() & scope
        if not y0.any():
            raise UserError(f"the model predicts no pixel of class {target} "
                            f"{'inside the RoI' if roi is not None else 'in this image'}: nothing to explain")
        y0_t = torch.as_tensor(y0.ravel(), device=dev, dtype=torch.float32)[scope_t]

        # stage 1: dilate the predicted mask until the masked image reproduces the prediction
        masks = [y0]
        se = disk(cfg.kernel, nd)
        for _ in range(cfg.max_dilations):
            masks.append(ndimage.binary_dilation(masks[-1], structure=se))
        masks_t = torch.as_tensor(np.stack(masks), device=dev, dtype=torch.float32)
        total = 1 + len(masks) + cfg.iterations + 1  # + the unperturbed and the final pass

        def reproduced(d: "torch.Tensor", done: int) -> bool:
            return bool((d[:done] > cfg.dice_threshold).any())

        d1 = yield from engine.run(
            len(masks), lambda a, b: x * masks_t[a:b, None],
            lambda p: dice((class_in_scope(p) > cfg.threshold).float(), y0_t), stage="sufficient region",
            done0=1, total=total, shape=tuple(x.shape[1:]), until=reproduced)
        evaluated = int((~torch.isnan(d1)).sum())
        hits = (d1 > cfg.dice_threshold).nonzero()[:, 0]
        found = int(hits[0]) if len(hits) else len(masks) - 1
        stage1 = d1[: found + 1].tolist()
        if not len(hits):
            warnings_out.append(f"stage 1 reached the cap of {cfg.max_dilations} dilations without Dice > "
                                f"{cfg.dice_threshold} (best {max(stage1):.3f}); the sufficient region is the "
                                "last dilation")
        sr = masks[found]
        total = 1 + evaluated + cfg.iterations + 1

        # stage 2: optimise a sparse, smooth mask inside the sufficient region
        sr_t = torch.as_tensor(sr, device=dev, dtype=torch.float32)
        init = torch.as_tensor(np.where(y0, 1.0, np.where(sr, 0.5, 0.0)), device=dev, dtype=torch.float32)
        # 2-D: the paper's 224x224 parameter; 3-D: a coarse grid (half the context box, at most param_size)
        size = tuple(max(4, min(cfg.param_size, -(-s // 2))) if nd == 3 else cfg.param_size for s in shape)
        param_t = F.interpolate(init[None, None], size=size, mode=mode, align_corners=False)
        param_t = param_t.clone().requires_grad_(True)
        opt = torch.optim.AdamW([param_t], lr=cfg.lr)
        k = constants(cfg, nd)
        n_sr = sr_t.sum().clamp(min=1) if k["sparsity_over"] != "image" else torch.tensor(float(sr_t.numel()))

        def mask_of(prm: "torch.Tensor") -> "torch.Tensor":
            up = F.interpolate(prm, size=shape, mode=mode, align_corners=False)[0, 0]
            return up.clamp(0, 1) * sr_t

        for it in range(cfg.iterations):
            # grad mode is thread-local: set it per step, never across a yield; gradients go to the mask
            # parameter only (autograd.grad), so the user's model parameters keep their .grad untouched
            with torch.inference_mode(False), torch.enable_grad():
                m = mask_of(param_t)
                p = class_in_scope(model.forward_normalized(x * m))
                sd_cls = dice(p, y0_t)[0]
                sd_bg = dice(1 - p, 1 - y0_t)[0]
                loss = (k["l1"] * m.abs().sum() / n_sr + k["tv"] * total_variation(m, k["tv_beta"])
                        + 1 - (k["alpha_background"] * sd_bg + k["alpha_class"] * sd_cls))
                (param_t.grad,) = torch.autograd.grad(loss, [param_t])
            opt.step()
            if it % 5 == 4 or it == cfg.iterations - 1:
                yield Progress(1 + evaluated + it + 1, total, "minimal region")

        with torch.inference_mode():
            sal = mask_of(param_t.detach())
            sal = torch.where(sal < cfg.cutoff, torch.zeros_like(sal), sal)
            p_final = class_in_scope(model.forward_normalized(x * sal))
            d_expl = float(dice((p_final > cfg.threshold).float(), y0_t)[0])
        yield Progress(total, total, "done")
    sal_np = sal.cpu().numpy().astype(np.float32)
    n_obj = int(y0.sum())
    stats = {"dice_explained": d_expl, "perturbation_ratio": float((sal_np > 0).sum() / n_obj),
             "dilations": int(found), "stage1_dice": stage1, "sufficient_region_pixels": int(sr.sum()),
             "saliency_pixels": int((sal_np > 0).sum()), "object_pixels": n_obj,
             "forward_passes": model.forward_passes - passes0}
    k = constants(cfg, nd)
    params = asdict(cfg) | {"target_class": int(target), "scope": "roi" if roi is not None else "image",
                            "effective_constants": k}
    devs = ["Masking X * M is applied to the model's normalised input.",
            "Constants where paper and code differ: lr 0.1 (paper; the author's code 0.01); where the paper is silent "
            "2-D follows the author's code (lambda 0.1 on the mean |M| over the image, no TV, beta 3, alpha 0.5/1.5)."]
    if nd == 3:
        devs.append("3-D (covered by neither the paper nor the code): lambda 0.5 on the mean |M| over the sufficient "
                    "region, TV gamma 1 with beta 2, alpha 0.5/0.5, this project's choice (see effective_constants).")
    if roi is not None:
        devs.append("Restricted to a RoI: the object is the predicted mask inside the RoI and Dice is computed "
                    "inside the RoI (the paper explains the whole predicted class).")
    return Explanation(method="misure", map=sal_np, roi=roi if roi is not None else None,
                       maps={"sufficient_region": sr.astype(np.uint8)}, stats=stats, params=params,
                       provenance=provenance(model, t_start, stats["forward_passes"], cfg.seed, **engine.describe()),
                       deviations=devs, geometry=dict(geometry or {}), warnings=warnings_out)


def explain_misure(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None, target: int = 1,
                   progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking MiSuRe; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`misure`."""
    return drive(misure(model, image, roi, target, **kwargs), progress, cancel)


def estimate(config: MiSuReConfig, roi: Any) -> int:
    """Upper bound of forward passes: every dilation checked, a forward and backward per step, the final pass."""
    return 2 + config.max_dilations + 1 + 2 * config.iterations


def summary(expl: "Explanation") -> str:
    s = expl.stats
    return (f"MiSuRe done: Dice explained {s.get('dice_explained', 0):.2f}, "
            f"perturbation ratio {s.get('perturbation_ratio', 0):.2f}")


SPEC_DIMS = (2, 3)
SPEC = register(ExplainerSpec(
    name="misure", title="MiSuRe", paper="Hasany et al. 2024", config=MiSuReConfig, run=misure,
    needs=frozenset({"roi_optional", "gradients"}), dims=SPEC_DIMS,
    stats=(Stat("dice_explained", "Dice explained", "{:.2f}"), Stat("perturbation_ratio", "perturbation ratio",
                                                                      "{:.2f}"),
           Stat("dilations", "dilations", "{:d}"), Stat("sufficient_region_pixels", "sufficient region (px)", "{:d}"),
           Stat("saliency_pixels", "saliency (px)", "{:d}")),
    layers=(ResultLayer("sufficient_region", "sufficient region", "mask"),
            ResultLayer("map", "saliency", "saliency", colorbar=True), ResultLayer("roi", "RoI", "outline")),
    estimate=estimate, summary=summary, stages=(("sufficient region", "minimal region"),),
    description="The smallest, smoothest part of the image that still reproduces the segmentation."))
