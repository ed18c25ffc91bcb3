"""Section 1 · Model: the model file and card, the device, Load / Load sample model, and what was loaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton

from . import Section, path_row

if TYPE_CHECKING:
    from ..jobs import LoadedModel

MODEL_FILTER = "Models (*.pt *.ts *.pt2 *.safetensors *.pth *.onnx *.yaml *.yml);;All files (*)"


def device_choices() -> list[str]:
    try:
        from ....core.models import available_devices

        return ["auto", *available_devices()]
    except Exception:  # noqa: BLE001 - torch missing: the model load will say so
        return ["auto", "cpu"]


class ModelSection(Section):
    """``on_load(path)`` loads a model file, ``on_sample()`` the sample model, ``on_device(name)`` moves it."""

    def __init__(self, on_load: Callable[[str], Any], on_sample: Callable[[], Any],
                 on_device: Callable[[str], Any]) -> None:
        super().__init__("1 · Model")
        self._on_load = on_load
        self.model_path, row = path_row("model file (.pt, .pt2, .safetensors, .onnx) or its .yaml card",
                                        "choose a model file", self._browse_model)
        self.form.addRow("Model", row)
        self.card_path, row = path_row("optional: model card .yaml (default: beside the model)",
                                       "choose a model card", self._browse_card)
        self.form.addRow("Card", row)
        self.device = QComboBox()
        self.device.addItems(device_choices())
        self.device.setToolTip("auto = CUDA, then MPS, then CPU")
        self.device.currentTextChanged.connect(on_device)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(lambda *_: on_load(self.model_path.text().strip()))
        self.sample_button = QPushButton("Load sample model")
        self.sample_button.setToolTip("the small 2-D U-Net shipped with the plugin (MNI152 white matter)")
        self.sample_button.clicked.connect(lambda *_: on_sample())
        row = QHBoxLayout()
        row.addWidget(self.device, 1)
        row.addWidget(self.load_button, 1)
        self.form.addRow("Device", row)
        self.form.addRow(self.sample_button)
        self.model_summary = QLabel("No model loaded.")
        self.model_summary.setWordWrap(True)
        self.model_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.form.addRow(self.model_summary)
        self.cpu_note = QLabel("Running on the CPU: perturbation methods with the papers' settings can take "
                               "minutes; a CUDA GPU is much faster.")
        self.cpu_note.setToolTip("choose a device above; 'auto' picks CUDA, then MPS, then the CPU")
        self.cpu_note.setWordWrap(True)
        self.cpu_note.setStyleSheet("color: #e8a33d;")
        self.cpu_note.hide()
        self.form.addRow(self.cpu_note)

    def set_enabled(self, idle: bool) -> None:
        for w in (self.load_button, self.sample_button, self.device):
            w.setEnabled(idle)

    def show_model(self, info: "LoadedModel") -> None:
        m, card = info.model, info.model.card
        norm = card.normalization + (f" (center {card.ct_center}, width {card.ct_width})"
                                     if card.normalization == "ct_window" else "")
        size = "x".join(map(str, card.input_size)) + f" ({card.fit})" if card.input_size else "any (image size)"
        classes = ", ".join(f"{i}: {n}" for i, n in enumerate(info.class_names))
        timing = (f"{1000 * info.seconds_per_image:.1f} ms per {info.timing_size[0]}x{info.timing_size[1]} image"
                  if np.isfinite(info.seconds_per_image) else "not timed")
        self.model_summary.setText(
            f"<b>{m.name}</b> ({m.format})<br>channels: {card.in_channels or '?'} · classes: {classes}<br>"
            f"input size: {size} · normalisation: {norm}<br>device: <b>{m.device}</b> · {timing}")
        self.cpu_note.setVisible(m.device.type == "cpu")
        self.device.blockSignals(True)
        self.device.setCurrentText(m.device.type if self.device.currentText() != "auto" else "auto")
        self.device.blockSignals(False)

    def show_failed(self, info: "LoadedModel | None") -> None:
        self.model_summary.setText(
            "Could not load the model (see the notification)." if info is None else
            f"Could not load the new model; still using <b>{info.model.name}</b> on {info.model.device}.")

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", "", MODEL_FILTER)
        if path:
            self.model_path.setText(path)
            self._on_load(path)

    def _browse_card(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model card", "", "Model cards (*.yaml *.yml)")
        if path:
            self.card_path.setText(path)
