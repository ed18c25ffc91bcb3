"""Issue 12 item 6: the results panel draws a run's per-contrast values (a signed bar per contrast scaled to
the largest |value|), the ranking and the agreement with a clinician's ranking, for any run whose stats hold
``shapley`` and ``contrasts``.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_shapley_panel.py -q``.
"""

from __future__ import annotations

import numpy as np
from gui_helpers import wait_idle

from napari_seg_explain.napari.widgets.sections.explain import NO_ROI
from napari_seg_explain.napari.widgets.shapley_panel import ContrastValuesPanel

WEIGHTS = (0.1, 0.6, 0.0)


def _linear_model():
    """Class 1 = sum_c w_c x_c, class 0 = 1 - that (no activation): contrast 1 matters most, 2 not at all."""
    import torch

    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.models import SegmentationModel

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.tensor(WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x):
            fg = (x * self.w).sum(dim=1, keepdim=True)
            return torch.cat([1 - fg, fg], dim=1)

    card = ModelCard(name="lin", in_channels=3, classes=("background", "lesion"), output_activation="none")
    return SegmentationModel(Linear().eval(), card, device="cpu")


def _rgb_image() -> np.ndarray:
    """(H, W, 3): left half all contrasts 1 (lesion with contrast 1 alone), right half contrast 1 at 0.7
    (lesion only with contrasts 0 and 1 together) -> Shapley values about (0.17, 0.83, 0)."""
    img = np.ones((32, 32, 3), np.float32)
    img[:, 16:, 1] = 0.7
    return img


def test_results_panel_draws_contrast_bars_ranking_and_clinician_agreement(qtbot, make_napari_viewer):
    from napari_seg_explain.napari.widgets import SegExplainWidget

    viewer = make_napari_viewer()
    viewer.add_image(_rgb_image(), name="three contrasts", rgb=True)
    widget = SegExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation Explainer", area="right")
    widget.set_model(_linear_model())
    wait_idle(qtbot, widget)
    widget.set_method("shapley")
    widget.param("clinician_ranking").setText("1,0,2")
    widget.sync.refresh()
    widget.roi_combo.setCurrentText(NO_ROI)
    assert widget.roi_combo.currentText() == NO_ROI
    assert widget.run() is not None
    wait_idle(qtbot, widget)

    rec = widget.latest("shapley")
    assert rec is not None
    stats = rec.expl.stats
    assert stats["ranking"] == [1, 0, 2]
    panel: ContrastValuesPanel = widget.stats_panel.contrasts
    assert not panel.isHidden()
    bars = panel.bars
    assert len(bars.values) == 3 and bars.names == [str(n) for n in stats["contrasts"]]
    assert int(np.argmax(bars.values)) == 1
    assert bars.fractions()[1] == 1.0 and abs(bars.fractions()[2]) < 1e-9
    assert 0 < bars.fractions()[0] < 1
    np.testing.assert_allclose(bars.values, stats["shapley"])
    names = stats["contrasts"]
    assert panel.ranking_label.text() == f"Ranking: {names[1]} > {names[0]} > {names[2]}"
    assert "Kendall's tau 1.00" in panel.agreement_label.text()
    assert "top-1 matches" in panel.agreement_label.text()
    bars.grab()  # paints without error

    # a run without per-contrast values hides the bars
    widget.stats_panel.clear()
    assert panel.isHidden() and panel.bars.values == []
