"""PdCR in the widget: the fast preview by default (adaptive N, coarse map first), the paper's exact mode one click
away; how soon the streamed map is useful, and the cost line against the run's own wall time in every mode.

The numbers are benchmarks (printed and recorded with ``record_property``), not timed assertions.

Run: ``OMP_WAIT_POLICY=PASSIVE python -m pytest tests/gui/test_pdcr_preview.py -q -s``.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest
from gui_helpers import add_rect, wait_idle
from test_first_hour import HELD_OUT, _sample_viewer, _wm_box

from napari_seg_explain.napari.widgets.sections.explain import EXACT, FAST, MODES

USEFUL = 0.9  # Pearson with the exact map at which the streamed map counts as useful


def _sample_with_roi(make_napari_viewer, qtbot):
    """The sample scan, slice 64 in view, a 32x32 RoI on its white matter, PdCR chosen with the paper's parameters."""
    viewer, widget, image = _sample_viewer(make_napari_viewer, qtbot, shown=HELD_OUT)
    y0, x0, y1, x1 = _wm_box(HELD_OUT)
    add_rect(viewer, y0, x0, y1, x1, z=HELD_OUT, image=image)
    widget.sync.refresh()
    widget.set_method("pdcr")
    return viewer, widget, image


def _pearson(exact: np.ndarray, shown: np.ndarray) -> float:
    """Pearson of the blocks of a streamed map with the exact map; a block not yet shown (NaN) counts as 0, the
    effect the user sees there."""
    from napari_seg_explain.core.explainers.pdcr_agreement import agreement

    filled = np.where(np.isfinite(exact) & ~np.isfinite(shown), 0.0, shown)
    return agreement(exact, filled, 8)["pearson"]


def _load() -> str:
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"


def test_the_mode_choice_sets_preview_and_adaptive_and_follows_the_form(qtbot, make_napari_viewer):
    _viewer, widget, _image = _sample_with_roi(make_napari_viewer, qtbot)
    section = widget.explain_section
    assert section.fast and section.mode.isVisibleTo(widget), "the widget answers fast by default"
    cfg = widget._config()
    assert cfg.preview and cfg.adaptive and cfg.screening == "auto" and cfg.n == 50 and cfg.screen == 3
    section.set_fast(False)
    cfg = widget._config()
    assert not cfg.preview and not cfg.adaptive, "exact: the paper's mode"
    assert section.mode.currentText() == MODES[EXACT][0]
    widget.param("adaptive").setChecked(True)
    widget.param("preview").setChecked(True)  # both ticked by hand: the choice reads 'Fast preview'
    assert section.mode.currentData() == FAST
    widget.set_method("misure")
    assert not section.mode.isVisibleTo(widget), "the choice is offered only to a method with these speed modes"


def test_fast_preview_gives_a_useful_map_early(qtbot, make_napari_viewer, record_property):
    """The widget's default mode on the sample: the wall time from Run to the first streamed map with Pearson >= 0.9
    with the exact map of the same RoI and seed (computed afterwards through the core API)."""
    from napari_seg_explain.core.progress import drive

    viewer, widget, _image = _sample_with_roi(make_napari_viewer, qtbot)
    assert widget.explain_section.fast
    streamed: list[tuple[float, np.ndarray]] = []
    streamer = widget.tasks.streamer
    push = streamer.push

    def record(index, partial):  # every partial map as it reaches the stream layer
        streamed.append((time.perf_counter(), np.array(partial, copy=True)))
        push(index, partial)

    streamer.push = record
    plan, = widget.gather()
    load_before = _load()
    t0 = time.perf_counter()
    assert widget.run() is not None
    wait_idle(qtbot, widget, 300000)
    t_end = time.perf_counter()
    fast = widget.latest("pdcr").expl
    assert fast.params["preview"] and fast.params["adaptive"]
    assert streamed, "no partial map was streamed"

    job = plan.job  # the same plane, RoI, pool and seed, in the paper's exact mode
    job.config = dataclasses.replace(job.config, preview=False, adaptive=False)
    t1 = time.perf_counter()
    exact = np.asarray(drive(job.run(widget.model)).map)
    exact_s = time.perf_counter() - t1
    fast_map = np.asarray(fast.map).reshape(exact.shape)
    final_r = _pearson(exact, fast_map)
    first = next(((t - t0, r) for t, p in streamed
                  if (r := _pearson(exact, np.asarray(p).reshape(exact.shape))) >= USEFUL), None)
    record_property("time_to_useful_map_s", None if first is None else round(first[0], 2))
    record_property("fast_run_s", round(t_end - t0, 2))
    print(f"\nfast preview on the sample: streamed map Pearson >= {USEFUL} with the exact map after "
          f"{'never' if first is None else f'{first[0]:.1f} s (r = {first[1]:.3f})'}; first whole map "
          f"{fast.stats.get('first_map_seconds')} s into the run; the run {t_end - t0:.1f} s "
          f"({fast.provenance['forward_passes']} passes), final Pearson {final_r:.3f}; "
          f"exact run (core API) {exact_s:.1f} s; {load_before} before, {_load()} after")
    assert final_r >= USEFUL
    assert first is not None


@pytest.mark.parametrize("mode", ["exact", "fast", "hierarchical"])
def test_cost_line_is_within_a_factor_2_of_the_run(qtbot, make_napari_viewer, record_property, mode):
    """The cost line's seconds (``Controller.estimate``: passes x the time per image measured at load) against the
    same run's recorded wall time, in each mode: exact (the paper), fast (adaptive N + preview), hierarchical
    screening. Both numbers come from the same machine at the same time, so this is no timing assertion on its
    speed."""
    _viewer, widget, _image = _sample_with_roi(make_napari_viewer, qtbot)
    widget.explain_section.set_fast(mode == "fast")
    if mode == "hierarchical":
        widget.param("screening").setCurrentText("hierarchical")
    cost = widget.controller.estimate(widget.choices())
    assert cost.ok and np.isfinite(cost.seconds), cost.text
    assert widget.run() is not None
    wait_idle(qtbot, widget, 300000)
    expl = widget.latest("pdcr").expl
    wall = float(expl.provenance["wall_time_s"])
    ratio = cost.seconds / wall
    record_property(f"estimate_ratio_{mode}", round(ratio, 2))
    print(f"\n{mode}: cost line {cost.seconds:.1f} s ({cost.passes} passes), wall {wall:.1f} s "
          f"({expl.provenance['forward_passes']} passes): ratio {ratio:.2f}; {cost.text!r}; {_load()}")
    assert 0.5 <= ratio <= 2.0
