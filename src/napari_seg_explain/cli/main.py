"""``seg-explain``: segment and explain from the command line.

Forms (a contract for scripts)::

    seg-explain segment IMAGE --model MODEL [--slice Z] [--batch-size N|auto] -o MASK
    seg-explain explain METHOD IMAGE --model MODEL [--roi-box ...] [--roi-mask MASK] [--roi-point ...] [--class L]
                        [--slice Z]
                        [method inputs: --label LABEL, --pool DIR_OR_FILE ...] [method parameters] -o MAP
    seg-explain pdcr IMAGE --model MODEL --roi-box Y0 X0 Y1 X1 [--roi-mask MASK] [--label LABEL] [--class L]
                     [--slice Z] [--pool DIR_OR_FILE ...] [--patch 8] [--screen 3] [--tau 0.02] [--n 50]
                     [--seed 0] [--device auto] -o MAP
    seg-explain misure IMAGE --model MODEL [--class L] [--slice Z] [--seed 0] [--device auto] -o MAP
    seg-explain shapley IMAGE --model MODEL [--roi-box ...] [--slice Z] [--metric dice|soft-dice]
                        [--baseline zero|mean|blur] [--ranking NAMES] -o OUT.json
    seg-explain batch MANIFEST --model MODEL [--model M2 ...] [--method M ...] [--set [METHOD.]NAME=VALUE ...]
                      [--scheduler ADDRESS | --workers N] -o DIR
    seg-explain compare MANIFEST --model MODEL [--model M2 ...] [--method M ...] [...] -o DIR
    seg-explain rise|seg-gradcam|occlusion IMAGE --model MODEL --roi-box Y0 X0 Y1 X1 [--label LABEL] [--class L]
                     [--slice Z] [--seed 0] [method options: --n-masks --cell --p-keep | --layer NAME|auto|input|list |
                     --fill zero|mean|blur --patch 8] -o MAP   (3-D models: --roi-box Z0 Y0 X0 Z1 Y1 X1)
    seg-explain demo [-o DIR] [--3d]
    seg-explain napari [--3d]

``explain METHOD`` exists for every registered explainer, with flags built from its spec; ``pdcr``,
``misure``, ``rise``, ``seg-gradcam``, ``occlusion`` (and any other registered method, ``_`` spelt ``-``) are
short forms of ``explain METHOD``. A progress bar goes to
stderr, a one-line JSON summary to stdout, the map to ``-o`` (``.nii.gz``, ``.nii`` or ``.npy``) with a JSON
sidecar beside it, or the numbers alone to ``-o OUT.json``. User errors exit with code 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from ..core.errors import Cancelled, UserError
from .common import Bar, batch_size, check_output, load
from .explain import add_common_inputs, add_method_parser

EXIT_USER_ERROR = 2
FIXED_COMMANDS = ("segment", "explain", "demo", "napari", "batch", "compare", "rerun")


def _global_flags(suppress: bool) -> argparse.ArgumentParser:
    """--debug/--quiet, accepted before or after the sub-command."""
    p = argparse.ArgumentParser(add_help=False)
    default = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--debug", action="store_true", help="show tracebacks", **default)
    p.add_argument("--quiet", action="store_true", help="no progress bar", **default)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser, with one ``explain`` sub-command (and one short form) per registered explainer."""
    from ..core.explainers import registry

    parser = argparse.ArgumentParser(prog="seg-explain", description="Explain what a segmentation model looked at.",
                                     parents=[_global_flags(suppress=False)])
    sub = parser.add_subparsers(dest="command", required=True)
    flags = [_global_flags(suppress=True)]

    seg = sub.add_parser("segment", parents=flags, help="segment an image or volume")
    add_common_inputs(seg, output_help="mask file (.nii.gz, .nii, .npy)")
    seg.add_argument("--batch-size", type=batch_size, default=0, metavar="N|auto",
                     help="slices per forward pass (default auto)")
    seg.set_defaults(func=cmd_segment)

    specs = registry.specs()
    ex = sub.add_parser("explain", parents=flags, help="explain a RoI with a method: "
                        + ", ".join(f"{s.name} ({s.label})" for s in specs))
    methods = ex.add_subparsers(dest="method_command", required=True, metavar="METHOD",
                                title="methods", description=", ".join(s.name for s in specs))
    for spec in specs:
        add_method_parser(methods, spec, flags, spec.name)
        short = spec.name.replace("_", "-")  # seg_gradcam -> seg-gradcam (explain takes both spellings)
        if short != spec.name:
            add_method_parser(methods, spec, flags, short)
        if short not in FIXED_COMMANDS:
            add_method_parser(sub, spec, flags, short)

    nap = sub.add_parser("napari", parents=flags,
                         help="open napari with the sample scan, the sample model and the plugin docked")
    nap.add_argument("--3d", dest="three_d", action="store_true",
                     help="the 3-D sample: the 3 mm scan and label and the 3-D sample model")
    nap.set_defaults(func=cmd_napari)
    demo = sub.add_parser("demo", parents=flags,
                          help="segment a sample slice, explain a RoI with PdCR and MiSuRe, write a figure")
    demo.add_argument("-o", "--output", default="seg-explain-demo", help="output folder")
    demo.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo in the folder")
    demo.add_argument("--n", type=int, default=50, help="PdCR draws N (paper: 50)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--3d", dest="three_d", action="store_true",
                      help="the 3-D sample model on the 3 mm sample volume (3-D PdCR and MiSuRe)")
    demo.set_defaults(func=cmd_demo)
    from .batch import add_batch_parsers

    add_batch_parsers(sub, flags)
    from .rerun import add_rerun_parser
    add_rerun_parser(sub, flags)
    from .reliability import add_reliability_parser
    add_reliability_parser(sub, flags)
    return parser


def cmd_segment(args: argparse.Namespace) -> dict[str, Any]:
    from ..core.images import write_map
    from ..core.job_inputs import explained_slice
    from ..core.progress import Progress

    from ..core.compat import input_warnings
    from ..core.job_inputs import explained_array, explained_spacing

    out = check_output(args.output, args)
    image, model = load(args)
    if args.slice_index is not None:
        explained_slice(image, model, args.slice_index)
    plane_of_volume = 0 if (image.spatial_ndim == 3 and model.card.spatial_dims == 2) else None
    warnings = input_warnings(model.card, explained_array(image, args.slice_index),
                              explained_spacing(image, plane_of_volume))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    bar = Bar(not args.quiet, "segment")
    labels = model.segment(image, args.slice_index, batch_size=args.batch_size,
                           progress=lambda d, t: bar(Progress(d, t, "segment")))
    bar.close()
    write_map(out, labels, image, slice_index=args.slice_index)
    counts = {str(k): int((labels == k).sum()) for k in sorted(set(labels.ravel().tolist()))}
    return {"command": "segment", "output": str(out), "shape": list(labels.shape), "voxels_per_class": counts,
            "forward_passes": model.forward_passes, "device": str(model.device), "warnings": warnings}


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from .demo import run_demo, run_demo_3d

    run = run_demo_3d if args.three_d else run_demo
    out = Path(args.output)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"the folder {out} already holds files; give --overwrite to replace the demo's outputs, or "
                        "choose another folder")
    return run(out, n=args.n, device=args.device, progress=not args.quiet)


def cmd_napari(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from ..napari.launch import main as launch
    except ImportError as exc:
        raise UserError(f"napari cannot start here ({exc}); install a Qt binding: pip install 'napari[pyqt6]'") from exc
    launch(three_d=bool(getattr(args, "three_d", False)))
    return {"command": "napari"}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = argparse.Namespace(debug="--debug" in argv)
    try:
        args = build_parser().parse_args(argv)  # a bad --batch-size is a UserError raised here
        args.debug, args.quiet = getattr(args, "debug", False), getattr(args, "quiet", False)
        summary = args.func(args)
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
    from ..core.results import _jsonable

    print(json.dumps(_jsonable(summary)))
    return 0
