"""Data-parallel CPU inference: W threads, each running whole batches on single-threaded kernels.

On a small CPU PyTorch's intra-op threads scale poorly on a U-Net's convolutions and norms (2 cores: about
1.3x one core on the sample model), while W batches side by side, each on one core, scale almost linearly
(2 cores: 1.85x one core; 1.35-1.8x the best intra-op rate for 128x104 to 512x512 slices and 32^3 to 64^3
patches: ``benchmarks/bench_pdcr.py --quick`` measures it in every run). The :class:`~.engine.Engine` uses
it on the CPU for torch networks; CUDA keeps one stream, ONNX Runtime its own thread pool.

The intra-op thread count is process-wide in PyTorch, so it is set to 1 while any engine run is inside
:func:`single_threaded_kernels` and restored when the last one leaves. A side effect worth having: every CPU
run computes each batch on single-threaded kernels, so a map does not depend on the machine's core count or
on how many workers ran (the same seed gives the same map on 2 or 16 cores, for any batch size).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import SegmentationModel

#: most worker threads by default (each holds one batch in memory; set_speed(cpu_workers=N) overrides it)
MAX_AUTO_WORKERS = 8

_lock = threading.Lock()
_users = 0
_saved_threads: int | None = None


def _torch_threads() -> int:
    """The intra-op thread count torch would use outside the engine (the saved one while a run holds 1)."""
    import torch

    with _lock:
        return _saved_threads if _users and _saved_threads else torch.get_num_threads()


def cpu_workers(model: "SegmentationModel") -> int:
    """Worker threads for ``model``'s batches: its ``cpu_workers`` speed option if set (> 0), else torch's
    intra-op thread count (the cores; 1 when a dataset run pins torch to one thread), at most
    :data:`MAX_AUTO_WORKERS`; 1 on CUDA, for ONNX (its runtime has its own threads) and for non-torch networks."""
    import torch

    device = getattr(model, "device", None)
    if device is None or device.type != "cpu" or getattr(model, "is_onnx", False):
        return 1
    if not isinstance(getattr(model, "net", None), torch.nn.Module):
        return 1
    asked = int(getattr(model, "cpu_workers", 0) or 0)
    if asked > 0:
        return asked
    env = os.environ.get("SEG_EXPLAIN_CPU_WORKERS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(_torch_threads(), MAX_AUTO_WORKERS))


@contextmanager
def single_threaded_kernels() -> Iterator[None]:
    """Intra-op threads = 1 while inside (reference-counted across threads; restored by the last to leave)."""
    import torch

    global _users, _saved_threads
    with _lock:
        if _users == 0:
            _saved_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved_threads is not None:
                torch.set_num_threads(_saved_threads)
                _saved_threads = None


def split(start: int, items: int, workers: int, size: int) -> list[tuple[int, int]]:
    """``items`` items from ``start`` as up to ``workers`` chunks of at most ``size``, as even as possible (a
    short last group still keeps every worker busy)."""
    n_chunks = max(1, min(workers, items))  # at most ``size`` each when items <= workers * size
    base, extra = divmod(items, n_chunks)
    out, a = [], start
    for i in range(n_chunks):
        b = a + base + (1 if i < extra else 0)
        if b > a:
            out.append((a, b))
        a = b
    return out


def describe_workers(workers: int) -> dict[str, Any]:
    """What a result records about the CPU workers."""
    if workers <= 1:
        return {"cpu_workers": 1}
    return {"cpu_workers": workers, "cpu_kernels": "single-threaded (one batch per worker thread)"}
