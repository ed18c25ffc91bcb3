"""Real torch models whose explanation is known by construction.

``CueModel`` segments an object whose pixels it thresholds, shifted by a cue block far from the object
(bright cue -> more object; replacing it with dark tiles removes pixels: PdCR must mark it supporting,
negative ATE) and a suppressor block (bright suppressor -> less object; replacing it adds pixels: positive
ATE). Every other pixel is ignored by the model, so its ATE must be exactly 0. Cue, suppressor and
distractor have intensity 0.4, below the object threshold, so the model never segments them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

H = W = 64
OBJECT = (slice(8, 24), slice(8, 24))  # rows, cols of the object (also the RoI box 8 8 24 24)
CUE = (slice(48, 56), slice(48, 56))  # far from the object, block-aligned
SUPPRESSOR = (slice(48, 56), slice(0, 8))
DISTRACTOR = (slice(8, 24), slice(40, 48))  # bright but ignored by the model


class CueModel(nn.Module):
    """logit = gain * (x - 0.5) + cue_w * mean(cue) - supp_w * mean(suppressor); 1 or 2 output channels."""

    def __init__(self, two_class: bool = False, gain: float = 10.0, cue_w: float = 6.0, supp_w: float = 6.0):
        super().__init__()
        self.two_class = two_class
        self.register_buffer("w", torch.tensor([gain, cue_w, supp_w]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cue = x[:, :, CUE[0], CUE[1]].mean(dim=(1, 2, 3))[:, None, None, None]
        supp = x[:, :, SUPPRESSOR[0], SUPPRESSOR[1]].mean(dim=(1, 2, 3))[:, None, None, None]
        logit = self.w[0] * (x[:, :1] - 0.5) + self.w[1] * cue - self.w[2] * supp
        return torch.cat([torch.zeros_like(logit), logit], dim=1) if self.two_class else logit


def dark_pool_images(n: int = 6, seed: int = 1) -> list[np.ndarray]:
    """Pool images for the planted scenes: ``n`` dark (0-0.2) 40x40 noise images, reproducible."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 0.2, (1, 40, 40)).astype(np.float32) for _ in range(n)]


def cue_scene(object_value: float | None = None, context: float = 0.4) -> dict:
    """Image (1, 64, 64): object (a 0.3..0.9 ramp, or ``object_value``), cue, suppressor, distractor; label."""
    img = np.zeros((1, H, W), np.float32)
    ramp = np.linspace(0.3, 0.9, OBJECT[1].stop - OBJECT[1].start, dtype=np.float32)
    img[0, OBJECT[0], OBJECT[1]] = ramp[None, :] if object_value is None else object_value
    for region in (CUE, SUPPRESSOR, DISTRACTOR):
        img[0, region[0], region[1]] = context
    label = np.zeros((H, W), np.uint8)
    label[OBJECT] = 1
    return {"image": img, "label": label, "box": (8, 8, 24, 24)}


class ChannelModel(nn.Module):
    """Multi-contrast model: logit = sum_c weight_c * x_c - bias (channels with known weights)."""

    def __init__(self, weights=(2.0, 0.0, 1.0, 0.0), bias: float = 1.5):
        super().__init__()
        self.register_buffer("wc", torch.tensor(weights).view(1, -1, 1, 1))
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.wc).sum(dim=1, keepdim=True) - self.bias
