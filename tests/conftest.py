"""Shared test set-up: tests/ on sys.path (known_models, sample_paths), torch on at most 2 threads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def test_device() -> str:
    """Device for the tests that take it: ``SEG_EXPLAIN_TEST_DEVICE`` (e.g. ``cuda`` in benchmarks/gpu_check.sh),
    else the CPU. Such tests skip when the device is not there."""
    dev = os.environ.get("SEG_EXPLAIN_TEST_DEVICE", "cpu")
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("SEG_EXPLAIN_TEST_DEVICE asks for CUDA and none is available")
    return dev
