"""A toy explainer registered from a test module: it must reach the CLI, the widget, layers and folders
with no edit to the package. Its map is known by construction: the image's first channel times ``gain``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from napari_seg_explain.core.explainers.base import ExplainerSpec, ResultLayer, Stat, check_ranges, param
from napari_seg_explain.core.progress import Progress
from napari_seg_explain.core.results import Explanation

NAME = "toygain"


@dataclass(frozen=True)
class ToyConfig:
    gain: float = param(2.0, lo=0.0, hi=10.0, step=0.5, tip="factor applied to the image", label="Gain",
                        advanced=False)
    seed: int = param(0, lo=0, hi=100, tip="unused", label="Seed")

    def __post_init__(self) -> None:
        check_ranges(self, "Toy")


def toy_run(model, image, roi, target, *, config=ToyConfig(), geometry=None):
    t0 = time.perf_counter()
    img = np.asarray(image, np.float32)
    yield Progress(0, 1, "toy")
    amap = (img[0] * config.gain).astype(np.float32)
    yield Progress(1, 1, "toy", partial=amap)
    return Explanation(method=NAME, map=amap, roi=None if roi is None else np.asarray(roi, bool),
                       maps={"doubled": (amap * 2).astype(np.float32)}, stats={"total": float(amap.sum())},
                       params=asdict(config) | {"target_class": int(target)},
                       provenance={"forward_passes": 0, "wall_time_s": time.perf_counter() - t0,
                                   "model": model.describe()},
                       deviations=["a toy"], geometry=dict(geometry or {}))


SPEC = ExplainerSpec(name=NAME, title="ToyGain", paper="tests", config=ToyConfig, run=toy_run,
                     needs=frozenset({"roi_optional"}), dims=(2, 3), stats=(Stat("total", "sum of the map"),),
                     layers=(ResultLayer("map", "gain map", "diverging", colorbar=True),
                             ResultLayer("doubled", "doubled", "saliency")),
                     estimate=lambda cfg, roi: 0, summary=lambda e: f"toy total {e.stats['total']:.1f}",
                     description="the image times a gain (a test explainer)")
