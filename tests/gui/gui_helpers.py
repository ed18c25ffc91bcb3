"""Helpers for the viewer tests (constants, a small volume, rectangles, waiting, the sample scan)."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer

import known_models  # noqa: F401  (tests/ is on sys.path, see tests/conftest.py)

N_SLICES = 9
Z = 4  # the slice the tests explain
SCALE = (2.0, 0.5, 0.5)
TRANSLATE = (10.0, -3.0, 4.0)
CARD = """name: cue-model
in_channels: 1
classes: [background, object]
output_activation: softmax
normalization: none
"""


class SlowCue(known_models.CueModel):
    """CueModel that takes 15 ms per forward call: long enough runs to cancel and to watch streaming."""

    def forward(self, x):  # noqa: D102
        time.sleep(0.015)
        return super().forward(x)


class PixelCost(known_models.CueModel):
    """CueModel whose forward call takes time in proportion to the pixels it gets, like a convolutional
    network: 4 ms per 128x128 image, 64 ms per 512x512 image."""

    def forward(self, x):  # noqa: D102
        time.sleep(x.shape[0] * x.shape[-2] * x.shape[-1] * 4e-3 / (128 * 128))
        return super().forward(x)


def cue_volume() -> np.ndarray:
    """(slices, rows, cols) float32 stack of the cue scene with slice-dependent object brightness."""
    scene = known_models.cue_scene()["image"][0]
    vol = np.stack([scene * (0.9 + 0.02 * k) for k in range(N_SLICES)]).astype(np.float32)
    return np.clip(vol, 0, 1)


def add_rect(viewer, y0: int, x0: int, y1: int, x1: int, z: int | None = Z, name: str = "RoI", image=None):
    """A rectangle covering pixels y0..y1-1, x0..x1-1 (edges on pixel borders) on slice z."""
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) - 0.5
    if z is not None:
        corners = np.column_stack([np.full(4, float(z)), corners])
    kw = {}
    if image is not None:
        kw = {"scale": image.scale, "translate": image.translate, "units": image.units,
              "axis_labels": image.axis_labels}
    return viewer.add_shapes([corners], shape_type="rectangle", name=name, edge_color="lime",
                             face_color="transparent", **kw)


def wait_idle(qtbot, widget, timeout: int = 30000) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def sample_scan_layer_data():
    """The sample scan exactly as File > Open Sample gives it (the plugin's reader and sample contribution)."""
    from napari_seg_explain.napari.sample_data import sample_scan

    (data, kwargs, kind), = sample_scan()
    assert kind == "image"
    return data, kwargs


SELF_POOL = "The image itself (fallback, not the paper's setting)"


def configure_pdcr(widget, n=4, screen=1, batch=0, patch=8, pool=SELF_POOL) -> None:
    """PdCR chosen in the dock with small N and S (fast tests), the given batch size, block size and pool."""
    widget.set_method("pdcr")
    widget.param("patch").setValue(patch)
    widget.param("n").setValue(n)
    widget.param("screen").setValue(screen)
    widget.param("batch_size").setValue(batch)
    widget.pool_combo.setCurrentText(pool)


class FailAfter(known_models.CueModel):
    """CueModel (15 ms per forward call) whose forward call number ``fail_at`` (counted in ``calls``) and every
    later one raise: a run that breaks mid-way. A real model; set ``calls = 0`` when the run starts."""

    def __init__(self, fail_at: int = 10**9, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x):  # noqa: D102
        self.calls += 1
        time.sleep(0.015)
        if self.calls >= self.fail_at:
            raise RuntimeError("the model broke down (simulated failure)")
        return super().forward(x)


def rss_mb() -> float:
    """Resident memory of this process (VmRSS), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def layer_digest(layer) -> str:
    """A hash of a layer's data (every shape's vertices and type for a Shapes layer)."""
    h = hashlib.sha256()
    if type(layer).__name__ == "Shapes":
        for verts, kind in zip(layer.data, layer.shape_type):
            h.update(np.ascontiguousarray(verts).tobytes())
            h.update(kind.encode())
    else:
        h.update(np.ascontiguousarray(layer.data).tobytes())
        h.update(str(layer.data.dtype).encode())
    return h.hexdigest()


def layer_digests(viewer) -> dict[str, str]:
    """``{layer name: layer_digest}`` of every layer of ``viewer``."""
    return {lay.name: layer_digest(lay) for lay in viewer.layers}


def _where(frame) -> str:
    """The innermost frames of a thread's stack, and its innermost frame of the package."""
    stack = traceback.extract_stack(frame) if frame is not None else []
    ours = [f for f in stack if "napari_seg_explain" in f.filename]
    key = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack[-4:]))
    return key + (f" (from {Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name})" if ours else "")


class TickGaps:
    """The longest gap between ticks of a 10 ms QTimer on the GUI thread (a blocked GUI thread shows as a gap).

    A watchdog thread notes where the GUI thread was (its innermost frames of the package) whenever no tick came
    for :attr:`report_s`: :attr:`where` says what blocked it."""

    report_s = 0.1

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.gaps: list[float] = []
        self.where: dict[str, int] = {}
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self._gui = threading.get_ident()
        self._stop = threading.Event()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            if time.perf_counter() - self.last > self.report_s:
                frames = sys._current_frames()
                key = _where(frames.get(self._gui))
                if "qtbot.py" in key:  # in Qt's event loop: another thread holds the interpreter
                    key += " | other threads: " + "; ".join(
                        _where(f) for t, f in frames.items() if t not in (self._gui, threading.get_ident()))
                self.where[key] = self.where.get(key, 0) + 1

    def start(self) -> None:
        self.last = time.perf_counter()
        self.gaps.clear()
        self._stop = threading.Event()
        self.timer.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def stop(self) -> float:
        self.timer.stop()
        self._stop.set()
        self._tick()
        return max(self.gaps)
