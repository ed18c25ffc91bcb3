"""``seg-explain demo``: the whole job on the shipped sample, from segmentation to a figure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def run_demo(out_dir: Path, n: int = 50, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Segment a sample slice, explain a 32x32 RoI with PdCR (paper defaults) and MiSuRe; write maps + PNG."""
    import yaml

    from ..core.explainers.pdcr import PdCRConfig
    from ..core.figure import save_demo_figure
    from ..core.images import read_image, spatial_geometry, write_map
    from ..core.jobs import ExplainJob
    from ..core.models import load_model
    from ..core.perturb.pools import pool_from_volume
    from ..core.rois import roi_from_box
    from ..core.sample import SAMPLE_CARD, SAMPLE_LABEL, SAMPLE_VOLUME, pick_box, pick_slice, sample_path
    from .common import run_with_bar

    out_dir.mkdir(parents=True, exist_ok=True)
    image = read_image(sample_path(SAMPLE_VOLUME))
    label_img = read_image(sample_path(SAMPLE_LABEL))
    model = load_model(sample_path(SAMPLE_CARD), device=device)
    training = (yaml.safe_load(sample_path(SAMPLE_CARD).read_text()) or {}).get("training")
    z = pick_slice(training, image.n_slices)
    plane = image.slice2d(z)
    seg = model.segment(image, z)
    box = pick_box(seg == 1)
    roi = roi_from_box(seg.shape, *box)
    label = label_img.slice2d(z)[0]
    geom = spatial_geometry(image) | {"slice_index": z, "slice_axis": 2}
    print(f"sample slice z={z}, RoI box {box} (rows/cols, end exclusive)", file=sys.stderr)

    pool = pool_from_volume(model, image, z)
    jobs = [ExplainJob("pdcr", plane, roi, 1, config=PdCRConfig(n=n), label=label, pool=pool, geometry=geom),
            ExplainJob("misure", plane, None, 1, geometry=geom, roi_name="whole image")]
    p_expl, m_expl = (run_with_bar(job.run(model), job.spec.title, progress) for job in jobs)

    files = [write_map(out_dir / "segmentation.nii.gz", seg, image, slice_index=z)]
    files += p_expl.save(out_dir / "pdcr_map.nii.gz", like=image, slice_index=z)
    files += m_expl.save(out_dir / "misure_saliency.nii.gz", like=image, slice_index=z)
    fig = save_demo_figure(out_dir / "demo.png", plane[0], seg, [p_expl, m_expl],
                           f"napari-seg-explain demo: MNI152 axial slice {z}, white matter, RoI {box}")
    files.append(fig)
    return {"command": "demo", "output": str(out_dir), "files": [str(f) for f in files], "slice": z,
            "roi_box": list(box), "pdcr": {k: p_expl.stats[k] for k in ("M0", "negative_share", "positive_share",
                                                                        "irrelevant_share", "min_ate", "max_ate")}
            | {"forward_passes": p_expl.provenance["forward_passes"], "wall_time_s": p_expl.provenance["wall_time_s"]},
            "misure": {k: m_expl.stats[k] for k in ("dice_explained", "perturbation_ratio", "dilations")}
            | {"forward_passes": m_expl.provenance["forward_passes"], "wall_time_s": m_expl.provenance["wall_time_s"]}}


def run_demo_3d(out_dir: Path, n: int = 50, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """The 3-D sample: segment the volume (sliding window), explain a 16-voxel cube of white matter in the held-out
    slab with PdCR (hierarchical screening) and MiSuRe on the model's 32-voxel context box; maps + a PNG of the
    RoI's middle slice."""
    import dataclasses

    import numpy as np
    import yaml

    from ..core.explainers.pdcr import PdCRConfig
    from ..core.figure import save_demo_figure
    from ..core.images import read_image, spatial_geometry, write_map
    from ..core.jobs import ExplainJob
    from ..core.job_inputs import volume_context
    from ..core.models import load_model
    from ..core.rois import roi_from_bounds
    from ..core.sample import SAMPLE_CARD_3D, SAMPLE_LABEL_3D, SAMPLE_VOLUME_3D, pick_bounds, sample_path
    from .common import run_with_bar

    out_dir.mkdir(parents=True, exist_ok=True)
    image = read_image(sample_path(SAMPLE_VOLUME_3D))
    label = read_image(sample_path(SAMPLE_LABEL_3D)).data[0]
    model = load_model(sample_path(SAMPLE_CARD_3D), device=device)
    training = (yaml.safe_load(sample_path(SAMPLE_CARD_3D).read_text()) or {}).get("training") or {}
    seg = model.segment(image)
    held = [int(z) for z in training.get("heldout_slices") or []]
    wm = seg == 1
    if held:  # the RoI lies in the held-out slab (display order: slices are the last axis)
        keep = np.zeros(wm.shape[-1], bool)
        keep[held] = True
        wm = wm & keep
    starts, stops = pick_bounds(wm, 16, 8)
    roi = roi_from_bounds(seg.shape, starts, stops)
    print(f"3-D sample: RoI rows {starts[0]}:{stops[0]}, columns {starts[1]}:{stops[1]}, slices "
          f"{starts[2]}:{stops[2]} (end exclusive)", file=sys.stderr)
    geom = spatial_geometry(image) | {"slice_index": None, "slice_axis": None}
    expls = []
    for method, config in (("pdcr", PdCRConfig(n=n)), ("misure", None)):
        warnings: list[str] = []
        arr, r, lab, pool, volume = volume_context(model, image, image.data, roi, label if method == "pdcr" else None,
                                                    None, method == "pdcr", 8, warnings)
        job = ExplainJob(method, arr, r, 1, config=config, label=lab, pool=pool, geometry=dict(geom),
                         warnings=warnings, **volume)
        expls.append(run_with_bar(job.run(model), job.spec.title, progress))
    p_expl, m_expl = expls
    files = [write_map(out_dir / "segmentation.nii.gz", seg, image)]
    files += p_expl.save(out_dir / "pdcr_map.nii.gz", like=image)
    files += m_expl.save(out_dir / "misure_saliency.nii.gz", like=image)
    z = (starts[2] + stops[2]) // 2

    def at_z(e: Any) -> Any:
        return dataclasses.replace(e, map=e.map[..., z], roi=e.roi[..., z] if e.roi is not None else None,
                                   maps={k: v[..., z] for k, v in e.maps.items()})

    fig = save_demo_figure(out_dir / "demo.png", image.data[0][..., z], seg[..., z], [at_z(p_expl), at_z(m_expl)],
                           f"napari-seg-explain 3-D demo: MNI152 (3 mm), white matter, 16-voxel RoI; slice {z}")
    files.append(fig)
    summary = {"command": "demo", "mode": "3d", "output": str(out_dir), "files": [str(f) for f in files],
               "roi_bounds": [list(starts), list(stops)]}
    for key, e in (("pdcr", p_expl), ("misure", m_expl)):
        names = ("M0", "negative_share", "positive_share", "irrelevant_share", "screening", "n_blocks_screened") \
            if key == "pdcr" else ("dice_explained", "perturbation_ratio", "dilations")
        summary[key] = {k: e.stats[k] for k in names if k in e.stats} | {
            "forward_passes": e.provenance["forward_passes"], "wall_time_s": e.provenance["wall_time_s"]}
    return summary
