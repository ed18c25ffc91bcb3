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

from ..errors import IncompatibleInputError, UserError
from ..metrics import dice
from ..progress import Progress, drive
from .common import check_image2d, provenance

if TYPE_CHECKING:
    import torch

    from ..models import SegmentationModel
    from ..results import Explanation


@dataclass(frozen=True)
class MiSuReConfig:
    """MiSuRe parameters (defaults: paper / first author's code; see docs/methods.md)."""

    dice_threshold: float = 0.9  # stage 1 stops when Dice(pred(X), pred(X * M)) exceeds this
    kernel: int = 7  # diameter of the dilation disk
    max_dilations: int = 50  # cap on stage-1 dilations
    param_size: int = 224  # resolution of the optimised mask parameter
    iterations: int = 100
    lr: float = 0.1  # paper (the code uses 0.01)
    l1: float = 0.5  # lambda: sparsity weight on mean |M| inside the sufficient region
    tv: float = 1.0  # gamma: total-variation weight
    tv_beta: float = 2.0  # beta of TV_beta
    alpha_background: float = 0.5
    alpha_class: float = 0.5
    cutoff: float = 0.2  # saliency values below this become 0
    threshold: float = 0.5  # probability threshold for the predicted mask
    seed: int = 0
    batch_size: int = 8  # stage-1 dilations evaluated per forward batch

    def __post_init__(self) -> None:
        checks = {"dice_threshold": 0 < self.dice_threshold <= 1, "kernel": self.kernel >= 1,
                  "max_dilations": self.max_dilations >= 0, "param_size": self.param_size >= 8,
                  "iterations": self.iterations >= 0, "lr": self.lr > 0, "l1": self.l1 >= 0, "tv": self.tv >= 0,
                  "tv_beta": self.tv_beta >= 1, "cutoff": 0 <= self.cutoff < 1, "batch_size": self.batch_size >= 1,
                  "threshold": 0 < self.threshold < 1,
                  "alpha_background": self.alpha_background >= 0, "alpha_class": self.alpha_class >= 0}
        for name, ok in checks.items():
            if not ok:
                raise UserError(f"MiSuRe parameter {name} has an invalid value ({getattr(self, name)})")


def disk(diameter: int) -> np.ndarray:
    r = (diameter - 1) / 2
    yy, xx = np.mgrid[:diameter, :diameter]
    return (yy - r) ** 2 + (xx - r) ** 2 <= r ** 2 + 1e-9


def total_variation(m: "torch.Tensor", beta: float) -> "torch.Tensor":
    """TV_beta of ``(H, W)``: mean over pixels of (dx^2 + dy^2)^(beta / 2)."""
    dx = m[:-1, 1:] - m[:-1, :-1]
    dy = m[1:, :-1] - m[:-1, :-1]
    return ((dx ** 2 + dy ** 2 + 1e-12) ** (beta / 2)).mean()


def misure(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None, target: int = 1, *,
           config: MiSuReConfig = MiSuReConfig(), geometry: dict[str, Any] | None = None
           ) -> Generator[Progress, None, "Explanation"]:
    """Generator form of MiSuRe: yields :class:`Progress`, returns an :class:`Explanation`.

    ``image``: ``(C, H, W)``; ``roi``: optional ``(H, W)`` bool limiting the explained object (and the Dice)
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
    image = check_image2d(model, image)
    h, w = image.shape[1:]
    scope = np.ones((h, w), bool) if roi is None else np.asarray(roi, bool)
    if scope.shape != (h, w):
        raise IncompatibleInputError(f"RoI shape {scope.shape} differs from the image's {(h, w)}")
    dev = model.device
    scope_t = torch.as_tensor(scope.ravel(), device=dev).nonzero()[:, 0]
    passes0 = model.forward_passes
    warnings_out: list[str] = []

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
        se = disk(cfg.kernel)
        for _ in range(cfg.max_dilations):
            masks.append(ndimage.binary_dilation(masks[-1], structure=se))
        found, stage1, evaluated = None, [], 0
        total = 1 + len(masks) + cfg.iterations + 1  # + the unperturbed and the final pass
        for start in range(0, len(masks), cfg.batch_size):
            chunk = torch.as_tensor(np.stack(masks[start:start + cfg.batch_size]), device=dev, dtype=torch.float32)
            with torch.inference_mode():
                p = class_probability(model.forward_normalized(x * chunk[:, None]), target)
            d = dice((p.reshape(len(chunk), -1)[:, scope_t] > cfg.threshold).float(), y0_t).cpu().numpy()
            stage1 += d.tolist()
            evaluated += len(chunk)
            yield Progress(1 + evaluated, total, "sufficient region")
            hits = np.nonzero(d > cfg.dice_threshold)[0]
            if len(hits):
                found = start + int(hits[0])
                stage1 = stage1[: found + 1]  # the batch may have evaluated further dilations
                break
        if found is None:
            found = len(masks) - 1
            warnings_out.append(f"stage 1 reached the cap of {cfg.max_dilations} dilations without Dice > "
                                f"{cfg.dice_threshold} (best {max(stage1):.3f}); the sufficient region is the "
                                "last dilation")
        sr = masks[found]
        total = 1 + evaluated + cfg.iterations + 1

        # stage 2: optimise a sparse, smooth mask inside the sufficient region
        sr_t = torch.as_tensor(sr, device=dev, dtype=torch.float32)
        init = torch.as_tensor(np.where(y0, 1.0, np.where(sr, 0.5, 0.0)), device=dev, dtype=torch.float32)
        param = F.interpolate(init[None, None], size=(cfg.param_size, cfg.param_size), mode="bilinear",
                              align_corners=False).clone().requires_grad_(True)
        opt = torch.optim.AdamW([param], lr=cfg.lr)
        n_sr = sr_t.sum().clamp(min=1)

        def mask_of(prm: "torch.Tensor") -> "torch.Tensor":
            up = F.interpolate(prm, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            return up.clamp(0, 1) * sr_t

        for it in range(cfg.iterations):
            # grad mode is thread-local: set it per step, never across a yield; gradients go to the mask
            # parameter only (autograd.grad), so the user's model parameters keep their .grad untouched
            with torch.inference_mode(False), torch.enable_grad():
                m = mask_of(param)
                p = class_probability(model.forward_normalized(x * m), target).reshape(-1)[scope_t]
                sd_cls = dice(p[None], y0_t)[0]
                sd_bg = dice(1 - p[None], 1 - y0_t)[0]
                loss = (cfg.l1 * m.abs().sum() / n_sr + cfg.tv * total_variation(m, cfg.tv_beta)
                        + 1 - (cfg.alpha_background * sd_bg + cfg.alpha_class * sd_cls))
                (param.grad,) = torch.autograd.grad(loss, [param])
            opt.step()
            if it % 5 == 4 or it == cfg.iterations - 1:
                yield Progress(1 + evaluated + it + 1, total, "minimal region")

        with torch.inference_mode():
            sal = mask_of(param.detach())
            sal = torch.where(sal < cfg.cutoff, torch.zeros_like(sal), sal)
            p_final = class_probability(model.forward_normalized(x * sal), target).reshape(-1)[scope_t]
            d_expl = float(dice((p_final[None] > cfg.threshold).float(), y0_t)[0])
        yield Progress(total, total, "done")
    sal_np = sal.cpu().numpy().astype(np.float32)
    n_obj = int(y0.sum())
    stats = {"dice_explained": d_expl, "perturbation_ratio": float((sal_np > 0).sum() / n_obj),
             "dilations": int(found), "stage1_dice": stage1, "sufficient_region_pixels": int(sr.sum()),
             "saliency_pixels": int((sal_np > 0).sum()), "object_pixels": n_obj,
             "forward_passes": model.forward_passes - passes0}
    params = asdict(cfg) | {"target_class": int(target), "scope": "roi" if roi is not None else "image"}
    devs = ["Masking X * M is applied to the model's normalised input.",
            "The sparsity term is the mean of |M| over the sufficient region (not the whole image).",
            "Constants where paper and code differ: lr 0.1 (paper; code 0.01); lambda, gamma, beta and alpha are "
            "this project's choices, listed in params."]
    if roi is not None:
        devs.append("Restricted to a RoI: the object is the predicted mask inside the RoI and Dice is computed "
                    "inside the RoI (the paper explains the whole predicted class).")
    return Explanation(method="misure", map=sal_np, roi=roi if roi is not None else None,
                       maps={"sufficient_region": sr.astype(np.uint8)}, stats=stats, params=params,
                       provenance=provenance(model, t_start, stats["forward_passes"], cfg.seed), deviations=devs,
                       geometry=dict(geometry or {}), warnings=warnings_out)


def explain_misure(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None, target: int = 1,
                   progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking MiSuRe; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`misure`."""
    return drive(misure(model, image, roi, target, **kwargs), progress, cancel)
