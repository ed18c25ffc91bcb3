"""Display windows for CT (Hounsfield units) and scans: contrast limits only, the data is never changed."""

from __future__ import annotations

import numpy as np

# name -> (window level, window width) in HU, the usual radiology presets
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
AUTO = "auto (0.5-99.5 %)"


def window_limits(name: str, data: np.ndarray | None = None) -> tuple[float, float]:
    """Contrast limits for a preset (level +- width / 2), or percentiles of ``data`` for ``AUTO``."""
    if name in CT_WINDOWS:
        level, width = CT_WINDOWS[name]
        return level - width / 2, level + width / 2
    if name == AUTO and data is not None:
        sample = np.asarray(data).ravel()[:: max(1, np.asarray(data).size // 1_000_000)]
        lo, hi = np.percentile(sample, [0.5, 99.5])
        return float(lo), float(hi if hi > lo else lo + 1)
    raise ValueError(f"unknown window {name!r}: use one of {[*CT_WINDOWS, AUTO]}")


def window_choices() -> list[str]:
    return [AUTO, *(f"{n} (L{int(lv)} W{int(w)})" for n, (lv, w) in CT_WINDOWS.items())]


def window_name(choice: str) -> str:
    """'lung (L-600 W1500)' -> 'lung'."""
    return choice if choice == AUTO else choice.split(" (")[0]
