"""The RoI score every perturbation method measures: Dice of the model's prediction inside RoIs.

Reference: a ground-truth label (hard Dice of the prediction binarised at ``threshold``: the PdCR paper's
setting) or, without a label, the model's own unperturbed prediction (soft Dice on probabilities, so both
directions of change exist). Several RoIs, each with its own class and reference, are scored from one
forward pass: ``(B, K, *S)`` probabilities -> ``(B, R)`` Dice points (x100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import IncompatibleInputError, UserError
from .metrics import dice

if TYPE_CHECKING:
    import torch

METRIC_LABEL = "dice_vs_label"
METRIC_OWN = "soft_dice_vs_own_prediction"
METRIC_OWN_HARD = "dice_vs_own_prediction"
METRIC_LABEL_SOFT = "soft_dice_vs_label"


class RoIScore:
    """Dice (points) of class ``targets[r]`` inside ``rois[r]``; call :meth:`prepare` with the unperturbed output.

    ``rois``: one bool mask of shape ``S`` or a sequence of them; ``targets``: one class or one per RoI;
    ``labels``: None, one array of shape ``S`` (non-zero = the class) or one per RoI (None entries allowed);
    ``names``: how errors name the RoIs when there are several (default "RoI k of K").
    """

    def __init__(self, rois: np.ndarray | Sequence[np.ndarray], targets: int | Sequence[int] = 1, *,
                 labels: np.ndarray | Sequence[np.ndarray | None] | None = None, threshold: float = 0.5,
                 hard: bool | None = None, names: Sequence[str] | None = None) -> None:
        self.rois = [np.asarray(rois, bool)] if isinstance(rois, np.ndarray) else [np.asarray(r, bool) for r in rois]
        r = len(self.rois)
        self.targets = [int(targets)] * r if np.isscalar(targets) else [int(t) for t in targets]
        if labels is None or isinstance(labels, np.ndarray):
            self.labels = [labels] * r
        else:
            self.labels = list(labels)
        if not (len(self.targets) == len(self.labels) == r):
            raise ValueError("rois, targets and labels must have one entry per RoI")
        shape = self.rois[0].shape
        for i, (m, lab) in enumerate(zip(self.rois, self.labels)):
            if m.shape != shape:
                raise IncompatibleInputError(f"RoI {i} has shape {m.shape}, RoI 0 {shape}")
            if lab is not None and np.asarray(lab).shape != shape:
                raise IncompatibleInputError(f"label shape {np.asarray(lab).shape} differs from the image's {shape}")
        self.names = list(names) if names is not None else [f"RoI {i + 1} of {r}" for i in range(r)]
        self.threshold = float(threshold)
        # hard Dice vs a label, soft Dice vs the own prediction; ``hard`` forces one or the other for every RoI
        self.hard = [lab is not None if hard is None else bool(hard) for lab in self.labels]
        self.metrics = [(METRIC_LABEL if lab is not None else METRIC_OWN_HARD) if h else
                        (METRIC_LABEL_SOFT if lab is not None else METRIC_OWN) for lab, h in zip(self.labels, self.hard)]
        self._prepared = False

    @property
    def metric(self) -> str:
        return self.metrics[0]

    def prepare(self, probs0: "torch.Tensor") -> "torch.Tensor":
        """Fix the references from the unperturbed probabilities ``(1, K, *S)``; returns M0 ``(R,)`` (points)."""
        import torch

        dev = probs0.device
        union = np.logical_or.reduce(self.rois)
        self._idx = torch.as_tensor(np.flatnonzero(union), device=dev)
        # each RoI's own pixels, as positions in the union (ascending: the order of a one-RoI run), padded to the
        # largest RoI with a position past the union that reads 0; scoring runs on (B, R, largest RoI) only
        own = [np.flatnonzero(m.ravel()[union.ravel()]) for m in self.rois]
        n = max(len(o) for o in own)
        pos = np.full((len(own), n), int(union.sum()), np.int64)
        for i, o in enumerate(own):
            pos[i, :len(o)] = o
        self._pos = torch.as_tensor(pos, device=dev)
        self._member = (self._pos < int(union.sum())).float()  # (R, n)
        self._lengths = [len(o) for o in own]
        p0 = self._class_probs(probs0)[0]  # (R, n)
        refs = []
        for i, lab in enumerate(self.labels):
            if lab is not None:
                ext = np.append(np.asarray(lab).ravel()[union.ravel()] != 0, False)
                ref = torch.as_tensor(ext[pos[i]], device=dev).float()
            else:
                ref = (p0[i] > self.threshold).float()
            ref = ref * self._member[i]
            if ref.sum() == 0:
                whose = "the label has" if lab is not None else "the model predicts"
                which = f"{self.names[i]}: " if len(self.rois) > 1 else ""
                raise UserError(f"{which}{whose} no pixel of class {self.targets[i]} inside the RoI, so its Dice is 0 "
                                "whatever is perturbed: draw the RoI over the structure to explain (or pick another "
                                "class)")
            refs.append(ref)
        self._ref = torch.stack(refs)
        self._hard = torch.tensor(self.hard, device=dev)
        self._prepared = True
        return self(probs0)[0]

    def _class_probs(self, probs: "torch.Tensor") -> "torch.Tensor":
        """``(B, R, n)``: each RoI's class probability on its own pixels (0 past its end)."""
        import torch

        from .models import class_probability

        b = len(probs)
        once = {}
        for t in set(self.targets):
            flat = class_probability(probs, t).reshape(b, -1)[:, self._idx]
            once[t] = torch.cat([flat, flat.new_zeros(b, 1)], dim=1)  # position U reads 0
        if len(once) == 1:  # every RoI on one class (the usual case): one gather
            return next(iter(once.values()))[:, self._pos]
        return torch.stack([once[t][:, self._pos[i]] for i, t in enumerate(self.targets)], dim=1)

    def __call__(self, probs: "torch.Tensor") -> "torch.Tensor":
        """``(B, K, *S)`` probabilities -> ``(B, R)`` Dice points."""
        if not self._prepared:
            raise RuntimeError("RoIScore.prepare() must be called with the unperturbed output first")
        import torch

        p = self._class_probs(probs)
        p = p.where(~self._hard[None, :, None], (p > self.threshold).float())
        if len(self._lengths) == 1:
            return 100 * dice(p, self._ref[None])
        # each RoI reduced over its own pixels alone, as a (B, 1, n_r) block: the same float sums as a one-RoI
        # run (a vectorised sum over a padded length groups the terms differently: last-bit differences)
        return torch.cat([100 * dice(p[:, i:i + 1, :n].contiguous(), self._ref[None, i:i + 1, :n])
                          for i, n in enumerate(self._lengths)], dim=1)

