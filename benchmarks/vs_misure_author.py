"""MiSuRe: our implementation vs its first author's own function, on the same model and the same slices.

    git clone https://github.com/for-submission-2023/thesis /some/where/thesis   # or: git archive of a mirror
    python benchmarks/vs_misure_author.py --author-code /some/where/thesis [--slices N] [--seed 0]
        [--ours KEY=VALUE ...] [--theirs KEY=VALUE ...] [--out JSON]

Not a test: it needs the first author's thesis repository (not shipped here; it has no licence, so none of
its code is copied into this project: it is imported from ``--author-code`` at run time). It imports
``misure`` and ``dilate_to_sufficient`` from ``utils/misure.py`` of that folder, runs both implementations on
the same held-out slices of the shipped 2-D sample model and prints ONE JSON line on stdout (progress and
their own prints go to stderr): per side, the dilation count, Dice explained, perturbation ratio and seconds
(per slice and their mean), and the agreement: Pearson of the two saliency maps, Dice of the two sufficient
regions, Dice of the two minimal regions (non-zero saliency), and the overlap of the two top-10 % sets.

Choices (so both codes see the same thing)
------------------------------------------
* Model: the sample model ``sample_data/model/mni152_wm_unet.yaml`` (MONAI 2-D UNet, 2 classes, softmax;
  card: per-image min-max normalisation, pad to 128x128), on CPU, loaded with ``load_model``.
* Inputs: held-out axial slices of ``sample_data/mni152_t1.nii.gz`` (the card's ``heldout_slices``,
  z = 56-71, never seen in training; see ``sample_data/README.md``). ``--slices N`` takes N of the 16,
  evenly spaced (default: all 16). Class 1 (white matter) on the whole image (no RoI: the paper's setting).
* Input space. Their function takes a ``(C, H, W)`` tensor the model takes as it is. We give it the card's
  normalised slice ``model.normalize(x)``, the same tensor our ``misure`` masks (``X * M`` on the normalised
  input, 0 = the image minimum); the wrapper does not re-normalise masked copies, as ours does not.
* Model wrapper for their code: a ``torch.nn.Module`` returning ``log`` of our probabilities
  (``forward_normalized``), i.e. logits up to a per-pixel constant: their ``argmax`` gives our prediction
  (p_1 > 0.5 on 2 classes), their ``Softmax(dim=1)`` gives back our probabilities, and their smp
  ``DiceLoss`` (``from_logits=True``) then applies its own softmax on top, exactly as it does on a real
  logits model (their code's double softmax is theirs, kept).
* Their call: ``misure(image, wrapped, target=1, device='cpu')`` with their defaults (lr 0.01, alpha_fg =
  alpha_bg = 1 with class_conditioning, l1_coeff 0.1 on the mean over the whole image, tv_coeff 0,
  iterations 100, mask 224x224, value 0.5, Dice threshold 0.9, 7x7 ellipse; then their threshold sweep
  0..0.5 keeping the highest cut within 0.1 Dice of the uncut map). ``--theirs KEY=VALUE`` overrides them.
* Their sufficient region: their ``misure`` returns only the map and the dilation count, so the region is
  rebuilt the way their ``dilate_to_sufficient`` builds it (their predicted mask dilated ``counter`` times
  with ``cv2.dilate`` and their 7x7 ``MORPH_ELLIPSE``).
* Their dependencies: ``cv2`` (opencv-python-headless), ``medpy.metric.binary.dc`` and
  ``segmentation_models_pytorch.losses`` must be importable. ``--deps DIR`` adds DIR to ``sys.path``
  (e.g. ``pip install --no-deps --target DIR opencv-python-headless``). If ``segmentation_models_pytorch``
  cannot be imported whole (its encoders need timm/torchvision), ``--smp-src DIR`` (an unpacked smp wheel)
  loads only its ``losses`` subpackage, which needs torch alone; ``--medpy-src DIR`` (an unpacked medpy sdist)
  loads only ``medpy/metric/binary.py`` (numpy, scipy). torchvision is stubbed when it does not import (their
  ``transforms.GaussianBlur`` is used only with ``gaussian_sigma``, None by default). The package ``utils``
  of their repository is not imported whole (its ``__init__`` pulls their training code): a bare package
  pointing at their ``utils/`` folder stands in, so ``utils.misure`` and ``utils.xai_metrics`` load as files.
* Same measures for both sides (ours, ``evaluate``): Dice explained = hard Dice of the prediction on
  ``X * S`` (soft saliency S) against the prediction on X, perturbation ratio = non-zero pixels of S / object
  pixels. Their own measure (``compute_paired_metric``: X multiplied by the binary ``S > 0``) is reported for
  both sides too (``*_binary``).
* Top-10 %: in each map the k = 10 % of the image's pixels with the largest values (ties: raster order,
  stable sort); overlap = |A ∩ B| / k. ``pieces``: connected pieces (8-connectivity) of the non-zero saliency.
* Timing: one warm-up forward pass first; their tqdm bar and prints go to stderr.
  ``OMP_WAIT_POLICY=PASSIVE`` is set. Seeds: both methods are deterministic; ``--seed`` is passed to ours and
  ``torch.manual_seed`` before their call.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
import types
from dataclasses import asdict, fields
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CARD = REPO / "sample_data" / "model" / "mni152_wm_unet.yaml"
VOLUME = REPO / "sample_data" / "mni152_t1.nii.gz"


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _bare_package(name: str, folder: Path) -> types.ModuleType:
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(folder)]
    sys.modules[name] = pkg
    return pkg


def import_author(code_dir: Path, deps: list[Path], smp_src: Path | None, medpy_src: Path | None):
    """``utils.misure`` and ``utils.xai_metrics`` of their repository, loaded as files (see the docstring)."""
    if not (code_dir / "utils" / "misure.py").is_file():
        sys.exit(f"{code_dir} has no utils/misure.py: pass --author-code the root of the thesis repository")
    for d in deps:
        sys.path.insert(0, str(d))
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # absent, or built for another torch ("operator torchvision::nms does not exist")
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
        tv.transforms = tr
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tr})
        log("torchvision does not import: stubbed (their code uses it only with gaussian_sigma)")
    try:
        import segmentation_models_pytorch  # noqa: F401
    except Exception:
        if smp_src is None:
            sys.exit("segmentation_models_pytorch does not import: pass --smp-src (an unpacked smp wheel)")
        for k in [k for k in sys.modules if k.startswith("segmentation_models_pytorch")]:
            del sys.modules[k]
        smp = _bare_package("segmentation_models_pytorch", smp_src / "segmentation_models_pytorch")
        import segmentation_models_pytorch.losses as losses

        smp.losses = losses
        log(f"segmentation_models_pytorch: only its losses subpackage, from {smp_src}")
    try:
        from medpy.metric.binary import dc  # noqa: F401
    except Exception:
        if medpy_src is None:
            sys.exit("medpy does not import: pass --medpy-src (an unpacked medpy sdist)")
        medpy = _bare_package("medpy", medpy_src / "medpy")
        metric = _bare_package("medpy.metric", medpy_src / "medpy" / "metric")
        medpy.metric = metric
        metric.binary = _load_file("medpy.metric.binary", medpy_src / "medpy" / "metric" / "binary.py")
        log(f"medpy: only medpy/metric/binary.py, from {medpy_src}")
    import cv2  # noqa: F401  (their dilation and resizing; must be the real one)

    _bare_package("utils", code_dir / "utils")
    xai = _load_file("utils.xai_metrics", code_dir / "utils" / "xai_metrics.py")
    mis = _load_file("utils.misure", code_dir / "utils" / "misure.py")
    return mis, xai


def make_wrapper(model):
    """(B, C, H, W) normalised input -> log-probabilities (B, K, H, W): logits for their code."""
    import torch

    class Wrapped(torch.nn.Module):
        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return torch.log(model.forward_normalized(x).clamp_min(1e-12))

    return Wrapped()


def parse_kv(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def dice_np(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def top_overlap(a: np.ndarray, b: np.ndarray, share: float = 0.10) -> float:
    k = max(1, int(round(share * a.size)))
    ta = set(np.argsort(-a.ravel(), kind="stable")[:k].tolist())
    tb = set(np.argsort(-b.ravel(), kind="stable")[:k].tolist())
    return len(ta & tb) / k


def pieces(sal: np.ndarray) -> int:
    """Connected pieces (8-connectivity) of the non-zero saliency: how speckled a map is."""
    from scipy import ndimage

    return int(ndimage.label(sal > 0, structure=np.ones((3, 3)))[1])


def evaluate(model, x, pred, sal: np.ndarray) -> dict:
    """Dice explained (soft X * S and binary X * (S > 0)) and perturbation ratio, the same for both sides."""
    import torch

    from napari_seg_explain.core.models import class_probability

    s = torch.as_tensor(sal, dtype=torch.float32)
    with torch.inference_mode():
        p_soft = class_probability(model.forward_normalized(x * s), 1)[0].numpy() > 0.5
        p_bin = class_probability(model.forward_normalized(x * (s > 0).float()), 1)[0].numpy() > 0.5
    return {"dice_explained": dice_np(p_soft, pred), "dice_explained_binary": dice_np(p_bin, pred),
            "perturbation_ratio": float((sal > 0).sum() / max(pred.sum(), 1))}


def mean_of(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--author-code", required=True, type=Path, help="root of the thesis repository (utils/misure.py)")
    ap.add_argument("--slices", type=int, default=16, help="how many held-out slices, evenly spaced (1-16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ours", nargs="*", default=[], metavar="KEY=VALUE", help="MiSuReConfig overrides")
    ap.add_argument("--theirs", nargs="*", default=[], metavar="KEY=VALUE", help="keyword overrides of their misure")
    ap.add_argument("--deps", nargs="*", type=Path, default=[], help="folders added to sys.path (e.g. cv2)")
    ap.add_argument("--smp-src", type=Path, help="unpacked segmentation_models_pytorch wheel (losses only)")
    ap.add_argument("--medpy-src", type=Path, help="unpacked medpy sdist (metric/binary.py only)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()

    import torch

    from napari_seg_explain import load_model, read_image
    from napari_seg_explain.core.explainers.misure import MiSuReConfig, explain_misure
    from napari_seg_explain.core.models import class_probability

    mis, xai = import_author(args.author_code.resolve(), args.deps, args.smp_src, args.medpy_src)
    import cv2  # after --deps

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = load_model(CARD, device="cpu")
    import yaml

    training = (yaml.safe_load(CARD.read_text()) or {}).get("training") or {}
    held = [int(z) for z in training.get("heldout_slices") or range(56, 72)]
    n = max(1, min(args.slices, len(held)))
    zs = [held[int(round(i))] for i in np.linspace(0, len(held) - 1, n)]
    cfg = MiSuReConfig(**({"seed": args.seed} | parse_kv(args.ours)))
    their_kw = {"target": 1, "device": "cpu"} | parse_kv(args.theirs)
    vol = read_image(VOLUME)
    wrapped = make_wrapper(model)
    their_defaults = {p: v.default for p, v in __import__("inspect").signature(mis.misure).parameters.items()
                      if v.default is not v.empty}

    rows = []
    for z in zs:
        img = vol.slice2d(z)  # (1, H, W) float32
        with torch.inference_mode():
            x = model.normalize(torch.as_tensor(img)[None])
            pred = (class_probability(model.forward_normalized(x), 1)[0].numpy() > 0.5)
        log(f"slice {z}: {int(pred.sum())} white-matter pixels predicted")

        t0 = time.perf_counter()
        ours = explain_misure(model, img, None, 1, config=cfg)
        t_ours = time.perf_counter() - t0
        sal_o = ours.map.astype(np.float32)
        sr_o = ours.maps["sufficient_region"].astype(bool)

        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            cam, counter = mis.misure(x[0].clone(), wrapped, **their_kw)
        t_theirs = time.perf_counter() - t0
        sal_t = np.asarray(cam, dtype=np.float32)
        # their sufficient region, rebuilt as dilate_to_sufficient builds it (it is not returned)
        fs = int(their_kw.get("filter_size", their_defaults.get("filter_size", 7)))
        struct = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (fs, fs))
        sr_t = pred.astype(np.float64)
        for _ in range(int(counter)):
            sr_t = cv2.dilate(sr_t, struct, iterations=1)
        sr_t = sr_t > 0
        with contextlib.redirect_stdout(sys.stderr):
            d_their_own, r_their_own = xai.compute_paired_metric(x[0], wrapped, sal_t, 1, threshold=0, device="cpu")

        eo, et = evaluate(model, x, pred, sal_o), evaluate(model, x, pred, sal_t)
        row = {
            "slice": int(z), "object_pixels": int(pred.sum()),
            "dilations_ours": int(ours.stats["dilations"]), "dilations_theirs": int(counter),
            "dice_explained_ours": round(eo["dice_explained"], 4), "dice_explained_theirs": round(et["dice_explained"], 4),
            "dice_explained_binary_ours": round(eo["dice_explained_binary"], 4),
            "dice_explained_binary_theirs": round(et["dice_explained_binary"], 4),
            "dice_explained_theirs_own_metric": round(float(d_their_own), 4),
            "perturbation_ratio_ours": round(eo["perturbation_ratio"], 4),
            "perturbation_ratio_theirs": round(et["perturbation_ratio"], 4),
            "seconds_ours": round(t_ours, 2), "seconds_theirs": round(t_theirs, 2),
            "pearson_saliency": None if (r := pearson(sal_o, sal_t)) is None else round(r, 4),
            "dice_sufficient_regions": round(dice_np(sr_o, sr_t), 4),
            "dice_minimal_regions": round(dice_np(sal_o > 0, sal_t > 0), 4),
            "top10_overlap": round(top_overlap(sal_o, sal_t), 4),
            "stats_ours_dice_explained": round(float(ours.stats["dice_explained"]), 4),
            "pieces_ours": pieces(sal_o), "pieces_theirs": pieces(sal_t),
            "sufficient_region_share_ours": round(float(sr_o.mean()), 4),
        }
        log(json.dumps(row))
        rows.append(row)

    keys = [k for k in rows[0] if k not in ("slice",)]
    result = {
        "slices": zs, "model": str(CARD.relative_to(REPO)), "target_class": 1, "seed": args.seed,
        "ours_config": {k: v for k, v in asdict(cfg).items() if k in {f.name for f in fields(cfg)}},
        "theirs_kwargs": their_defaults | their_kw,
        "mean": {k: mean_of(rows, k) for k in keys},
        "per_slice": rows,
    }
    result["theirs_kwargs"].pop("sweep_thresholds", None)
    result["theirs_kwargs"]["sweep_thresholds"] = list(their_kw.get("sweep_thresholds",
                                                                   their_defaults.get("sweep_thresholds", ())))
    line = json.dumps(result)
    print(line, flush=True)
    if args.out:
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
