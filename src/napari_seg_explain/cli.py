"""``seg-explain``: segment and explain from the command line.

Forms (a contract for scripts)::

    seg-explain segment IMAGE --model MODEL -o MASK
    seg-explain pdcr IMAGE --model MODEL --roi-box Y0 X0 Y1 X1 [--roi-mask MASK] [--label LABEL] [--class L]
                     [--slice Z] [--pool DIR_OR_FILE ...] [--patch 8] [--screen 3] [--tau 0.02] [--n 50]
                     [--seed 0] [--device auto] -o MAP
    seg-explain misure IMAGE --model MODEL [--class L] [--slice Z] [--seed 0] [--device auto] -o MAP
    seg-explain demo [-o DIR]
    seg-explain napari

A progress bar goes to stderr, a one-line JSON summary to stdout, the map to ``-o`` (``.nii.gz``, ``.nii``
or ``.npy``) with a JSON sidecar beside it. User errors exit with code 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from .core.errors import Cancelled, UserError

EXIT_USER_ERROR = 2


def _global_flags(suppress: bool) -> argparse.ArgumentParser:
    """--debug/--quiet, accepted before or after the sub-command."""
    p = argparse.ArgumentParser(add_help=False)
    default = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--debug", action="store_true", help="show tracebacks", **default)
    p.add_argument("--quiet", action="store_true", help="no progress bar", **default)
    return p


def _add_common(p: argparse.ArgumentParser, *, output_help: str) -> None:
    p.add_argument("image", help="image file (NIfTI, PNG/JPEG/TIFF/BMP, NRRD, MHA) or DICOM folder")
    p.add_argument("--model", required=True, help="model file (.pt/.ts TorchScript, .pt2, .safetensors/.pth "
                                                  "state dict + model card, .onnx) or its .yaml card")
    p.add_argument("--card", help="model card (default: <model>.yaml beside the model)")
    p.add_argument("--slice", type=int, dest="slice_index", metavar="Z",
                   help="axial slice (index along the last axis) of a volume")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("-o", "--output", required=True, help=output_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-explain", description="Explain what a segmentation model looked at.",
                                     parents=[_global_flags(suppress=False)])
    sub = parser.add_subparsers(dest="command", required=True)
    flags = [_global_flags(suppress=True)]

    seg = sub.add_parser("segment", parents=flags, help="segment an image or volume")
    _add_common(seg, output_help="mask file (.nii.gz, .nii, .npy)")
    seg.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")

    pd = sub.add_parser("pdcr", parents=flags, help="PdCR causal map of a RoI (Jiang et al. 2026)")
    _add_common(pd, output_help="map file (.nii.gz, .nii, .npy); a JSON sidecar is written beside it")
    _add_target(pd)
    pd.add_argument("--label", help="ground truth image whose non-zero pixels are the class (paper's Dice)")
    pd.add_argument("--pool", nargs="+", metavar="DIR_OR_FILE",
                    help="images to crop replacement blocks from (default: other slices of the volume; "
                         "for a lone 2-D image, the image itself)")
    pd.add_argument("--pool-exclude", type=int, default=5, help="neighbouring slices left out of a volume pool")
    pd.add_argument("--patch", type=int, default=8, help="block size in pixels")
    pd.add_argument("--screen", type=int, default=3, help="screening draws S")
    pd.add_argument("--tau", type=float, default=0.02, help="threshold in Dice points")
    pd.add_argument("--n", type=int, default=50, help="draws N for a block that passes screening")
    pd.add_argument("--batch-size", type=int, default=64, help="perturbed images per forward pass")
    pd.add_argument("--seed", type=int, default=0)

    mi = sub.add_parser("misure", parents=flags,
                        help="MiSuRe minimally sufficient region (Hasany et al. 2024)")
    _add_common(mi, output_help="saliency file (.nii.gz, .nii, .npy); sufficient region and sidecar beside it")
    _add_target(mi, roi_required=False)
    mi.add_argument("--iterations", type=int, default=100)
    mi.add_argument("--seed", type=int, default=0)

    sub.add_parser("napari", parents=flags,
                   help="open napari with the sample scan, the sample model and the plugin docked")

    demo = sub.add_parser("demo", parents=flags,
                          help="segment a sample slice, explain a RoI with PdCR and MiSuRe, write a figure")
    demo.add_argument("-o", "--output", default="seg-explain-demo", help="output folder")
    demo.add_argument("--n", type=int, default=50, help="PdCR draws N (paper: 50)")
    demo.add_argument("--device", default="auto")
    return parser


def _add_target(p: argparse.ArgumentParser, roi_required: bool = True) -> None:
    p.add_argument("--roi-box", nargs=4, type=int, metavar=("Y0", "X0", "Y1", "X1"),
                   help="RoI box in pixel (row, column) coordinates of the explained 2-D image, end exclusive")
    p.add_argument("--roi-mask", help="image whose non-zero pixels are the RoI (same size as the image)")
    p.add_argument("--class", dest="target", default="1", help="class index or name (default 1)")
    p.set_defaults(roi_required=roi_required)


# ------------------------------------------------------------------------------------------ helpers
class _Bar:
    """tqdm progress bar on stderr driven by Progress events."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc, self.bar = enabled, desc, None

    def __call__(self, ev: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=ev.total, desc=self.desc, unit="img", file=sys.stderr, dynamic_ncols=True)
        self.bar.total = ev.total
        self.bar.set_postfix_str(ev.stage, refresh=False)
        self.bar.update(ev.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_with_bar(gen: Any, title: str, enabled: bool = True) -> Any:
    """Drive an explainer generator with a progress bar on stderr; return its result."""
    from .core.progress import drive

    bar = _Bar(enabled, title)
    try:
        return drive(gen, bar)
    finally:
        bar.close()


def _save_summary(command: str, expl: Any, out: Path, image: Any, z: int | None) -> dict[str, Any]:
    return _summary(command, expl.save(out, like=image, slice_index=z), expl)


def _inputs(args: argparse.Namespace) -> list[Path]:
    """Every file the command reads (pool folders contribute their files)."""
    named = [args.image, args.model, getattr(args, "card", None), getattr(args, "label", None),
             getattr(args, "roi_mask", None), *(getattr(args, "pool", None) or [])]
    out: list[Path] = []
    for p in (Path(n) for n in named if n):
        out += list(p.iterdir()) if p.is_dir() else [p]
    if Path(args.model).suffix.lower() not in (".yaml", ".yml"):
        out += [Path(args.model).with_suffix(".yaml"), Path(args.model).with_suffix(".yml")]
    return [p.resolve() for p in out]


def _check_output(path: str, args: argparse.Namespace) -> Path:
    """The output path is writable in format and folder, and none of its files would replace an input."""
    from .core.results import split_suffix

    out = Path(path)
    stem, suffix = split_suffix(out)
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist; create it first")
    mine = {out.resolve(), stem.with_name(stem.name + ".json").resolve()}
    for inp in _inputs(args):
        if inp in mine or (inp.parent == out.parent.resolve() and inp.name.startswith(stem.name + "_")
                           and inp.name.endswith(suffix)):
            raise UserError(f"-o {out} would overwrite the input {inp}; choose another output name")
    return out


def _load(args: argparse.Namespace):
    from .core.images import read_image
    from .core.models import load_model

    image = read_image(args.image)
    model = load_model(args.model, args.card, device=args.device)
    model.check_channels(image.n_channels)
    return image, model


def _slice_of(image, z: int | None, what: str = "IMAGE") -> int | None:
    if image.spatial_ndim == 3 and z is None:
        raise UserError(f"{what} is a volume of {image.n_slices} slices: choose one with --slice Z "
                        f"(0..{image.n_slices - 1})")
    if image.spatial_ndim == 2 and z not in (None, 0):
        raise UserError(f"--slice {z} given, but {what} is a 2-D image")
    return z


def _plane(path: str, z: int | None, shape: tuple[int, int], what: str):
    """A 2-D plane (label or RoI mask) from a file: the slice z of a volume, or a 2-D image."""
    from .core.images import read_image

    img = read_image(path)
    arr = img.slice2d(z if img.spatial_ndim == 3 else None)[0]
    if arr.shape != shape:
        raise UserError(f"{what} {path} has shape {arr.shape} but the explained image is {shape}")
    return arr


def _roi(args: argparse.Namespace, z: int | None, shape: tuple[int, int]):
    from .core.rois import roi_from_box, roi_from_mask

    roi = None
    if args.roi_box:
        roi = roi_from_box(shape, *args.roi_box)
    if args.roi_mask:
        mask = roi_from_mask(_plane(args.roi_mask, z, shape, "--roi-mask"), shape)
        roi = mask if roi is None else roi_from_mask(mask & roi, shape)
    if roi is None and args.roi_required:
        raise UserError("give the region to explain with --roi-box Y0 X0 Y1 X1 or --roi-mask MASK")
    return roi


def _summary(cmd: str, files: list[Path], expl=None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"command": cmd, "output": str(files[0]), "files": [str(f) for f in files]}
    if expl is not None:
        keep = ("M0", "metric", "positive_share", "negative_share", "irrelevant_share", "min_ate", "max_ate",
                "n_blocks", "n_blocks_screened_in", "dice_explained", "perturbation_ratio", "dilations")
        out |= {k: expl.stats[k] for k in keep if k in expl.stats}
        out |= {"forward_passes": expl.provenance["forward_passes"], "wall_time_s": expl.provenance["wall_time_s"],
                "device": expl.provenance["model"]["device"], "warnings": expl.warnings}
    return out | extra


def _geometry(image, z: int | None) -> dict[str, Any]:
    from .core.images import spatial_geometry

    return spatial_geometry(image) | {"slice_index": z, "slice_axis": image.spatial_ndim - 1 if z is not None else None}


# -------------------------------------------------------------------------------------- commands
def cmd_segment(args: argparse.Namespace) -> dict[str, Any]:
    from .core.images import write_map

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")

    out = _check_output(args.output, args)
    image, model = _load(args)
    if args.slice_index is not None:
        _slice_of(image, args.slice_index)
    bar = _Bar(not args.quiet, "segment")
    from .core.progress import Progress

    labels = model.segment(image, args.slice_index, batch_size=args.batch_size,
                           progress=lambda d, t: bar(Progress(d, t, "segment")))
    bar.close()
    write_map(out, labels, image, slice_index=args.slice_index)
    counts = {str(k): int((labels == k).sum()) for k in sorted(set(labels.ravel().tolist()))}
    return {"command": "segment", "output": str(out), "shape": list(labels.shape), "voxels_per_class": counts,
            "forward_passes": model.forward_passes, "device": str(model.device)}


def cmd_pdcr(args: argparse.Namespace) -> dict[str, Any]:
    from .core.explainers.pdcr import PdCRConfig, pdcr
    from .core.perturb.pools import pool_from_paths, pool_from_volume

    out = _check_output(args.output, args)
    cfg = PdCRConfig(patch=args.patch, screen=args.screen, tau=args.tau, n=args.n, seed=args.seed,
                     batch_size=args.batch_size)
    image, model = _load(args)
    z = _slice_of(image, args.slice_index)
    plane = image.slice2d(z)
    shape = plane.shape[1:]
    roi = _roi(args, z, shape)
    label = _plane(args.label, z, shape, "--label") if args.label else None
    target = model.card.class_index(args.target)
    if args.pool:
        pool = pool_from_paths(model, args.pool, cfg.patch, exclude_source=args.image)
    elif image.spatial_ndim == 3:
        pool = pool_from_volume(model, image, z, cfg.patch, exclude=args.pool_exclude)
    else:
        pool = None  # the image itself, with a warning recorded in the result
    gen = pdcr(model, plane, roi, target, pool=pool, label=label, config=cfg, geometry=_geometry(image, z))
    return _save_summary("pdcr", run_with_bar(gen, "PdCR", not args.quiet), out, image, z)


def cmd_misure(args: argparse.Namespace) -> dict[str, Any]:
    from .core.explainers.misure import MiSuReConfig, misure

    out = _check_output(args.output, args)
    cfg = MiSuReConfig(seed=args.seed, iterations=args.iterations)
    image, model = _load(args)
    z = _slice_of(image, args.slice_index)
    plane = image.slice2d(z)
    roi = _roi(args, z, plane.shape[1:])
    gen = misure(model, plane, roi, model.card.class_index(args.target), config=cfg, geometry=_geometry(image, z))
    return _save_summary("misure", run_with_bar(gen, "MiSuRe", not args.quiet), out, image, z)


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from .demo import run_demo

    return run_demo(Path(args.output), n=args.n, device=args.device, progress=not args.quiet)


def cmd_napari(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from .napari.launch import main as launch
    except ImportError as exc:
        raise UserError(f"napari cannot start here ({exc}); install a Qt binding: pip install 'napari[pyqt6]'") from exc
    launch()
    return {"command": "napari"}


COMMANDS = {"segment": cmd_segment, "pdcr": cmd_pdcr, "misure": cmd_misure, "demo": cmd_demo, "napari": cmd_napari}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    args.debug, args.quiet = getattr(args, "debug", False), getattr(args, "quiet", False)
    try:
        summary = COMMANDS[args.command](args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback with --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    from .core.results import _jsonable

    print(json.dumps(_jsonable(summary)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
