"""Open napari ready to use: the sample scan and its label, the dock widget, the sample model, a RoI layer.

``seg-explain napari`` (the README's main job) calls :func:`main`; tests call :func:`prepare_viewer` on a
viewer of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari

    from .widgets import SegExplainWidget

PLUGIN = "napari-seg-explain"
WIDGET = "Segmentation Explainer"


def prepare_viewer(viewer: "napari.Viewer", with_sample: bool = True, three_d: bool = False) -> "SegExplainWidget":
    """Dock the widget; with ``with_sample`` open the sample scan + label at a held-out slice, load the
    sample model (in a worker) and add an empty 'RoI' Shapes layer in rectangle mode. ``three_d``: the 3 mm
    sample volume and label (through the plugin's reader) and the 3-D sample model instead."""
    import yaml

    from ..core.sample import SAMPLE_CARD, SAMPLE_CARD_3D, SAMPLE_LABEL_3D, SAMPLE_VOLUME_3D, pick_slice, sample_path

    if with_sample and three_d:
        viewer.open(str(sample_path(SAMPLE_VOLUME_3D)), plugin=PLUGIN)
        viewer.open(str(sample_path(SAMPLE_LABEL_3D)), plugin=PLUGIN)
    elif with_sample:
        viewer.open_sample(PLUGIN, "sample_scan")
        viewer.open_sample(PLUGIN, "sample_label")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    if not with_sample:
        return widget
    scan = viewer.layers[0]
    card = sample_path(SAMPLE_CARD_3D if three_d else SAMPLE_CARD)
    training = (yaml.safe_load(card.read_text()) or {}).get("training")
    step = list(viewer.dims.current_step)
    step[0] = pick_slice(training, scan.data.shape[0])
    viewer.dims.current_step = tuple(step)
    viewer.layers.selection.active = scan
    if widget.loaded is None and not widget.busy:
        if three_d:
            widget.load_model(str(card))
        else:
            widget.load_sample_model()
    label = viewer.layers[1]
    label.visible = False  # ground truth stays available in the widget, hidden on screen
    widget.gt_combo.setCurrentText(label.name)
    widget.new_roi_layer()
    return widget


def prefer_plugin_reader(settings: Any = None) -> list[str]:
    """Make the plugin napari's preferred reader for the file patterns it reads, where the user has set no
    preference (napari then stops asking "Choose reader" for .nii.gz, .dcm, .png...). ``settings``: napari's
    settings (default: the user's, saved by napari). Returns the patterns set."""
    from napari.settings import get_settings

    from .reader import EXTENSIONS

    settings = settings if settings is not None else get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [f"*{ext}" for ext in EXTENSIONS if f"*{ext}" not in current]
    if added:
        settings.plugins.extension2reader = current | {pattern: PLUGIN for pattern in added}
    return added


def main(argv: Any = None, three_d: bool = False) -> int:
    """Start napari with everything prepared and run its event loop (``three_d``: the 3-D sample)."""
    import napari

    prefer_plugin_reader()
    viewer = napari.Viewer(title="napari-seg-explain")
    viewer.window.resize(1500, 950)
    prepare_viewer(viewer, three_d=three_d)
    viewer.status = "Draw a rectangle on white matter (RoI layer), then press Run (Ctrl+Return)."
    napari.run()
    return 0
