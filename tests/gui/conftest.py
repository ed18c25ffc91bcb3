"""Fixtures for viewer tests: tiny real models (a TorchScript file with its card, a slow in-memory one),
a small volume whose explanation is known by construction, and a notification recorder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gui_helpers import CARD, SCALE, TRANSLATE, Z, SlowCue, cue_volume  # noqa: E402

import known_models  # noqa: E402


@pytest.fixture
def cue_model_file(tmp_path: Path) -> Path:
    """TorchScript CueModel (2 classes) + its model card, as a user would have them on disk."""
    import torch

    net = known_models.CueModel(two_class=True).eval()
    traced = torch.jit.trace(net, torch.zeros(2, 1, 64, 64))
    path = tmp_path / "cue.pt"
    traced.save(str(path))
    (tmp_path / "cue.yaml").write_text(CARD)
    return path


@pytest.fixture
def slow_model():
    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.models import SegmentationModel

    card = ModelCard(name="slow-cue", in_channels=1, classes=("background", "object"), output_activation="softmax")
    return SegmentationModel(SlowCue(two_class=True), card, device="cpu")


@pytest.fixture
def viewer_widget(make_napari_viewer):
    """A viewer with the dock widget added and the cue volume open as an image layer."""
    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    image = viewer.add_image(cue_volume(), name="cue volume", scale=SCALE, translate=TRANSLATE,
                             colormap="gray", contrast_limits=(0, 1))
    viewer.dims.set_current_step(0, Z)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation Explainer", area="right")
    return viewer, widget, image


@pytest.fixture
def notes():
    """Every napari notification shown during the test: list of (severity, message), the message on one line
    (the dock breaks a notification's first line between words, see runner.notice)."""
    from napari.utils.notifications import notification_manager

    got: list[tuple[str, str]] = []

    def record(n):
        got.append((str(n.severity), " ".join(str(n.message).split())))

    notification_manager.notification_ready.connect(record)
    yield got
    notification_manager.notification_ready.disconnect(record)
