"""Make ``docs/screenshot_3d.png``: a 3-D PdCR map of the 3 mm sample in napari's 3-D view.

As ``seg-explain napari --3d`` opens it (the 3 mm scan and white-matter label through the plugin's reader, the
3-D sample model, an empty RoI layer): a 4x4 rectangle on white matter on a held-out slice of the 3-D sample
model, extruded over ± 2 slices ('RoI slices ±'), PdCR with the white-matter label as ground
truth (N draws, default 10), then the 3-D view (``viewer.dims.ndisplay = 3``), turned to show the map (its
context box around the RoI) over the scan, and the canvas saved.

Run it under a display (no GPU needed; under a minute on 2 CPU cores)::

    xvfb-run -a -s "-screen 0 1600x1100x24" python docs/make_screenshot_3d.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_screenshot import _wait  # noqa: E402  (the same event-loop wait as the 2-D screenshot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(HERE / "screenshot_3d.png"))
    parser.add_argument("--n", type=int, default=10, help="PdCR draws N")
    parser.add_argument("--size", default="2000x1100", help="window size WxH")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    import yaml
    from qtpy.QtWidgets import QApplication

    from napari_seg_explain.core.sample import SAMPLE_CARD_3D, sample_path
    from napari_seg_explain.napari.launch import prepare_viewer

    viewer = napari.Viewer(title="napari-seg-explain: 3-D PdCR on the 3 mm MNI152 sample", show=True)
    w, h = (int(v) for v in args.size.split("x"))
    viewer.window.resize(w, h)
    app = QApplication.instance()
    widget = prepare_viewer(viewer, three_d=True)
    _wait(app, lambda: widget.loaded is not None and not widget.busy, 120, "the 3-D sample model to load")
    scan, label = viewer.layers[0], viewer.layers[1]
    card = yaml.safe_load(sample_path(SAMPLE_CARD_3D).read_text()) or {}
    held = list(card["training"]["heldout_slices"])
    k, size = 2, 4
    lab = np.asarray(label.data) != 0
    z, r, c = next((z, r, c) for z in held[k:-k] for r in range(lab.shape[1] - size)
                   for c in range(lab.shape[2] - size) if lab[z - k: z + k + 1, r:r + size, c:c + size].all())
    corners = np.array([[z, r, c], [z, r, c + size], [z, r + size, c + size], [z, r + size, c]], float)
    corners[:, 1:] -= 0.5
    viewer.layers["RoI"].add(corners, shape_type="rectangle")
    widget.roi_combo.setCurrentText("RoI")
    widget.roi_slices.setValue(k)
    widget.set_method("pdcr")
    widget.param("n").setValue(args.n)
    widget.run()
    _wait(app, lambda: not widget.busy, 600, "the 3-D PdCR run")
    for _ in range(50):
        app.processEvents()
    viewer.dims.ndisplay = 3
    scan.opacity = 0.6
    viewer.reset_view()
    viewer.camera.angles = (-20.0, 35.0, 140.0)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    out = Path(args.output)
    viewer.screenshot(path=str(out), canvas_only=False, flash=False)
    print(f"wrote {out}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
