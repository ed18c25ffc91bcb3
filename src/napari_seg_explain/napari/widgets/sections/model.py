"""Section 1 · Model: the model file (or folder: nnU-Net v2, MONAI bundle) and card, the device, Load / Load
sample model, the nnU-Net options, and what was loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                            QPushButton, QWidget)

from . import Section, fill_combo, path_row

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
        self.model_path, row = path_row("model file (.pt, .pt2, .safetensors, .onnx), its .yaml card, or a folder",
                                        "choose a model file", self._browse_model)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.setToolTip("choose a model folder: an nnU-Net v2 trained-model folder (dataset.json, "
                                      "plans.json, fold_*/) or a MONAI bundle (configs/, models/)")
        self.folder_button.clicked.connect(lambda *_: self._browse_folder())
        row.layout().addWidget(self.folder_button)
        self.form.addRow("Model", row)
        self._build_nnunet_options()
        self.model_path.textChanged.connect(self.update_folder_options)
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

    def _build_nnunet_options(self) -> None:
        """nnU-Net folder options, shown only while the path is an nnU-Net folder (they go to ``load_model``)."""
        box = self.nnunet_options = QWidget()
        form = QFormLayout(box)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.folds = QLineEdit()
        self.folds.setPlaceholderText("all available")
        self.folds.setToolTip("folds to load, e.g. 0 1 2 (empty: every fold with the chosen checkpoint); "
                              "segmenting averages them, explaining uses the first unless 'explain ensemble'")
        self.checkpoint = QComboBox()
        self.checkpoint.setToolTip("the checkpoint file of each fold (fold_*/checkpoint_*.pth)")
        self.mirroring = QCheckBox("test-time mirroring")
        self.mirroring.setChecked(True)
        self.mirroring.setToolTip("segment with nnU-Net's mirrored inputs averaged (its default)")
        self.ensemble = QCheckBox("explain ensemble")
        self.ensemble.setToolTip("explain the mean of all loaded folds (and mirrored inputs when mirroring is "
                                 "on), as segmentation does; off: one fold, no mirroring (faster; recorded)")
        form.addRow("Folds", self.folds)
        form.addRow("Checkpoint", self.checkpoint)
        row = QHBoxLayout()
        row.addWidget(self.mirroring)
        row.addWidget(self.ensemble)
        form.addRow("nnU-Net", row)
        self.form.addRow(box)
        box.hide()

    def nnunet_folder(self, path: str | None = None) -> Path | None:
        """The path (default: the field's) when it is an nnU-Net v2 trained-model folder, else None."""
        p = Path((path if path is not None else self.model_path.text()).strip() or ".")
        ok = p.is_dir() and (p / "dataset.json").is_file() and (p / "plans.json").is_file()
        return p if ok and str(p) != "." else None

    def update_folder_options(self, *_: Any) -> None:
        """Show the nnU-Net options for an nnU-Net folder (checkpoints found in its fold folders), else hide them."""
        folder = self.nnunet_folder()
        self.nnunet_options.setVisible(folder is not None)
        if folder is None:
            return
        names = sorted({f.name for f in folder.glob("fold_*/checkpoint_*.pth")})
        fill_combo(self.checkpoint, names or ["checkpoint_final.pth"], "checkpoint_final.pth")

    def folder_options(self, path: str | None = None) -> dict[str, Any]:
        """Keyword options for ``load_model``: the nnU-Net options for an nnU-Net folder, else none."""
        if self.nnunet_folder(path) is None:
            return {}
        folds = [f for f in self.folds.text().replace(",", " ").split() if f]
        return {"folds": folds or None, "checkpoint": self.checkpoint.currentText() or None,
                "mirroring": self.mirroring.isChecked(), "ensemble": self.ensemble.isChecked()}

    def set_enabled(self, idle: bool) -> None:
        for w in (self.load_button, self.sample_button, self.device, self.folder_button, self.nnunet_options):
            w.setEnabled(idle)

    def show_model(self, info: "LoadedModel") -> None:
        from ....core.models.space import PreprocessingModel

        if isinstance(info.model, PreprocessingModel):
            self._show_folder_model(info)
            return
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

    def _show_folder_model(self, info: "LoadedModel") -> None:
        """A model with its own preprocessing (nnU-Net folder, MONAI bundle): its summary."""
        m = info.model
        s = dict(m.summary())

        def text(v: Any, sep: str = ", ") -> str:
            if isinstance(v, (list, tuple)):
                return sep.join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) or "?"
            return "?" if v is None or v == "" else str(v)

        fmt = text(s.pop("format", m.format))
        conf = s.pop("configuration", None)
        lines = [f"<b>{m.name}</b> ({fmt}{', ' + str(conf) if conf else ''})"]
        folds, ckpt = s.pop("folds", None), s.pop("checkpoint", None)
        if folds is not None or ckpt:
            lines.append(f"folds: {text(folds)}" + (f" · checkpoint: {ckpt}" if ckpt else ""))
        spacing = s.pop("spacing (mm)", s.pop("spacing", None))
        lines.append(f"patch size: {text(s.pop('patch size', None), 'x')} · spacing: {text(spacing, 'x')} mm")
        classes = list(s.pop("classes", None) or info.class_names)
        lines.append(f"channels: {text(s.pop('channels', None))} · classes: "
                     + ", ".join(f"{i}: {n}" for i, n in enumerate(classes)))
        mirror, ens = s.pop("mirroring", None), s.pop("explain ensemble", None)
        if mirror is not None or ens is not None:
            lines.append(f"mirroring: {'on' if mirror else 'off'} · explaining: "
                         + ("the fold ensemble" if ens else "one fold, no mirroring"))
        rest = [f"{k}: {text(v)}" for k, v in s.items() if v not in (None, "", [], ())]
        if rest:
            lines.append(" · ".join(rest))
        lines.append(f"device: <b>{m.device}</b> · segments and explains whole scans (its own preprocessing)")
        self.model_summary.setText("<br>".join(lines))
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

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder (nnU-Net v2 or MONAI bundle)", "")
        if path:
            self.choose_folder(path)

    def choose_folder(self, path: str) -> Any:
        """What the Folder… button does once a folder is chosen: show its options and load it."""
        self.model_path.setText(str(path))
        self.update_folder_options()
        return self._on_load(str(path))

    def _browse_card(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model card", "", "Model cards (*.yaml *.yml)")
        if path:
            self.card_path.setText(path)
