"""``seg-explain explain METHOD ...`` (and the short forms ``seg-explain pdcr|misure ...``), built from the registry.

Each registered method gets the common inputs (image, model, RoI, class, slice, device, output), the inputs its
spec needs (``--label``, ``--pool``) and one flag per config parameter, named by the parameter's metadata
(``--patch``, ``--n``, ``--tau``...), with its default and range in the help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import batch_size, check_output, load, run_with_bar, save_result, summary

if TYPE_CHECKING:
    from ..core.explainers.base import ExplainerSpec


#: ``--exact``: the paper's mode, whatever the speed flags say (for a method with opt-in speed modes: PdCR)
EXACT_MODE = {"preview": False, "adaptive": False, "screening": "exact", "amp": False}


def add_common_inputs(p: argparse.ArgumentParser, *, output_help: str) -> None:
    p.add_argument("image", help="image file (NIfTI, PNG/JPEG/TIFF/BMP, NRRD, MHA) or DICOM folder")
    p.add_argument("--contrasts", nargs="+", metavar="FILE",
                   help="more co-registered contrasts of the same scan, one file each, appended after IMAGE in the "
                        "model card's channel order (e.g. IMAGE = T1, --contrasts T1c T2 FLAIR); named by file")
    p.add_argument("--model", required=True, help="model file (.pt/.ts TorchScript, .pt2, .safetensors/.pth "
                                                  "state dict + model card, .onnx) or its .yaml card, or a folder: "
                                                  "an nnU-Net v2 trained-model folder or a MONAI bundle")
    p.add_argument("--card", help="model card (default: <model>.yaml beside the model)")
    add_folder_options(p)
    p.add_argument("--slice", type=int, dest="slice_index", metavar="Z",
                   help="axial slice (index along the last axis) of a volume, for a 2-D model")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("-o", "--output", required=True, help=output_help)
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")


def add_folder_options(p: argparse.ArgumentParser) -> None:
    """Options of nnU-Net model folders (ignored for other models)."""
    g = p.add_argument_group("nnU-Net v2 model folders")
    g.add_argument("--folds", nargs="+", metavar="K", help="folds to load (default: every fold_K with the checkpoint); "
                                                          "segmentation ensembles them")
    g.add_argument("--checkpoint", help="checkpoint file in each fold (default checkpoint_final.pth)")
    g.add_argument("--mirroring", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time mirroring when segmenting (nnU-Net's default: on)")
    g.add_argument("--explain-ensemble", dest="ensemble", action="store_true", default=None,
                   help="explain the ensemble of all folds (mirrored as segmentation is) instead of the first fold "
                        "alone; costs folds x mirrors forward passes each")


def _param_flag(p: argparse.ArgumentParser, info: Any) -> None:
    rng = "" if info.lo is None and info.hi is None else f" [{info.lo if info.lo is not None else ''}.." \
                                                          f"{info.hi if info.hi is not None else ''}]"
    help_ = f"{info.tip or info.label} (default {info.default}){rng}"
    if info.type is bool:
        p.add_argument(info.flag, dest=f"cfg_{info.name}", action=argparse.BooleanOptionalAction,
                       default=info.default, help=help_)
    elif info.name == "batch_size":
        p.add_argument(info.flag, dest=f"cfg_{info.name}", type=batch_size, default=info.default,
                       metavar="N|auto", help="images per forward pass; auto (default) times a few sizes on the "
                                              "first batches and keeps the fastest")
    elif info.per_axis:
        p.add_argument(info.flag, dest=f"cfg_{info.name}", type=info.type, default=info.default, nargs="+",
                       metavar=info.flag.lstrip("-").upper().replace("-", "_"),
                       help=help_ + "; one value, or one per spatial axis")
    else:
        p.add_argument(info.flag, dest=f"cfg_{info.name}", type=info.type, default=info.default,
                       choices=info.choices, metavar=info.flag.lstrip("-").upper().replace("-", "_"), help=help_)


def add_method_parser(sub: Any, spec: "ExplainerSpec", parents: list[argparse.ArgumentParser], name: str) -> None:
    """One sub-command for ``spec``: common inputs, what the method needs, its parameters."""
    p = sub.add_parser(name, parents=parents, help=f"{spec.label}: {spec.description}",
                       description=f"{spec.label}. {spec.description}")
    add_common_inputs(p, output_help="map file (.nii.gz, .nii, .npy; a JSON sidecar and extra maps beside it), or "
                                     ".json for the numbers alone")
    p.add_argument("--roi-box", nargs="+", type=int, metavar="N",
                   help="RoI box Y0 X0 Y1 X1 in pixel (row, column) coordinates of the explained 2-D image, end "
                        "exclusive (3-D models: Z0 Y0 X0 Z1 Y1 X1 in voxel order)")
    p.add_argument("--roi-mask", help="image whose non-zero pixels are the RoI (same size as the image)")
    p.add_argument("--roi-point", nargs="+", type=int, metavar="N",
                   help="the segmented structure under this point: Y X on the explained slice (3-D models: Z Y X, "
                        "slice, row, column): the connected component of the model's prediction of --class")
    p.add_argument("--class", dest="target", default="1", help="class index or name (default 1)")
    if spec.uses("label"):
        p.add_argument("--label", help="ground truth image whose non-zero pixels are the class (paper's Dice)")
    if spec.uses("pool"):
        p.add_argument("--pool", nargs="+", metavar="DIR_OR_FILE",
                       help="images (or a folder of pre-cut tiles) to crop replacement blocks from (default: other "
                            "slices of the volume; for a lone 2-D image, the image itself)")
        p.add_argument("--pool-exclude", type=int, default=5, help="neighbouring slices left out of a volume pool")
    if spec.aggregate is not None:
        p.add_argument("--models", nargs="+", metavar="MODEL",
                       help="more models (e.g. the other folds) explained on the same input: the JSON output (-o "
                            "OUT.json) adds their mean, spread and rank variance")
    group = p.add_argument_group(f"{spec.title} parameters")
    for info in spec.params():
        _param_flag(group, info)
    names = {info.name for info in spec.params()}
    if "adaptive" in names and "screening" in names:
        group.add_argument("--exact", action="store_true",
                           help="the paper's exact mode whatever the other flags say: "
                                + ", ".join(f"{k} {v}" for k, v in EXACT_MODE.items() if k in names))
    if any(info.name == "layer" for info in spec.params()):  # --layer list prints the layers: no -o needed
        for action in p._actions:
            if action.dest == "output":
                action.required = False
    p.set_defaults(method=spec.name, func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the inputs into a job in core, run it with a progress bar, save the map and the sidecar."""
    from ..core.errors import UserError
    from ..core.explainers import registry
    from ..core.job_inputs import job_from_files
    from ..core.models import load_model

    spec = registry.get(args.method)
    if getattr(args, "cfg_layer", None) == "list":
        return list_layers(args, spec)
    if args.output is None:
        raise UserError("the following argument is required: -o/--output")
    as_json = args.output.lower().endswith(".json")
    out = check_json_output(args.output, args) if as_json else check_output(args.output, args)
    others = getattr(args, "models", None) or []
    if others and not as_json:
        raise UserError("--models writes a JSON summary: give -o OUT.json")
    values = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    if getattr(args, "exact", False):
        values |= {k: v for k, v in EXACT_MODE.items() if k in values}
    config = spec.make_config(**values)
    image, model = load(args)
    job = job_from_files(model, image, spec.name, config=config, slice_index=args.slice_index,
                         roi_box=args.roi_box, roi_mask=args.roi_mask, label=getattr(args, "label", None),
                         pool=getattr(args, "pool", None), pool_exclude=getattr(args, "pool_exclude", 5),
                         target=args.target, image_path=args.image, roi_point=args.roi_point)
    for w in job.warnings:
        print(f"warning: {w}", file=sys.stderr)
    expl = run_with_bar(job.run(model), spec.title, not args.quiet)
    expls = [expl] + [run_with_bar(job.run(load_model(m, None, device=args.device)), f"{spec.title} ({Path(m).name})",
                                   not args.quiet) for m in others]
    expl.run["inputs"] = rerun_inputs(args)  # what ``seg-explain rerun`` needs to recompute this result
    z = job.geometry.get("slice_index")
    extra = {"across_models": spec.aggregate(expls)} if others else {}
    files = write_json(out, spec, expl, **extra) if as_json else save_result(expl, out, args, like=image, slice_index=z)
    return summary(args.command if args.command != "explain" else spec.name, files, expl)


def rerun_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's inputs as the sidecar records them (absolute paths): ``seg-explain rerun`` reads them."""
    import os

    def ab(p: Any) -> Any:
        return None if p is None else os.path.abspath(str(p))

    return {"image": ab(args.image), "contrasts": [ab(p) for p in (getattr(args, "contrasts", None) or [])],
            "model": ab(args.model), "card": ab(args.card), "slice_index": args.slice_index,
            "roi_box": args.roi_box, "roi_mask": ab(args.roi_mask), "roi_point": args.roi_point,
            "target": args.target, "label": ab(getattr(args, "label", None)),
            "pool": [ab(p) for p in (getattr(args, "pool", None) or [])] or None,
            "pool_exclude": getattr(args, "pool_exclude", 5),
            **{k: getattr(args, k, None) for k in ("folds", "checkpoint", "mirroring", "ensemble")}}


def list_layers(args: argparse.Namespace, spec: "ExplainerSpec") -> dict[str, Any]:
    """``--layer list``: one forward pass on the explained input; print each named layer and its output shape."""
    from ..core.explainers.seg_gradcam import layer_table
    from ..core.job_inputs import job_from_files

    image, model = load(args)
    config = spec.make_config(**{k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")} | {"layer": "auto"})
    job = job_from_files(model, image, spec.name, config=config, slice_index=args.slice_index, roi_box=args.roi_box,
                         roi_mask=args.roi_mask, target=args.target, image_path=args.image, roi_point=args.roi_point)
    rows, auto = layer_table(model, job.image)
    width = max([len(r["name"]) for r in rows] + [5])
    for r in rows:
        mark = "  <- auto" if r["name"] == auto else ""
        print(f"{r['name']:<{width}}  {r['type']:<20} {tuple(r['shape'])}{mark}")
    if not rows:
        print(f"model {model.name!r} ({model.format}) exposes no layers; use --layer input")
    return {"command": "layers", "layers": rows, "auto": auto}


def check_json_output(path: str, args: argparse.Namespace) -> Path:
    """``-o result.json``: the folder exists and the file is none of the inputs."""
    from ..core.errors import UserError
    from .common import input_files

    out = Path(path)
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist; create it first")
    if out.resolve() in input_files(args):
        raise UserError(f"-o {out} would overwrite an input; choose another output name")
    from .common import check_new, check_writable

    check_new([out], args)
    check_writable(out.parent)
    return out


def write_json(out: Path, spec: "ExplainerSpec", expl: Any, **extra: Any) -> list[Path]:
    """The result as one JSON file: the spec's ``json_keys`` at the top level, ``extra`` (e.g. the summary across
    models), then the whole metadata; atomic."""
    import json

    from ..core.results import _jsonable
    from .common import atomic_write

    record = ({k: expl.stats[k] for k in spec.json_keys if k in expl.stats} | extra
              | {"explanation": expl.metadata()})
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(_jsonable(record), indent=2)))
    return [out]
