"""Peak resident memory of a 512x512 PdCR run with a 10,000-image pool (issue 11: "stays under 2 GB on CPU").

    python benchmarks/bench_memory.py                      # every pool kind, each in its own process
    python benchmarks/bench_memory.py --pool tiles8        # one kind: tiles8 | images64 | mixed | folder
    python benchmarks/bench_memory.py --pool mixed --tiles 1000   # a smaller pool

Pools (raw intensities 0..255, one channel): ``tiles8`` 10,000 pre-cut 8x8 tiles (as the PdCR authors cut
them, in memory), ``folder`` the same tiles as PNG files in a temporary folder (``pool_from_paths``, what the
CLI reads), ``images64`` 10,000 images of 64x64, ``mixed`` 10,000 8x8 tiles plus 10 whole 512x512 images
(a folder with tiles and full slices: padded to the largest image this would be 10,010 x 512 x 512 float32).

The model is a MONAI ``UNet`` (2-D, channels 4/8/16, 2 outputs) built here, untrained (seeded): the peak,
not the map, is measured. PdCR runs with small N and S on a 32x32 RoI in the middle (``--n 2 --screen 1``:
every block outside the RoI is screened once), batch size automatic (the CPU candidates go up to 64
perturbed 512x512 images per pass). Each kind runs in a fresh process, so ``ru_maxrss`` is that run's peak;
one JSON line per kind: ``peak_rss_mb`` (whole process, torch included), ``baseline_rss_mb`` (after
imports and model), ``pool_tensor_mb`` (what the pool holds), seconds, pool and image sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

KINDS = ("tiles8", "images64", "mixed", "folder")


def _rss_mb() -> float:
    """Current resident memory (MB) from /proc, else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _peak_mb()


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _pool_arrays(kind: str, n: int, size: int, rng):
    import numpy as np

    if kind in ("tiles8", "folder"):
        return [a for a in rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)]
    if kind == "images64":
        return [a for a in rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)]
    tiles = [a for a in rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)]
    return tiles + [a for a in rng.integers(0, 256, (10, size, size), dtype=np.uint8)]


def run_one(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from monai.networks.nets import UNet

    from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.models import SegmentationModel
    from napari_seg_explain.core.perturb.pools import pool_from_arrays, pool_from_paths
    from napari_seg_explain.core.rois import roi_from_bounds

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
               num_res_units=0)
    card = ModelCard(name="bench-unet-2d", spatial_dims=2, in_channels=1, classes=("background", "structure"),
                     normalization="minmax")
    model = SegmentationModel(net, card, device=args.device)
    rng = np.random.default_rng(0)
    s = args.size
    yy, xx = np.mgrid[:s, :s]
    image = (100 + 80 * np.exp(-((yy - s / 2) ** 2 + (xx - s / 2) ** 2) / (2 * (s / 8) ** 2))
             + rng.normal(0, 10, (s, s))).astype(np.float32)[None]
    c = s // 2
    roi = roi_from_bounds((s, s), (c - args.roi // 2,) * 2, (c + args.roi // 2,) * 2)
    arrays = _pool_arrays(args.pool, args.tiles, s, rng)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    if args.pool == "folder":
        from PIL import Image as PILImage

        with tempfile.TemporaryDirectory() as tmp:
            for i, a in enumerate(arrays):
                PILImage.fromarray(a).save(os.path.join(tmp, f"bench_{i // 100:03d}_{i % 100:02d}.png"))
            n_pool = len(arrays)
            del arrays
            t0 = time.perf_counter()
            pool = pool_from_paths(model, [tmp], block=8)
    else:
        n_pool = len(arrays)
        pool = pool_from_arrays(model, arrays, block=8, source=f"bench {args.pool}")
        del arrays
    t_pool = time.perf_counter() - t0
    pool_mb = sum(t.numel() * t.element_size() for t in _pool_tensors(pool)) / 2**20
    cfg = PdCRConfig(patch=8, n=args.n, screen=args.screen, batch_size=args.batch_size, seed=0)
    t1 = time.perf_counter()
    expl = explain_pdcr(model, image, roi, 1, pool=pool, config=cfg)
    t_run = time.perf_counter() - t1
    return {"bench": "pdcr_memory", "pool": args.pool, "pool_images": n_pool, "pool_tensor_mb": round(pool_mb, 1),
            "image": [s, s], "roi": [args.roi, args.roi], "n": args.n, "screen": args.screen,
            "forward_passes": model.forward_passes, "batch_size": expl.provenance.get("batch_size"),
            "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(_peak_mb(), 1),
            "pool_seconds": round(t_pool, 2), "pdcr_seconds": round(t_run, 2), "threads": torch.get_num_threads(),
            "device": str(model.device), "torch": torch.__version__}


def _pool_tensors(pool):
    groups = getattr(pool, "groups", None)
    return list(groups) if groups is not None else [pool.images]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", choices=("all",) + KINDS, default="all")
    ap.add_argument("--tiles", type=int, default=10_000, help="pool images (mixed: tiles, plus 10 whole images)")
    ap.add_argument("--size", type=int, default=512, help="explained image size (square)")
    ap.add_argument("--roi", type=int, default=32, help="RoI side in pixels, in the middle")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--screen", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=0, help="0 = automatic (the default everywhere)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit-mb", type=float, default=2048, help="exit 1 when a peak exceeds this")
    args = ap.parse_args()
    if args.pool != "all":
        print(json.dumps(run_one(args)), flush=True)
        return
    worst = 0.0
    for kind in KINDS:
        cmd = [sys.executable, __file__, "--pool", kind] + [a for a in sys.argv[1:] if a not in ("--pool", "all")]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = (out.stdout.strip().splitlines() or [""])[-1]
        if out.returncode or not line.startswith("{"):
            print(json.dumps({"bench": "pdcr_memory", "pool": kind, "error": out.stderr.strip()[-400:]}), flush=True)
            worst = float("inf")
            continue
        print(line, flush=True)
        worst = max(worst, json.loads(line)["peak_rss_mb"])
    if worst > args.limit_mb:
        sys.exit(1)


if __name__ == "__main__":
    main()
