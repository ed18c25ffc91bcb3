"""Make ``docs/screenshot_pdcr.png``: a real napari window with a finished PdCR explanation on the sample.

What it does, as a user would: opens the sample scan (File > Open Sample), docks the Segmentation
Explainer (which loads the sample model the scan names), moves to a held-out slice of the sample model
(the middle of the card's ``training.heldout_slices``), segments it, draws a 32x32 rectangle on white
matter (the block-aligned box holding the most segmented pixels), chooses the white-matter label as
ground truth (the paper's setting) and the other slices of the volume as the pool, runs PdCR with the
paper's parameters (N = 50) and saves the whole window: the map over the scan with its colorbar, the RoI
outline, and the dock scrolled (by the widget itself, when the run ends) to the Runs and results section.

Run it under a display (no GPU needed)::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/make_screenshot.py
    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/make_screenshot.py --n 20 -o /tmp/shot.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent


def _wait(app, condition, timeout: float, what: str) -> None:
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(HERE / "screenshot_pdcr.png"))
    parser.add_argument("--n", type=int, default=50, help="PdCR draws N (paper: 50)")
    parser.add_argument("--slice", type=int, default=None, help="axial slice (default: middle held-out slice)")
    parser.add_argument("--size", default="1800x1150", help="window size WxH")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    import yaml
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    from napari_seg_explain.core.sample import SAMPLE_CARD, sample_path
    from napari_seg_explain.core.sample import pick_box, pick_slice
    from napari_seg_explain.napari.sample_data import sample_label, sample_scan
    from napari_seg_explain.napari.widgets import pools

    viewer = napari.Viewer(title="napari-seg-explain: PdCR on the MNI152 sample", show=True)
    w, h = (int(v) for v in args.size.split("x"))
    viewer.window.resize(w, h)
    app = QApplication.instance()
    for data, kwargs, kind in sample_label() + sample_scan():
        layer = viewer.add_layer(Layer.create(data, kwargs, kind))
        if kind == "labels":
            layer.visible = False  # ground truth for the Dice, not shown
    scan = viewer.layers[-1]
    card = yaml.safe_load(sample_path(SAMPLE_CARD).read_text()) or {}
    z = args.slice if args.slice is not None else pick_slice(card.get("training"), scan.data.shape[0])
    viewer.dims.set_current_step(0, z)

    _, widget = viewer.window.add_plugin_dock_widget("napari-seg-explain", "Segmentation Explainer")
    _wait(app, lambda: widget.loaded is not None and not widget.busy, 120, "the sample model to load")
    widget.image_combo.setCurrentText(scan.name)
    widget.segment()
    _wait(app, lambda: not widget.busy, 120, "the segmentation")
    seg_layer = viewer.layers[f"{widget.model.name} segmentation"]
    y0, x0, y1, x1 = pick_box(np.asarray(seg_layer.data[z]) == 1)
    seg_layer.visible = False
    corners = np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float) - [0, 0.5, 0.5]
    viewer.add_shapes([corners], shape_type="rectangle", name="RoI", edge_color="lime", face_color="transparent",
                      edge_width=1.0, scale=scan.scale, translate=scan.translate, units=scan.units,
                      axis_labels=scan.axis_labels)
    widget.roi_combo.setCurrentText("RoI")
    widget.gt_combo.setCurrentText(viewer.layers[0].name)
    widget.pool_combo.setCurrentIndex(pools.POOL_CHOICES.index(pools.POOL_VOLUME))
    widget.set_method("pdcr")
    widget.param("n").setValue(args.n)
    print(f"slice {z}, RoI rows {y0}:{y1}, cols {x0}:{x1}; {widget.update_estimate()}", file=sys.stderr)

    t0 = time.perf_counter()
    widget.canvas_colorbar.setChecked(True)  # show the colour scale in the canvas too
    if widget.run() is None:
        raise SystemExit("PdCR did not start (see the notification above)")
    _wait(app, lambda: not widget.busy, 900, "PdCR")
    run = widget.latest("pdcr")
    expl = run.expl
    s = expl.stats
    print(f"PdCR N={args.n}: {time.perf_counter() - t0:.1f} s, {expl.provenance['forward_passes']} forward passes, "
          f"M0 {s['M0']:.1f}, red {s['negative_share']:.1f}% blue {s['positive_share']:.1f}% "
          f"none {s['irrelevant_share']:.1f}%", file=sys.stderr)

    viewer.layers.selection.active = run.layers["map"]  # its colormap shows in the layer controls
    viewer.reset_view()
    for _ in range(300):  # let the window settle (notifications fade after a few seconds, the canvas redraws)
        app.processEvents()
        time.sleep(0.02)
    from qtpy.QtWidgets import QWidget

    for note in widget.window().findChildren(QWidget):  # a clean canvas for the picture
        if type(note).__name__ == "NapariQtNotification":
            note.close()
    widget.show_results_section()  # the widget scrolled there when the run ended; again after the resize
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    out = Path(args.output)
    viewer.screenshot(path=str(out), canvas_only=False, flash=False)
    print(f"wrote {out}", file=sys.stderr)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
