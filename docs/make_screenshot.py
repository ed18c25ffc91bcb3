"""Make ``docs/screenshot_pdcr.png``: a real napari window with two PdCR runs compared side by side on one
colour scale, on the sample.

What it does, as a user would: opens the sample scan (File > Open Sample), docks the Segmentation
Explainer (which loads the sample model the scan names), moves to a held-out slice of the sample model
(the middle of the card's ``training.heldout_slices``), segments it, draws two 32x32 rectangles on white
matter, one in each hemisphere (in each half of the slice, the block-aligned box holding the most segmented
pixels), chooses the white-matter label as ground truth (the paper's setting) and the other slices of the
volume as the pool, runs PdCR in the default Fast preview mode (adaptive N, at most the paper's N = 50) on
every shape of the RoI layer (two runs, computed as one shared run), selects both runs and presses *Compare
side by side*: napari's grid shows each run over the scan,
with *same colour scale for the runs shown* (on by default) and the canvas colour bars on. The whole window
is saved, the dock scrolled to the Runs and results section (legend: the shared scale ``±L`` in Dice points).

Run it under a display (no GPU needed; 2 to 5 minutes on 2 CPU cores)::

    xvfb-run -a -s "-screen 0 2100x1200x24" python docs/make_screenshot.py
    xvfb-run -a -s "-screen 0 2100x1200x24" python docs/make_screenshot.py --n 20 -o /tmp/shot.png
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
    parser.add_argument("--size", default="2000x1150", help="window size WxH")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    import yaml
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    from napari_seg_explain.core.sample import SAMPLE_CARD, pick_box, pick_slice, sample_path
    from napari_seg_explain.napari.sample_data import sample_label, sample_scan
    from napari_seg_explain.napari.widgets import pools

    viewer = napari.Viewer(title="napari-seg-explain: PdCR on the MNI152 sample, two RoIs compared", show=True)
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
    widget.image_section.segment_scope.setCurrentText("current slice")
    widget.segment()
    _wait(app, lambda: not widget.busy, 120, "the segmentation")
    seg_layer = viewer.layers[f"{widget.model.name} segmentation"]
    seg_layer.visible = False
    wm = np.asarray(seg_layer.data[z]) == 1
    half = (wm.shape[1] // 2) // 8 * 8  # block-aligned: each box lies in one half of the slice
    boxes = []
    for x_off, part in ((0, wm[:, :half]), (half, wm[:, half:])):  # screen left, then screen right
        y0, x0, y1, x1 = pick_box(part)
        boxes.append((y0, x0 + x_off, y1, x1 + x_off))
    rects = [np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float) - [0, 0.5, 0.5]
             for y0, x0, y1, x1 in boxes]
    viewer.add_shapes(rects, shape_type="rectangle", name="RoI", edge_color="lime", face_color="transparent",
                      edge_width=1.0, scale=scan.scale, translate=scan.translate, units=scan.units,
                      axis_labels=scan.axis_labels)
    widget.roi_combo.setCurrentText("RoI")
    widget.every_shape.setChecked(True)  # RoI 1, RoI 2: one shared PdCR run, a run (and layers) per shape
    widget.gt_combo.setCurrentText(viewer.layers[0].name)
    widget.pool_combo.setCurrentIndex(pools.POOL_CHOICES.index(pools.POOL_VOLUME))
    widget.set_method("pdcr")
    widget.param("n").setValue(args.n)
    print(f"slice {z}, RoIs (rows, cols) {boxes}; {widget.update_estimate()}", file=sys.stderr)

    t0 = time.perf_counter()
    if widget.run() is None:
        raise SystemExit("PdCR did not start (see the notification above)")
    _wait(app, lambda: not widget.busy, 1800, "PdCR")
    runs = list(widget.runs)
    for run in runs:
        s = run.expl.stats
        print(f"{run.label}: {run.expl.provenance['forward_passes']} forward passes, M0 {s['M0']:.1f}, "
              f"red {s['negative_share']:.1f}% blue {s['positive_share']:.1f}% none {s['irrelevant_share']:.1f}%, "
              f"max |ATE| {max(run.own_limits().values()):.2f}", file=sys.stderr)
    print(f"PdCR N={args.n}, two runs: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    widget.runs_section.select([run.run_id for run in runs])  # both runs, side by side, one colour scale
    widget.runs_section.compare_button.click()
    widget.canvas_colorbar.setChecked(True)  # the shared scale in the canvas too
    viewer.layers.selection.active = runs[-1].layers["map"]  # its colormap shows in the layer controls
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
    limits = {run.label: tuple(round(float(v), 3) for v in run.layers["map"].contrast_limits) for run in runs}
    print(f"contrast limits {limits}; legend: {widget.stats_panel.legend.caption()}", file=sys.stderr)
    out = Path(args.output)
    viewer.screenshot(path=str(out), canvas_only=False, flash=False)
    print(f"wrote {out}", file=sys.stderr)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
