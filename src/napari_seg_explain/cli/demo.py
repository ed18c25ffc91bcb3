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
