"""PdCR: our exact mode vs the PdCR authors' own function, on the same model, image, label, RoI and tiles.

    git clone https://github.com/lcmmai/PdCR /some/where/PdCR
    python benchmarks/vs_authors.py --authors-code /some/where/PdCR [--tiles DIR] [--slice 65]
        [--roi Y0 X0 Y1 X1] [--seeds 0 1] [--wrap fixed|renorm] [--out JSON]

Not a test: it needs the authors' repository (not shipped here; Apache-2.0, cloned by the user). It imports
``occlusion_sensitivity_optimized`` and ``set_seed`` from ``utils_.py`` of that clone, runs it once per seed,
runs our ``explain_pdcr`` once (seed 0), and prints ONE JSON line on stdout (progress goes to stderr):
Pearson correlation ours-vs-theirs (for each of their runs, their mean, and against the average of their
maps), theirs-vs-theirs (the Monte-Carlo noise floor), sign agreement, red (ATE < 0, supports the RoI) /
blue (ATE > 0) / irrelevant (ATE = 0) shares, min ATE, base Dice, wall times and the ratio theirs/ours
(> 1: ours is faster). Only blocks evaluated by both are compared: our map is NaN on the RoI and on blocks
touching it; theirs is 0 there (and on whole-block grids of 8 both evaluate the same blocks otherwise).

Choices (so both codes see the same thing)
------------------------------------------
* Model: the sample model ``sample_data/model/mni152_wm_unet.yaml`` (MONAI 2-D UNet with instance
  normalisation; card: per-image min-max normalisation, pad to 128x128, softmax over 2 classes), on CPU.
* Intensity space. The authors feed ``ToTensor()`` images: uint8 / 255, and paste uint8 / 255 tiles straight
  into that tensor; the model is called on it with no further normalisation (their transform is a fixed
  per-pixel map, so image and tiles share one intensity scale). Our card's normalisation is per-image min-max,
  so we make everything 8-bit as ``sample_data/build_sample_data.py`` does for ``sample_data/slices/`` (min-max
  over the whole volume, rounded to uint8): the explained slice (for the default slice 65 this is exactly
  ``sample_data/slices/mni152_axial_z065.png``) and every tile. Their side gets ``uint8 / 255`` tensors
  (image (1,1,H,W), tiles (N,1,8,8), the label (1,1,H,W) 0/1), as their loader would give for greyscale
  PNGs (``convert('L')`` instead of their ``convert('RGB')``: the model has one input channel).
  Our side gets the same uint8 slice as float32 (0..255); min-max is scale-invariant, so the model sees the
  identical normalised image on both sides (checked: the two base Dice values must be equal).
* Model wrapper for their code (``--wrap``): a ``torch.nn.Module`` taking their (B,1,H,W) batch and
  returning the white-matter probability (B,1,H,W), which their ``> 0.5`` binarises (= argmax of 2 classes).
  ``fixed`` (default): the card's min-max with the explained image's own min/max, applied as one fixed affine
  map to every perturbed copy -- the analogue of their fixed ``/255``: tiles land in the image's normalised
  space, nothing is re-normalised per copy. ``renorm``: the card's per-image min-max re-applied to each
  perturbed copy (a tile brighter than the slice's max would rescale the whole image).
* Tiles (``--tiles`` not given): cut with the authors' recipe by ``benchmarks/make_tile_folder.py`` into a
  temporary folder: grid-aligned 8x8 blocks, 100 distinct ones per *other* slice (not the explained slice nor
  its +-5 neighbours; slices with brain), then a random 1,000 of them (like their 1,000-tile demo folder),
  constant background tiles kept, 8-bit greyscale PNG. Their side loads them with their loader's semantics
  (every ``*.png``, /255; sorted by name for reproducibility -- the tile index is drawn uniformly, so order
  does not change the distribution). Our side loads the same folder with ``pool_from_paths(model, [dir], 8)``
  as the installed package does it (reported as ``ours``; ``our_pool`` says which semantics it has).
  Our pool keeps raw tiles, constant ones included, and maps them with the explained image's statistics
  (``TilePool.bind``): the authors' semantics.
* RoI (``--roi`` not given): the 32x32 box aligned to the 8-pixel grid with the largest white-matter share
  of the label on the slice (first in row-major order on ties). Label: the white-matter label slice, 0/1.
* Parameters: the paper's S = 3, tau = 0.02 Dice points, N = 50, 8x8 blocks, threshold 0.5, hard Dice vs
  the label on the RoI. Seeds: theirs ``set_seed(s)`` (their helper: random, numpy, torch) before each run,
  as their ``main.py`` does; ours ``PdCRConfig(seed=0)``; the tile folder ``--tile-seed`` (0).
* Timing: one warm-up forward pass first; times are the calls only (tile loading/pool building reported
  apart). ``OMP_WAIT_POLICY=PASSIVE`` is set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CARD = REPO / "sample_data" / "model" / "mni152_wm_unet.yaml"
LABEL = REPO / "sample_data" / "mni152_wm_label.nii.gz"
sys.path.insert(0, str(HERE))
from make_tile_folder import make_tiles, volume_8bit  # noqa: E402


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def import_authors(code_dir: Path):
    """``(occlusion_sensitivity_optimized, set_seed)`` from their ``utils_.py``.

    ``utils_`` imports torchvision only for its plotting helpers; if torchvision is absent or does not import
    (PyPI's torchvision beside a CPU build of torch) a stub stands in (the PdCR function does not use it).
    """
    if not (code_dir / "utils_.py").is_file():
        sys.exit(f"{code_dir} has no utils_.py: pass --authors-code the root of a clone of lcmmai/PdCR")
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or broken beside this torch build
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision")
        tr = types.ModuleType("torchvision.transforms")
        fn = types.ModuleType("torchvision.transforms.functional")
        tv.transforms, tr.functional = tr, fn
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})
        log("torchvision does not import: stubbed (only their plotting helpers use it)")
    sys.path.insert(0, str(code_dir))
    import utils_  # type: ignore[import-not-found]

    return utils_.occlusion_sensitivity_optimized, utils_.set_seed


def pick_roi(label: np.ndarray, size: int = 32, step: int = 8) -> tuple[int, int, int, int]:
    h, w = label.shape
    best, box = -1.0, (0, 0, size, size)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            share = float(label[y:y + size, x:x + size].mean())
            if share > best:
                best, box = share, (y, x, y + size, x + size)
    return box


def make_wrapper(model, image_u8: np.ndarray, mode: str):
    """An nn.Module for their code: (B,1,H,W) in uint8/255 units -> white-matter probability (B,1,H,W)."""
    import torch

    lo, hi = float(image_u8.min()) / 255.0, float(image_u8.max()) / 255.0

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls, self.images = 0, 0

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            if mode == "fixed":
                xn = (x.to(model.device, torch.float32) - lo) / (hi - lo if hi > lo else 1.0)
            else:
                xn = model.normalize(x)
            probs = model.forward_normalized(xn)
            self.calls += 1
            self.images += x.shape[0]
            if x.shape[0] == 3 and self.calls % 40 == 0:
                log(f"  theirs: {self.calls} forward calls, {self.images} images")
            return probs[:, 1:2] if probs.shape[1] > 1 else probs[:, 0:1]

    return Wrapped()


def load_tiles_their_way(tile_dir: Path) -> "np.ndarray":
    """Their loader's semantics (every *.png, ToTensor = uint8/255), greyscale, sorted by name."""
    from PIL import Image

    paths = sorted(tile_dir.glob("*.png"))
    return np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32)[None] / 255.0 for p in paths])


def block_values(m: np.ndarray, b: int = 8) -> np.ndarray:
    h, w = m.shape
    return m[: h - h % b: b, : w - w % b: b].astype(np.float64)  # one pixel per whole block


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def shares(v: np.ndarray) -> dict:
    n = max(len(v), 1)
    return {"red": round(100 * float((v < 0).sum()) / n, 2), "blue": round(100 * float((v > 0).sum()) / n, 2),
            "irrelevant": round(100 * float((v == 0).sum()) / n, 2)}


def compare(ours: np.ndarray, theirs: list[np.ndarray]) -> dict:
    """Metrics on the blocks both evaluate (``ours``/``theirs`` are per-block values, ours may hold NaN)."""
    common = ~np.isnan(ours)
    o = ours[common]
    t = [x[common] for x in theirs]
    tmean = np.mean(t, axis=0)
    rs = [pearson(o, x) for x in t]
    out = {
        "n_blocks_common": int(common.sum()),
        "pearson_ours_vs_theirs": [None if r is None else round(r, 4) for r in rs],
        "pearson_ours_vs_theirs_mean": (round(float(np.mean(rs)), 4) if all(r is not None for r in rs) else None),
        "pearson_ours_vs_theirs_avgmap": _r4(pearson(o, tmean)),
        "sign_agreement_ours_vs_theirs": [round(float((np.sign(o) == np.sign(x)).mean()), 4) for x in t],
        "shares": {"ours": shares(o), "theirs": [shares(x) for x in t]},
        "min_ate": {"ours": round(float(o.min()), 4), "theirs": [round(float(x.min()), 4) for x in t]},
    }
    if len(t) >= 2:
        out["pearson_theirs_vs_theirs"] = _r4(pearson(t[0], t[1]))
        out["sign_agreement_theirs_vs_theirs"] = round(float((np.sign(t[0]) == np.sign(t[1])).mean()), 4)
    return out


def _r4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authors-code", required=True, type=Path, help="root of a clone of lcmmai/PdCR")
    ap.add_argument("--tiles", type=Path, help="folder of 8x8 greyscale PNG tiles (default: cut one, see docstring)")
    ap.add_argument("--slice", type=int, default=65, help="axial slice (held-out; default 65)")
    ap.add_argument("--roi", type=int, nargs=4, metavar=("Y0", "X0", "Y1", "X1"),
                    help="32x32 box (default: the grid-aligned box with most white matter)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of their runs")
    ap.add_argument("--seed", type=int, default=0, help="seed of our run")
    ap.add_argument("--tile-seed", type=int, default=0)
    ap.add_argument("--wrap", choices=("fixed", "renorm"), default="fixed")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()

    import torch

    from napari_seg_explain import load_model, pool_from_paths, read_image, roi_from_box
    from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr

    theirs_fn, set_seed = import_authors(args.authors_code.resolve())
    z = args.slice
    vol8 = volume_8bit()
    image_u8 = vol8[:, :, z]
    label = (read_image(LABEL).slice2d(z)[0] != 0).astype(np.uint8)
    h, w = image_u8.shape
    y0, x0, y1, x1 = args.roi or pick_roi(label)
    if (y1 - y0, x1 - x0) != (32, 32):
        sys.exit("their function takes a square RoI of patch_size=32: give --roi Y0 X0 Y0+32 X0+32")
    roi = roi_from_box((h, w), y0, x0, y1, x1)
    log(f"slice {z} ({h}x{w}), RoI rows {y0}:{y1} cols {x0}:{x1}, white-matter share {label[y0:y1, x0:x1].mean():.3f}")

    tmp = None
    tile_info: dict = {}
    if args.tiles is None:
        tmp = tempfile.TemporaryDirectory(prefix="pdcr_tiles_")
        tile_info = make_tiles(tmp.name, z, seed=args.tile_seed, volume=vol8)
        tile_dir = Path(tmp.name)
        log(f"cut {tile_info['n']} tiles ({tile_info['n_constant']} constant) from "
            f"{tile_info['n_slices_used']} slices into {tile_dir}")
    else:
        tile_dir = args.tiles
        tile_info = {"dir": str(tile_dir)}
    tiles = load_tiles_their_way(tile_dir)
    tile_info |= {"n": int(len(tiles)), "n_constant": int((np.ptp(tiles.reshape(len(tiles), -1), axis=1) == 0).sum()),
                  "built": args.tiles is None}

    model = load_model(CARD, device="cpu")
    cfg = PdCRConfig(seed=args.seed)
    with torch.inference_mode():  # warm-up
        model.forward_normalized(model.normalize(torch.as_tensor(image_u8, dtype=torch.float32)[None, None]))

    # ---- theirs
    wrapped = make_wrapper(model, image_u8, args.wrap)
    test_image = torch.as_tensor(image_u8, dtype=torch.float32)[None, None] / 255.0
    gt_image = torch.as_tensor(label, dtype=torch.float32)[None, None]
    tiles_t = torch.as_tensor(tiles)
    maps, base_theirs, t_theirs, passes_theirs = [], [], [], []
    for s in args.seeds:
        log(f"theirs, seed {s} ...")
        set_seed(s)
        wrapped.calls = wrapped.images = 0
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # they print "Base Dice"
            heat, base = theirs_fn(wrapped, test_image, gt_image, y0, x0, tiles_t, patch_size=32, block_size=cfg.patch,
                                   init_patch_num=cfg.screen, patch_num=cfg.n, threshold=cfg.tau)
        t_theirs.append(time.perf_counter() - t0)
        maps.append(heat.cpu().numpy())
        base_theirs.append(float(base))
        passes_theirs.append(int(wrapped.images))
        log(f"  done in {t_theirs[-1]:.1f} s, {wrapped.images} images, base Dice {base:.4f}")
    theirs_blocks = [block_values(m) for m in maps]

    # ---- ours, as it stands
    def run_ours(pool, name: str):
        log(f"ours ({name}) ...")
        t0 = time.perf_counter()
        expl = explain_pdcr(model, image_u8.astype(np.float32)[None], roi, 1, pool=pool, label=label, config=cfg)
        wall = time.perf_counter() - t0
        log(f"  done in {wall:.1f} s, {expl.provenance.get('forward_passes')} images")
        return expl, wall

    t0 = time.perf_counter()
    pool = pool_from_paths(model, [tile_dir], cfg.patch)
    t_pool = time.perf_counter() - t0
    expl, wall_ours = run_ours(pool, "pool_from_paths")
    ours_blocks = block_values(expl.map)
    result = {
        "slice": z, "roi": [y0, x0, y1, x1], "wrap": args.wrap, "seeds_theirs": args.seeds, "seed_ours": args.seed,
        "tiles": tile_info | {"n_in_our_pool": int(pool.images.shape[0])},
        "base_dice": {"ours": round(float(expl.stats.get("M0", float("nan"))), 4), "theirs": [round(b, 4) for b in base_theirs]},
        **compare(ours_blocks, theirs_blocks),
        "wall_s": {"ours": round(float(expl.provenance.get("wall_time_s", wall_ours)), 2),
                   "ours_call": round(wall_ours, 2), "ours_pool_build": round(t_pool, 2),
                   "theirs": [round(t, 2) for t in t_theirs]},
        "ratio_theirs_over_ours": round(float(np.mean(t_theirs)) / wall_ours, 3),
        "forward_passes": {"ours": expl.provenance.get("forward_passes"), "theirs": passes_theirs},
    }

    result["our_pool"] = pool.describe() | {"batch_size": expl.provenance.get("batch_size"),
                                             "batch_mode": expl.provenance.get("batch_mode")}

    line = json.dumps(result)
    print(line, flush=True)
    if args.out:
        args.out.write_text(line + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
