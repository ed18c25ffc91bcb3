"""Progress and cancellation for long work, kept out of any GUI.

Explainers are generators: they ``yield`` :class:`Progress` events often and ``return`` their result.
The CLI drives them with a progress bar, napari with a ``thread_worker`` (``worker.quit()`` stops the
generator at its next ``yield``), scripts with :func:`drive`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .errors import Cancelled

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event. ``done``/``total`` count forward passes (``total`` may be revised once)."""

    done: int
    total: int
    stage: str
    message: str = ""
    partial: np.ndarray | None = None  # the map so far, for streaming displays


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


def drive(gen: Generator[Progress, None, T], progress: ProgressCallback | None = None,
          cancel: CancelCheck | None = None) -> T:
    """Run an explainer generator to completion; ``cancel()`` returning True raises :class:`Cancelled`."""
    try:
        while True:
            event = next(gen)
            if progress is not None:
                progress(event)
            if cancel is not None and cancel():
                gen.close()
                raise Cancelled("cancelled by the caller")
    except StopIteration as stop:
        return stop.value
