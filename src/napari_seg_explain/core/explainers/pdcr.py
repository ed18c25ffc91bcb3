"""PdCR: perturbation-driven causal reasoning (Jiang et al. 2026; authors' code lcmmai/PdCR).

Each ``patch x patch`` block outside the RoI is replaced by random crops of other images; the average
change of the RoI Dice over the draws (ATE, in Dice points) is the block's causal effect:
negative = the block supports the RoI segmentation (red), positive = it works against it (blue),
0 = irrelevant. Screening: ``screen`` draws; a block whose every ``|dDice| < tau`` is irrelevant.
Otherwise ``n`` fresh draws give the ATE, set to 0 when ``|ATE| < tau``.

Unlike the authors' block-by-block loop, many (block, draw) pairs are packed into each forward batch and
every perturbed image is built on the model's device.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IncompatibleInputError, UserError
from ..metrics import dice, effect_shares
from ..progress import Progress, drive
from ..rois import blocks_touching
from .common import check_image2d, provenance

if TYPE_CHECKING:
    import torch

    from ..models import SegmentationModel
    from ..perturbations import TilePool
    from ..results import Explanation



@dataclass(frozen=True)
class PdCRConfig:
    """PdCR parameters; defaults are the paper's (S = 3, tau = 0.02 Dice points, N = 50, 8x8 blocks)."""

    patch: int = 8
    screen: int = 3
    tau: float = 0.02
    n: int = 50
    threshold: float = 0.5  # predictions binarised at 0.5 (authors' code)
    seed: int = 0
    batch_size: int = 64
    amp: bool = False  # opt-in mixed precision on CUDA (exact mode: off)

    def __post_init__(self) -> None:
        for name in ("patch", "screen", "n", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"PdCR parameter {name} must be >= 1 (got {getattr(self, name)})")
        if not (self.tau >= 0 and np.isfinite(self.tau)):
            raise UserError(f"PdCR parameter tau must be a number >= 0 (got {self.tau})")
        if not 0 < self.threshold < 1:
            raise UserError(f"PdCR parameter threshold must be in (0, 1) (got {self.threshold})")


DEVIATIONS_ALWAYS = [
    "Many (block, draw) pairs are evaluated per forward batch instead of one block at a time "
    "(same estimator, same draws distribution).",
    "Replacement crops are drawn at random positions of whole pool images on the fly (the authors pre-cut "
    "1,000 tiles); crops are taken in the model's normalised intensity space.",
    "Pixels not evaluated (the RoI and blocks touching it) are NaN, not 0.",
]
PARTIAL_BLOCKS = ("The image size is not a multiple of the patch: the narrower blocks on the right/bottom edge "
                  "are evaluated too (the authors' grid stops at the last whole block).")


def pdcr(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1, *,
         pool: "TilePool | None" = None, label: np.ndarray | None = None,
         config: PdCRConfig = PdCRConfig(), geometry: dict[str, Any] | None = None
         ) -> Generator[Progress, None, "Explanation"]:
    """Generator form of PdCR: yields :class:`Progress`, returns an :class:`Explanation`.

    ``image``: ``(C, H, W)`` raw intensities; ``roi``: ``(H, W)`` bool; ``target``: class index;
    ``pool``: replacement source (default: the image itself outside the block, with a warning);
    ``label``: ``(H, W)`` ground truth whose non-zero pixels are the class (paper setting: hard Dice vs
    the label); without it, soft Dice vs the model's own unperturbed prediction.
    """
    import torch

    from ..models import class_probability
    from ..perturbations import pool_from_image_itself
    from ..results import Explanation

    t_start = time.perf_counter()
    cfg = config
    image = check_image2d(model, image)
    h, w = image.shape[1:]
    roi = np.asarray(roi, bool)
    if roi.shape != (h, w):
        raise IncompatibleInputError(f"RoI shape {roi.shape} differs from the image's {(h, w)}")
    if label is not None and np.asarray(label).shape != (h, w):
        raise IncompatibleInputError(f"label shape {np.asarray(label).shape} differs from the image's {(h, w)}")
    warnings_out: list[str] = []
    if pool is None:
        import warnings as _w

        with _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always")
            pool = pool_from_image_itself(model, image, cfg.patch)
        warnings_out += [str(c.message) for c in caught]
    if pool.images.shape[1] != image.shape[0]:
        raise IncompatibleInputError(f"pool images have {pool.images.shape[1]} channels, the image {image.shape[0]}")

    dev = model.device
    b = cfg.patch
    roi_t = torch.as_tensor(roi.ravel(), device=dev).nonzero()[:, 0]
    passes0 = model.forward_passes

    def forward(x: "torch.Tensor") -> "torch.Tensor":
        """Class probabilities, flattened to the RoI pixels. Inference mode is entered per call and never held
        across a ``yield``: it is thread-local, and a paused or abandoned generator must not leave it on."""
        with torch.inference_mode():
            return class_probability(model.forward_normalized(x, amp=cfg.amp), target).reshape(len(x), -1)[:, roi_t]

    with model.eval_mode():
        with torch.no_grad():
            x0 = model.normalize(torch.as_tensor(image)[None])
        p0 = forward(x0)
        if label is not None:
            ref = torch.as_tensor(np.asarray(label).ravel() != 0, device=dev)[roi_t].float()
            metric = "dice_vs_label"

            def score(p: "torch.Tensor") -> "torch.Tensor":
                return 100 * dice((p > cfg.threshold).float(), ref)
        else:
            ref = (p0[0] > cfg.threshold).float()
            metric = "soft_dice_vs_own_prediction"

            def score(p: "torch.Tensor") -> "torch.Tensor":
                return 100 * dice(p, ref)
        if ref.sum() == 0:
            whose = "the label has" if label is not None else "the model predicts"
            raise UserError(f"{whose} no pixel of class {target} inside the RoI, so its Dice is 0 whatever is "
                            "perturbed: draw the RoI over the structure to explain (or pick another class)")
        m0 = float(score(p0)[0])

        # block grid: padded so partial edge blocks are whole blocks in padded coordinates
        touching = blocks_touching(roi, b)
        ny, nx = touching.shape
        by, bx = np.nonzero(~touching)
        corners = torch.as_tensor(np.stack([by * b, bx * b], axis=1), dtype=torch.long)
        nb = len(corners)
        x0p = torch.nn.functional.pad(x0, (0, nx * b - w, 0, ny * b - h))
        gen = torch.Generator().manual_seed(cfg.seed)
        ar = torch.arange(b, device=dev)

        def deltas(block_ids: "torch.Tensor", draws: "torch.Tensor", stage: str, done0: int, total: int,
                   partial_fn=None) -> Generator[Progress, None, "torch.Tensor"]:
            """dDice for each (block, draw) pair, in batches; yields progress (and a partial map) per batch."""
            out = torch.empty(len(block_ids), dtype=torch.float32)
            for start in range(0, len(block_ids), cfg.batch_size):
                sl = slice(start, min(len(block_ids), start + cfg.batch_size))
                c = corners[block_ids[sl]].to(dev)
                xb = x0p.expand(c.shape[0], -1, -1, -1).clone()
                rows = (c[:, 0:1] + ar)[:, :, None]
                cols = (c[:, 1:2] + ar)[:, None, :]
                xb[torch.arange(c.shape[0], device=dev)[:, None, None], :, rows, cols] = pool.crops(draws[sl], b)
                out[sl] = (score(forward(xb[:, :, :h, :w])) - m0).float().cpu()
                partial = partial_fn(sl.stop, out) if partial_fn else None
                yield Progress(1 + done0 + sl.stop, 1 + total, stage, partial=partial)  # 1: unperturbed pass
            return out

        # stage 1: screening with S draws per block
        ids1 = torch.arange(nb).repeat_interleave(cfg.screen)
        draws1 = pool.draw(len(ids1), b, gen, avoid=corners[ids1])
        total = nb * cfg.screen
        # the map so far: 0 for blocks found irrelevant, NaN for blocks not (yet) estimated
        ate = torch.full((nb,), float("nan"), dtype=torch.float32)

        def screened(n_done: int, d: "torch.Tensor") -> np.ndarray:
            k = n_done // cfg.screen
            passed = (d[: k * cfg.screen].reshape(k, cfg.screen).abs() >= cfg.tau).any(dim=1)
            ate[:k] = torch.where(passed, float("nan"), 0.0)
            return _paint(touching, b, by, bx, ate.numpy(), h, w)

        d1 = yield from deltas(ids1, draws1, "screening", 0, total, screened)
        active = (d1.reshape(nb, cfg.screen).abs() >= cfg.tau).any(dim=1).nonzero()[:, 0]

        # stage 2: N fresh draws for each block that passed screening
        total = nb * cfg.screen + len(active) * cfg.n
        ids2 = active.repeat_interleave(cfg.n)
        draws2 = pool.draw(len(ids2), b, gen, avoid=corners[ids2])

        def finish(n_done: int, d: "torch.Tensor") -> np.ndarray:
            """Set the ATE of blocks whose N draws are all done; return the map so far (NaN: still to come)."""
            k = n_done // cfg.n
            means = d[: k * cfg.n].reshape(k, cfg.n).mean(dim=1)
            ate[active[:k]] = torch.where(means.abs() < cfg.tau, torch.zeros_like(means), means)
            return _paint(touching, b, by, bx, ate.numpy(), h, w)

        if len(ids2):
            yield from deltas(ids2, draws2, "estimating", nb * cfg.screen, total, finish)
        else:
            yield Progress(1 + total, 1 + total, "estimating", partial=_paint(touching, b, by, bx, ate.numpy(), h, w))

    ate_np = ate.numpy()
    amap = _paint(touching, b, by, bx, ate_np, h, w)
    stats = {"M0": m0, "metric": metric, "n_blocks": nb, "n_blocks_screened_in": int(len(active)),
             "min_ate": float(ate_np.min()) if nb else 0.0, "max_ate": float(ate_np.max()) if nb else 0.0,
             **effect_shares(ate_np), "histogram": _histogram(ate_np, cfg.tau),
             "forward_passes": model.forward_passes - passes0}
    devs = list(DEVIATIONS_ALWAYS)
    if h % b or w % b:
        devs.append(PARTIAL_BLOCKS)
    if label is None:
        devs.append("No ground-truth label: the RoI reference is the model's own unperturbed prediction and the "
                    "metric is soft Dice on probabilities (the paper uses hard Dice against the label).")
    if pool.avoid_self_overlap:
        devs.append("Replacement crops come from the explained image itself (no other images were given).")
    params = asdict(cfg) | {"target_class": int(target), "pool": pool.describe(), "metric": metric}
    prov = provenance(model, t_start, stats["forward_passes"], cfg.seed)
    return Explanation(method="pdcr", map=amap, roi=roi, stats=stats, params=params, provenance=prov,
                       deviations=devs, geometry=dict(geometry or {}), warnings=warnings_out)


def explain_pdcr(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray, target: int = 1,
                 progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking PdCR; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`pdcr`."""
    return drive(pdcr(model, image, roi, target, **kwargs), progress, cancel)


def _paint(touching: np.ndarray, b: int, by: np.ndarray, bx: np.ndarray, values: np.ndarray,
           h: int, w: int) -> np.ndarray:
    """Block values -> ``(h, w)`` pixel map (NaN on blocks that touch the RoI), vectorised over the grid."""
    grid = np.full(touching.shape, np.nan, np.float32)
    grid[by, bx] = values
    return np.ascontiguousarray(np.repeat(np.repeat(grid, b, axis=0), b, axis=1)[:h, :w])


def _histogram(values: np.ndarray, tau: float) -> dict[str, int]:
    """Blocks per ATE range with the authors' bin edges (-3, -1, -0.3, -tau | tau, 0.3, 1, 3); zeros apart."""
    v = np.asarray(values, dtype=float)
    neg = [e for e in (-np.inf, -3.0, -1.0, -0.3) if e < -tau] + [-tau]
    pos = [tau] + [e for e in (0.3, 1.0, 3.0) if e > tau] + [np.inf]
    out = {"0 (irrelevant)": int((v == 0).sum())}
    for edges, part in ((neg, v[v < 0]), (pos, v[v > 0])):
        counts, _ = np.histogram(part, bins=edges)
        out |= {f"{lo:g}..{hi:g}": int(c) for lo, hi, c in zip(edges[:-1], edges[1:], counts)}
    return out
