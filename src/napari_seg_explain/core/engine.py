"""The one batched runner every method uses: build batch -> forward -> score, with progress and cancel.

:class:`Engine` owns what is the same for every perturbation method, segmentation and MiSuRe's stage 1:
inference mode per batch (never held across a ``yield``: it is thread-local), forward-pass counting,
progress events after every batch (so a GUI cancels within one batch), CUDA out-of-memory back-off and
the batch size. ``batch_size=0`` is *auto*: on the CPU the first real batches are run at a few candidate
sizes and the fastest per image is kept (a small U-Net on 2 cores runs faster at 8-16 than at 64); on CUDA
it starts large and halves on out-of-memory. The choice is cached on the model per input shape and
recorded in each result (:meth:`Engine.describe`).

On the CPU a torch network runs data-parallel (``cpu_parallel.py``): each step is a *group* of up to W
batches (W = the cores, at most 8), built on the calling thread and run side by side by W worker threads
on single-threaded kernels; the batch size is per worker, timed per group.

Speed options live on the model (:meth:`SegmentationModel.set_speed`): ``amp`` (``True`` = the model's
``amp_dtype``, or ``"float16"`` / ``"bfloat16"``; CUDA autocast, off by default = exact mode),
``channels_last``, ``torch.compile`` with an eager fallback, pinned staging of host-built batches. Each is a
no-op on the CPU and :meth:`Engine.describe` records what was actually used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .cpu_parallel import cpu_workers, describe_workers, single_threaded_kernels, split
from .errors import OutOfMemory
from .progress import Progress

if TYPE_CHECKING:
    import torch

    from .models import SegmentationModel

#: batch sizes timed on the CPU (the first batch, at the smallest size, is a warm-up and not timed)
CPU_CANDIDATES = (4, 8, 16, 32, 64)
#: per-worker batch sizes timed when several CPU workers run side by side (larger images do best at 2)
PARALLEL_CANDIDATES = (2, 4, 8)
#: a CPU worker runs its batch as network calls of at most this many images: on single-threaded kernels
#: oneDNN picks other convolution kernels from 16 images on (1e-6 differences; batches of 2-12 agree bit for
#: bit), and a lone image is run beside a copy of itself (1 image: other kernels again), so every image of a
#: CPU run goes through the same kernels whatever the batch size: a seed gives the same map bit for bit
MAX_WORKER_CALL = 8
#: each candidate batch size is timed on this many steps, the fastest kept
SAMPLES_PER_SIZE = 2
#: a lone image is run beside a copy only up to this many values (a 2-D slice, a 3-D patch up to 160^3): a
#: whole-volume input is run alone rather than doubling its memory
MAX_PADDED_VALUES = 1 << 22
CUDA_START = 256
_LIMIT = threading.local()
T = TypeVar("T")
Build = Callable[[int, int], "torch.Tensor"]  # (start, stop) -> normalised batch (stop - start, C, *S)
Score = Callable[["torch.Tensor"], "torch.Tensor"]  # probabilities (B, K, *S) -> scores (B, ...)


@contextmanager
def batch_time_limit(seconds: float | None) -> Iterator[None]:
    """In this thread, automatic batch sizes keep one batch under ``seconds`` (a GUI cancels between batches)."""
    old = getattr(_LIMIT, "seconds", None)
    _LIMIT.seconds = seconds
    try:
        yield
    finally:
        _LIMIT.seconds = old


def with_batch_time_limit(gen: Generator[Any, None, T], seconds: float | None) -> Generator[Any, None, T]:
    """Run generator ``gen`` under :func:`batch_time_limit` (set in whatever thread drives it)."""
    with batch_time_limit(seconds):
        return (yield from gen)


class Engine:
    """Batched forward passes for one run. ``batch_size``: 0 = auto, else fixed (halved on CUDA OOM)."""

    def __init__(self, model: "SegmentationModel", batch_size: int = 0, *, amp: bool | str = False,
                 max_batch_seconds: float | None = None) -> None:
        if int(batch_size) < 0:
            from .errors import UserError

            raise UserError(f"batch size must be >= 1, or 0 for automatic (got {batch_size})")
        self.model = model
        self.fixed = int(batch_size) or None
        self.amp = amp
        self.max_batch_seconds = max_batch_seconds if max_batch_seconds is not None else getattr(_LIMIT, "seconds",
                                                                                                   None)
        self.timings: dict[int, float] = {}  # batch size -> seconds per image
        self.size: int | None = self.fixed
        self._pending: list[int] = []
        self._warm = False
        self._samples: dict[int, list[float]] = {}
        self._shape: tuple[int, ...] | None = None
        self.workers = cpu_workers(model)

    # ---------------------------------------------------------------------------------- sizing
    def _start_sizing(self, shape: tuple[int, ...]) -> None:
        self._shape = shape
        self._samples = {}
        if self.fixed:
            return
        cache = self.model.batch_sizes
        if self._key in cache:
            self.size = cache[self._key]
        elif self.model.device.type == "cuda":
            self.size = CUDA_START
        else:
            self._pending = list(PARALLEL_CANDIDATES if self.workers > 1 else CPU_CANDIDATES)

    @property
    def _key(self) -> tuple:
        return (*(self._shape or ()), self.max_batch_seconds, self.workers)

    def _next(self, remaining: int) -> int:
        if self._pending and self.timings and self.max_batch_seconds is not None:
            if self._pending[0] * self.workers * min(self.timings.values()) > self.max_batch_seconds:
                self._pending.clear()  # the next candidate's group would take too long
                self._choose()
        if self._pending:
            return max(1, min(remaining, self._pending[0]))
        return max(1, min(remaining, self.size or CPU_CANDIDATES[2]))

    def _record(self, size: int, seconds: float) -> None:
        if not self._pending or size != self._pending[0]:
            return
        if not self._warm:  # first batch: one-off costs (allocations, kernels) are not the model's rate
            self._warm = True
            return
        samples = self._samples.setdefault(size, [])
        samples.append(seconds / size)
        over = self.max_batch_seconds is not None and seconds * self.workers > self.max_batch_seconds
        if len(samples) < SAMPLES_PER_SIZE and not over:
            return  # a short group is timed twice: the faster counts (one timing of a few ms is noise)
        self._pending.pop(0)
        self.timings[size] = min(samples)
        if self.max_batch_seconds is not None and seconds * self.workers > self.max_batch_seconds:
            self._pending.clear()
        if not self._pending:
            self._choose()

    def _choose(self) -> None:
        """Keep the fastest size per image among those whose group (a batch per worker) stays under the time
        limit (what a cancel waits for)."""
        ok = {s: t for s, t in self.timings.items()
              if self.max_batch_seconds is None or s * t * self.workers <= self.max_batch_seconds}
        ok = ok or {min(self.timings): self.timings[min(self.timings)]}
        self.size = min(ok, key=ok.get)
        self.model.batch_sizes[self._key] = self.size

    def describe(self) -> dict[str, Any]:
        """What the result records: the mode, the size used, the per-image times measured (ms) and the speed
        options as used on this device (amp dtype, channels_last, compile, pinned memory; CPU: off)."""
        info = getattr(self.model, "speed_info", None)
        return {"batch_size": self.size, "batch_mode": "fixed" if self.fixed else "auto",
                "batch_time_limit_s": self.max_batch_seconds,
                "batch_timings_ms_per_image": {str(k): round(1000 * v, 3) for k, v in self.timings.items()},
                **describe_workers(self.workers),
                **({"speed": info(self.amp)} if callable(info) else {})}

    # ---------------------------------------------------------------------------------- running
    def run(self, n: int, build: Build, score: Score, *, stage: str = "", done0: int = 0, total: int | None = None,
            shape: tuple[int, ...] | None = None, partial: Callable[[int, "torch.Tensor"], Any] | None = None,
            until: Callable[["torch.Tensor", int], bool] | None = None
            ) -> Generator[Progress, None, "torch.Tensor"]:
        """Score ``n`` items in batches; yields :class:`Progress` per batch, returns ``(n, ...)`` scores on the CPU.

        ``shape``: the per-item input shape (the key of the cached batch size); ``partial(done, scores)``: the
        map so far for streaming; ``until(scores, done)``: stop early (items after ``done`` stay NaN).
        """
        import torch

        total = done0 + n if total is None else total
        if self._shape != shape or (self.size is None and not self._pending):
            self._start_sizing(tuple(shape or ()))
        out: torch.Tensor | None = None
        start = 0
        with ExitStack() as stack:
            pool = None
            if self.workers > 1 and n > 1:  # one image in all (a slice, a whole volume): every core on it
                stack.enter_context(single_threaded_kernels())
                pool = stack.enter_context(ThreadPoolExecutor(self.workers, thread_name_prefix="seg-explain-cpu"))
            while start < n:
                size = self._next(n - start)
                if self.fixed:  # a fixed batch size is the images per step, shared by the workers
                    chunks = split(start, size, self.workers, -(-size // self.workers))
                else:
                    chunks = split(start, min(n - start, size * self.workers), self.workers, size)
                stop = chunks[-1][1]
                t0 = time.perf_counter()
                try:
                    parts = self._forward(chunks, build, score, pool)
                except OutOfMemory:
                    if size == 1:
                        raise
                    self._pending.clear()
                    self.size = max(1, size // 2)
                    self.model.batch_sizes[self._key] = self.size
                    continue
                if chunks[0][1] - chunks[0][0] == size:  # time per image of a full group
                    self._record(size, (time.perf_counter() - t0) * size / (stop - start))
                if out is None:
                    out = torch.full((n, *parts[0].shape[1:]), float("nan"), dtype=torch.float32)
                out[start:stop] = torch.cat(parts)
                start = stop
                stop_now = until is not None and until(out, stop)
                yield Progress(done0 + stop, total, stage, partial=partial(stop, out) if partial else None)
                if stop_now:
                    break
        if self._pending and self.timings:  # the work ran out before every candidate was timed
            self._pending.clear()
            self._choose()
        if out is None:
            out = torch.empty((0,), dtype=torch.float32)
        return out

    def _forward(self, chunks: list[tuple[int, int]], build: Build, score: Score,
                 pool: ThreadPoolExecutor | None) -> list["torch.Tensor"]:
        """Scores of each chunk on the CPU: built here (in order: draws stay reproducible), run on the workers."""
        import torch

        pad = (self.model.device.type == "cpu" and not getattr(self.model, "is_onnx", False)
               and not getattr(self.model, "per_sample", False))
        # single-threaded kernels (workers side by side, or torch on one thread: a one-core machine, a dataset
        # run's worker): calls of at most MAX_WORKER_CALL, so the kernels, and the map, never depend on the size
        one_thread = self.workers > 1 or (pad and torch.get_num_threads() == 1)
        cap = MAX_WORKER_CALL if one_thread else max(b - a for a, b in chunks)

        def call(x: "torch.Tensor") -> "torch.Tensor":
            if pad and len(x) == 1 and x.numel() <= MAX_PADDED_VALUES:  # beside a copy: a batch's kernels
                try:
                    return self.model.forward_normalized(torch.cat([x, x]), amp=self.amp, count=1)[:1]
                except Exception:  # noqa: BLE001 - a model that takes one image only (or two do not fit): alone
                    pass
            return self.model.forward_normalized(x, amp=self.amp)

        def work(x: "torch.Tensor") -> "torch.Tensor":
            with torch.inference_mode():  # thread-local: entered in the worker itself
                return torch.cat([score(call(p)).float().cpu() for p in x.split(cap)])

        with torch.inference_mode():
            batches = [build(a, b) for a, b in chunks]
        if pool is None or len(batches) == 1:
            return [work(x) for x in batches]
        return list(pool.map(work, batches))
