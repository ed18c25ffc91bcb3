"""Runs the dock's long work in napari workers, and its GUI steps one event-loop turn at a time.

Long work (loading, segmenting, explaining) runs in a napari worker (``create_worker``); a job that is a
generator (a core explainer, driven with ``yield from``) stops at its next ``yield`` on ``worker.quit()``, so
Cancel acts within one forward batch. Worker signals arrive in the GUI thread; only those handlers touch
layers, and only while their worker is the current one and was not cancelled. Every error becomes a napari
notification (a :class:`~napari_seg_explain.core.errors.UserError` as its message, anything else with its
type, and its traceback in the log).

napari shows a notification collapsed to its first line, elided to about 290 pixels, until it is expanded. So
every notification of the dock goes through :func:`notice`: a first line of at most :data:`FIRST_LINE` characters,
broken after a clause (``:`` ``;`` ``,``) or else between words, the rest on the lines after it; the first line
shows whole and nothing is cut inside a word.

While a segmentation or explanation runs, the objects that existed before it are moved out of the garbage
collector's view (``gc.freeze``): a napari session holds around a million Python objects, and a full cyclic
collection, which a long job's allocations trigger at a random moment, would pause every thread for about
0.3 s (2 CPU cores). They are handed back (``gc.unfreeze``) when the worker finishes.

Results are shown in short steps (:meth:`Runner.queue_steps`): adding a layer, its first draw and its
colorbar's first draw each fall in an event-loop turn of their own, so the viewer never stalls.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer

from ...core.errors import UserError
from . import jobs

log = logging.getLogger(__name__)

FREEZE_GC_DURING_JOBS = True
#: jobs that can be cancelled (and freeze the garbage collector while they run)
LONG_JOBS = ("segment", "explain")
JOB_NAMES = {"load": "Loading the model", "segment": "Segmenting", "explain": "Explaining"}


#: characters of a notification's first line: napari's collapsed notification shows about 290 px of text
FIRST_LINE = 40
_CLAUSE_ENDS = (": ", "; ", ", ")


def notice(text: str, width: int = FIRST_LINE) -> str:
    """``text`` with a first line of at most ``width`` characters that ends between words (after the last clause
    that fits when there is one, else after the last word that fits); the rest follows on the next lines. A
    first word longer than ``width`` (a path) stays whole."""
    text = str(text).strip()
    first, sep, rest = text.partition("\n")
    first = " ".join(first.split())
    if len(first) <= width:
        return first + sep + rest
    cut = max((first.rfind(end, 0, width) + len(end) - 1 for end in _CLAUSE_ENDS if first.rfind(end, 0, width) > 0),
              default=-1)
    if cut < width // 3:  # no clause ends far enough in: between words
        cut = first.rfind(" ", 0, width + 1)
        if cut <= 0:
            cut = first.find(" ", width)
            if cut < 0:
                return first + sep + rest
    head, tail = first[:cut].rstrip(), first[cut:].strip()
    return head + "\n" + tail + (sep + rest if sep else "")


def notify_info(text: str) -> None:
    """A napari info notification through :func:`notice`."""
    from napari.utils.notifications import show_info

    show_info(notice(text))


def notify_warning(text: str) -> None:
    """A napari warning notification through :func:`notice`."""
    from napari.utils.notifications import show_warning

    show_warning(notice(text))


def error_text(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def notify_error(what: str, exc: BaseException) -> None:
    """Show ``exc`` as a napari error notification, ``<what>: <message>`` through :func:`notice` (and log the
    traceback of an unexpected error)."""
    from napari.utils.notifications import show_error

    if not isinstance(exc, UserError):
        log.error("%s failed:\n%s", what, "".join(traceback.format_exception(exc)))
    show_error(notice(f"{what}: {error_text(exc)}"))


_CLOSING_WORKER: Any = None


def closing_worker_class() -> Any:
    """A ``GeneratorWorker`` that closes its generator in the worker thread when it stops.

    After ``quit()`` superqt leaves the generator suspended; it would be closed later by the garbage
    collector in whatever thread, so a ``with torch.inference_mode()`` around a ``yield`` would leave that
    thread in inference mode (thread-local) and a later gradient method there could not compute gradients.
    """
    global _CLOSING_WORKER
    if _CLOSING_WORKER is None:
        from napari.qt.threading import GeneratorWorker

        class ClosingGeneratorWorker(GeneratorWorker):
            def work(self) -> Any:
                try:
                    return super().work()
                finally:
                    self._gen.close()

        _CLOSING_WORKER = ClosingGeneratorWorker
    return _CLOSING_WORKER


class Runner:
    """One worker at a time, plus a queue of GUI steps; ``on_state()`` is called whenever busy-ness changes."""

    def __init__(self, parent: QObject, on_state: Callable[[], None], timings: dict[str, float]) -> None:
        self.worker: Any = None
        self.job: str | None = None
        self.cancelled = False
        self.t_start = 0.0
        self.timings = timings
        self._on_state = on_state
        self._gc_frozen = False
        self.closed = False  # the dock was closed: nothing more reaches it (see shutdown)
        self._steps: list[Callable[[], Any]] = []
        self._step_timer = QTimer(parent)
        self._step_timer.setSingleShot(True)
        self._step_timer.setInterval(15)  # lets other events (and timers) run between steps
        self._step_timer.timeout.connect(self._run_step)

    @property
    def busy(self) -> bool:
        """A job runs, or its results are still being turned into layers."""
        return self.worker is not None or bool(self._steps)

    def current(self, worker: Any) -> bool:
        """``worker`` is the running one and was not cancelled: its events may still reach the viewer."""
        return self.worker is worker and worker is not None and not self.cancelled

    def start(self, job: str, func: Callable[..., Any], *args: Any, on_return: Callable[[Any], Any],
              on_yield: Callable[[Any], Any] | None = None,
              on_error: Callable[[BaseException], Any] | None = None) -> Any:
        """Start ``func(*args)`` in a worker; handlers run in the GUI thread while the worker is current."""
        from napari.qt.threading import create_worker

        if inspect.isgeneratorfunction(func):
            worker = create_worker(jobs.guarded, func, *args, _start_thread=False, _ignore_errors=True,
                                   _worker_class=closing_worker_class())
        else:
            worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True)
        self.worker, self.job = worker, job
        self.cancelled = False
        self.t_start = time.perf_counter()

        def guarded(handler: Callable[..., Any]) -> Callable[..., None]:
            def call(*a: Any) -> None:
                if not self.current(worker):
                    return
                try:
                    handler(*a)
                except Exception as exc:  # noqa: BLE001 - never lose an error in a slot
                    notify_error(f"{JOB_NAMES.get(job, job)} (showing the result)", exc)
            return call

        worker.returned.connect(guarded(on_return))
        if on_yield is not None and hasattr(worker, "yielded"):
            worker.yielded.connect(guarded(on_yield))
        worker.errored.connect(lambda exc: self._on_error(worker, job, exc, on_error))
        worker.finished.connect(lambda: self._on_finished(worker))
        self._on_state()
        if FREEZE_GC_DURING_JOBS and job in LONG_JOBS and not self._gc_frozen:
            gc.freeze()
            self._gc_frozen = True
        worker.start()
        return worker

    def _on_error(self, worker: Any, job: str, exc: BaseException,
                  on_error: Callable[[BaseException], Any] | None) -> None:
        if self.worker is worker:
            self.cancelled = True  # nothing more of this job reaches the viewer (e.g. a queued stream layer)
            if on_error is not None:
                on_error(exc)
        notify_error(JOB_NAMES.get(job, job), exc)

    def _on_finished(self, worker: Any) -> None:
        if self.worker is not worker:
            return
        if self._gc_frozen:
            gc.unfreeze()
            self._gc_frozen = False
        self.worker, self.job = None, None
        if not self.closed:
            self._on_state()

    def shutdown(self) -> None:
        """The dock is closed or removed, or its viewer closes: nothing more of the running job reaches the
        viewer or the dock (whose widgets may be deleted by then), a segmentation or explanation stops at its
        next step (a model load ends in the background), queued GUI steps are dropped."""
        self.closed = True
        self._steps.clear()
        self._step_timer.stop()
        if self.worker is not None:
            self.cancelled = True
            self.worker.quit()

    def reopen(self) -> None:
        """After a :meth:`shutdown` whose close was declined (the viewer stays open): the dock works again (the
        job that was running stays cancelled)."""
        self.closed = False
        if self.worker is None:
            self._on_state()

    def cancel(self) -> bool:
        """Stop the running segmentation/explanation at its next step; False when there is none."""
        if self.worker is None or self.job not in LONG_JOBS:
            return False
        self.cancelled = True
        self.worker.quit()
        return True

    # ------------------------------------------------------------------------------ GUI steps
    def queue_steps(self, steps: list[Callable[[], Any]]) -> None:
        """Run GUI steps one per event-loop turn; the runner counts as busy until they are done."""
        self._steps.extend(steps)
        if not self._step_timer.isActive():
            self._step_timer.start()

    def _run_step(self) -> None:
        if not self._steps:
            self._on_state()
            return
        step = self._steps.pop(0)
        t0 = time.perf_counter()
        try:
            step()
        except Exception as exc:  # noqa: BLE001
            self._steps.clear()
            notify_error("Showing the result", exc)
        self.timings["result_step_max_s"] = max(self.timings.get("result_step_max_s", 0.0),
                                                time.perf_counter() - t0)
        if self._steps:
            self._step_timer.start()
        else:
            self._on_state()
