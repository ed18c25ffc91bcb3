"""Shared fixtures: models whose true answer is known by construction, and small images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

import known_models  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def cue_scene():
    return known_models.cue_scene()


@pytest.fixture
def dark_pool_arrays():
    rng = np.random.default_rng(1)
    return [rng.uniform(0.0, 0.2, size=(1, 40, 40)).astype(np.float32) for _ in range(6)]


SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
