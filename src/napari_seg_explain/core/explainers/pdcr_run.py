"""PdCR's batched stages for one or several RoIs: (coarse screening), screening, estimation (exact or adaptive).

Every stage packs (block, draw) pairs into the :class:`~napari_seg_explain.core.engine.Engine`'s batches; one
forward pass scores every RoI (:class:`~napari_seg_explain.core.score.RoIScore`), so K RoIs cost about one run.

* draws: a block's ``j``-th screening and estimation draws are functions of the seed and the block's place in
  the grid alone (:meth:`TilePool.draw_keyed`), so they never depend on which blocks a run screens, which
  passed, or how many RoIs share the run;
* several RoIs: a block is perturbed when it lies outside at least one RoI; for each RoI the blocks touching
  it are not evaluated (``invalid``: NaN in its map, never past its screening);
* screening: ``S`` draws per block; a block passes for RoI ``k`` when one of its ``|dDice_k| >= tau``;
* exact: all ``N`` draws of every block that passed for any RoI; adaptive: rounds of ``min_draws`` draws for
  all unsettled blocks together, the same draws in the same order (a prefix of the exact run's); each RoI's
  ATE of a block is taken at the round where the sequential test settles it for that RoI (see
  :func:`settled`) or at ``N``, and the block is drawn until every RoI it passed for is settled.

So each RoI's map equals, bit for bit on the CPU, a one-RoI run of that RoI with the same seed (exact and
adaptive; hierarchical screening screens coarse blocks for all RoIs together).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..perturb.grid import BlockGrid, block_index
from ..perturb.keyed_draws import COARSE_SCREENING, ESTIMATION, SCREENING
from ..progress import Progress

if TYPE_CHECKING:
    import torch

    from ..engine import Engine
    from ..perturb.pools import TilePool


@dataclass
class RunInfo:
    """What the stages measured, for the result's stats."""

    n_screened: int = 0
    screened: np.ndarray | None = None  # indices of the blocks screened one by one
    passed: "torch.Tensor | None" = None  # (R, n_cand) bool: passed screening per RoI
    n_active: int = 0  # blocks past screening for any RoI
    coarse_passes: int = 0
    screening_passes: int = 0
    estimation_passes: int = 0
    estimation_passes_exact: int = 0  # what exact mode would have spent on the same blocks
    draws_per_block: list[int] = field(default_factory=list)
    first_map_seconds: float | None = None
    screening_seconds: float = 0.0


def settled(mean: "torch.Tensor", se: "torch.Tensor", tau: float, z: float, rel_se: float, tol: float = 0.0
            ) -> "torch.Tensor":
    """The sequential test of adaptive N: is it settled whether ``|ATE| >= tau``, and is the ATE known?

    Irrelevant: ``|mean| + z se < tau``. Relevant: ``|mean| - z se > tau`` and ``se <= rel_se |mean|`` (the value,
    not only the side of tau, is known to ``rel_se``). Precise: ``z se <= tol`` Dice points (a block whose ATE
    lies within ``tol`` of tau can never be settled by the first two; it stops once known to +-``tol``).
    ``z`` is applied at every round (no correction for repeated looks; the default 2.58 is the two-sided 1 %
    quantile, to keep the repeated-look error small)."""
    a = mean.abs()
    return (a + z * se < tau) | ((a - z * se > tau) & (se <= rel_se * a)) | (z * se <= tol)


def run_stages(cfg: Any, grid: BlockGrid, coarse: BlockGrid | None, bound: "TilePool", engine: "Engine",
               x0p: "torch.Tensor", delta: Callable[["torch.Tensor"], "torch.Tensor"], invalid: np.ndarray,
               t_start: float) -> Generator[Progress, None, tuple["torch.Tensor", RunInfo]]:
    """Run the stages; ``invalid`` ``(R, nb)``: blocks not evaluated for RoI ``r`` (they touch it). Returns ATEs
    ``(R, nb)`` (0 = irrelevant, NaN = not evaluated) and :class:`RunInfo`. Partial maps: RoI 0."""
    import torch

    dev = x0p.device
    nb, S, N, tau = grid.n_blocks, cfg.screen, cfg.n, cfg.tau
    n_rois = len(invalid)
    bad = torch.as_tensor(np.asarray(invalid, bool).reshape(n_rois, nb))
    in_shape = (x0p.shape[1], *grid.shape)
    info = RunInfo()
    ate = torch.full((n_rois, nb), float("nan"), dtype=torch.float32)
    preview = torch.full((nb,), float("nan"), dtype=torch.float32)  # RoI 0's coarse map (cfg.preview)

    def show() -> np.ndarray:
        """RoI 0's map so far (estimated values, else the preview, else NaN); notes when it is first complete."""
        cur = torch.where(torch.isnan(ate[0]), preview, ate[0]) if cfg.preview else ate[0]
        cur = torch.where(bad[0], float("nan"), cur)
        if info.first_map_seconds is None and not bool(torch.isnan(cur[~bad[0]]).any()):
            info.first_map_seconds = time.perf_counter() - t_start
        return grid.paint(cur.numpy())

    def builder(g: BlockGrid, ids: "torch.Tensor", draws: "torch.Tensor"):
        corners = torch.as_tensor(g.corners, dtype=torch.long)

        def build(start: int, stop: int) -> "torch.Tensor":
            c = corners[ids[start:stop]].to(dev)
            xb = x0p.expand(len(c), *x0p.shape[1:]).clone()
            rows = torch.arange(len(c), device=dev).reshape([-1] + [1] * c.shape[1])
            crops = bound.crops(draws[start:stop], g.sizes)
            if cfg.contrast < 0:
                xb[(rows, slice(None)) + block_index(c, g.sizes)] = crops
            else:  # one contrast: the other channels keep their own block
                xb[(rows, cfg.contrast) + block_index(c, g.sizes)] = crops[..., cfg.contrast]
            return grid.crop(xb)
        return build

    def draws_for(g: BlockGrid, ids: "torch.Tensor", per_block: int, stream: int) -> "torch.Tensor":
        """Draws ``0..per_block-1`` of each block ``ids`` (in that order): ``(len(ids) * per_block, 1 + D)``."""
        rep = ids.repeat_interleave(per_block)
        index = torch.arange(per_block).repeat(len(ids))
        return bound.draw_keyed(cfg.seed, stream, torch.as_tensor(g.keys)[rep], index, g.sizes,
                                avoid=torch.as_tensor(g.corners, dtype=torch.long)[rep])

    def shade(values: "torch.Tensor") -> "torch.Tensor":
        return torch.where(values.abs() < tau, torch.zeros_like(values), values)

    done = 1
    upper = 1 + nb * (S + N)
    cand = torch.arange(nb)
    # stage 0 (hierarchical): screen blocks ``coarse_factor`` times the size; blocks inside irrelevant ones are 0
    if coarse is not None:
        f = np.array(coarse.sizes) // np.array(grid.sizes)
        ids0 = torch.arange(coarse.n_blocks).repeat_interleave(S)
        owner = torch.as_tensor(np.ravel_multi_index(tuple((grid.coords // f).T), coarse.grid_shape))
        cidx = {int(k): i for i, k in enumerate(np.ravel_multi_index(tuple(coarse.coords.T), coarse.grid_shape))}

        def coarse_preview(n_done: int, d: "torch.Tensor") -> np.ndarray:
            if cfg.preview and n_done == len(ids0):
                means = shade(d[:, 0].reshape(-1, S).mean(dim=1))
                at = torch.as_tensor([cidx.get(int(k), -1) for k in owner])
                preview[:] = torch.where(at >= 0, means[at.clamp(min=0)], preview)
            return show()

        draws0 = draws_for(coarse, torch.arange(coarse.n_blocks), S, COARSE_SCREENING)
        d0 = yield from engine.run(len(ids0), builder(coarse, ids0, draws0), delta,
                                   stage="screening coarse blocks", done0=done, total=upper + len(ids0),
                                   shape=in_shape, partial=coarse_preview)
        done += len(ids0)
        info.coarse_passes = len(ids0)
        relevant = np.zeros(coarse.grid_shape, bool)
        passed0 = (d0.reshape(-1, S, n_rois).abs() >= tau).any(dim=1).any(dim=1).numpy()
        relevant[tuple(coarse.coords[passed0].T)] = True
        relevant |= coarse.touching  # not screened as a whole: their blocks are screened one by one
        keep = relevant[tuple((grid.coords // f).T)]
        ate[:, torch.as_tensor(~keep)] = 0.0
        cand = torch.as_tensor(np.flatnonzero(keep), dtype=torch.long)

    # stage 1: screening with S draws per block
    ids1 = cand.repeat_interleave(S)
    info.n_screened = len(cand)
    info.screened = cand.numpy()

    def screened(n_done: int, d: "torch.Tensor") -> np.ndarray:
        k = n_done // S
        dd = d[: k * S].reshape(k, S, n_rois)
        passed = (dd.abs() >= tau).any(dim=1).T & ~bad[:, cand[:k]]  # (R, k)
        ate[:, cand[:k]] = torch.where(passed, float("nan"), 0.0)
        if cfg.preview:
            preview[cand[:k]] = torch.where(passed[0], shade(dd[:, :, 0].mean(dim=1)), 0.0)
        return show()

    draws1 = draws_for(grid, cand, S, SCREENING)
    d1 = yield from engine.run(len(ids1), builder(grid, ids1, draws1), delta, stage="screening",
                               done0=done, total=done + len(ids1) + len(cand) * N, shape=in_shape,
                               partial=screened)
    done += len(ids1)
    info.screening_passes = len(ids1)
    info.screening_seconds = time.perf_counter() - t_start
    passed = (d1.reshape(len(cand), S, n_rois).abs() >= tau).any(dim=1).T & ~bad[:, cand]  # (R, n_cand)
    info.passed = passed
    any_pass = passed.any(dim=0)
    active = cand[any_pass]
    act_rois = passed[:, any_pass]  # (R, n_active): which RoIs each active block passed for
    info.n_active = len(active)
    info.estimation_passes_exact = len(active) * N

    # the estimation draw table (n_active, N, ...)
    table = draws_for(grid, active, N, ESTIMATION)
    table = table.reshape(len(active), N, *table.shape[1:])

    def set_ate(rows: "torch.Tensor", means: "torch.Tensor") -> None:
        """Blocks ``active[rows]`` get their ATE ``means`` (R, len(rows)) where they passed, else stay 0."""
        ate[:, active[rows]] = torch.where(act_rois[:, rows], shade(means), torch.zeros_like(means))

    if not len(active):
        ate[torch.isnan(ate)] = 0.0
        ate[bad] = float("nan")
        yield Progress(done, done, "estimating", partial=show())
        return ate, info

    if not cfg.adaptive:  # stage 2: all N draws of every active block
        ids2 = active.repeat_interleave(N)
        flat = table.reshape(len(active) * N, *table.shape[2:])

        def finish(n_done: int, d: "torch.Tensor") -> np.ndarray:
            k = n_done // N
            # each RoI's rows reduced alone, contiguous, in float64: the same sums whatever the number of RoIs
            per_roi = d[: k * N].reshape(k, N, n_rois).permute(2, 0, 1).contiguous().double()
            set_ate(torch.arange(k), per_roi.mean(dim=2).float())
            return show()

        yield from engine.run(len(ids2), builder(grid, ids2, flat), delta, stage="estimating",
                              done0=done, total=done + len(ids2), shape=in_shape, partial=finish)
        info.estimation_passes = len(ids2)
        info.draws_per_block = [N] * len(active)
        ate[bad] = float("nan")
        return ate, info

    # adaptive stage 2: rounds of min_draws draws for every unsettled block, batched together; each RoI's ATE of
    # a block is fixed at the round its own test settles (as in its one-RoI run), the block drawn until all are
    n_act = len(active)
    count = torch.zeros(n_act, dtype=torch.long)
    s1 = torch.zeros((n_rois, n_act), dtype=torch.float64)
    s2 = torch.zeros((n_rois, n_act), dtype=torch.float64)
    open_ = act_rois.clone()  # (R, n_act): RoI r still waits for block i
    pending = torch.ones(n_act, dtype=torch.bool)
    step = max(1, min(cfg.min_draws, N))
    while bool(pending.any()):
        rows = torch.nonzero(pending).flatten()
        take = torch.clamp(N - count[rows], max=step)
        ids = active[rows].repeat_interleave(take)
        which = rows.repeat_interleave(take)
        j = count[which] + torch.arange(len(ids)) - (torch.cumsum(take, 0) - take).repeat_interleave(take)
        remaining = int((N - count[pending]).sum())
        d2 = yield from engine.run(len(ids), builder(grid, ids, table[which, j]), delta, stage="estimating",
                                   done0=done, total=done + remaining, shape=in_shape, partial=lambda k, d: show())
        done += len(ids)
        info.estimation_passes += len(ids)
        d2 = d2.double().T  # (R, n)
        s1.index_add_(1, which, d2)
        s2.index_add_(1, which, d2 * d2)
        count[rows] += take
        n = count[rows].double()
        mean = s1[:, rows] / n
        var = ((s2[:, rows] - n * mean * mean) / (n - 1).clamp(min=1)).clamp(min=0)
        se = (var / n).sqrt()
        now = open_[:, rows] & (settled(mean, se, tau, cfg.adaptive_z, cfg.adaptive_se, cfg.adaptive_tol)
                                | (count[rows] >= N)[None, :])  # (R, len(rows)): settled this round
        r_idx, c_idx = torch.nonzero(now, as_tuple=True)
        ate[r_idx, active[rows[c_idx]]] = shade(mean[r_idx, c_idx].float())
        open_[:, rows] &= ~now
        stop = ~open_[:, rows].any(dim=0) | (count[rows] >= N)
        pending[rows[stop]] = False
        yield Progress(done, done + int((N - count[pending]).sum()), "estimating", partial=show())
    ate[:, active] = torch.where(act_rois, ate[:, active], torch.zeros_like(ate[:, active]))
    ate[bad] = float("nan")
    info.draws_per_block = count.tolist()
    return ate, info
