"""``seg-explain rerun RESULT.json [-o OUT]``: recompute a saved explanation from its sidecar and compare.

The sidecar written beside every map (``seg-explain explain ... -o MAP``) records the image, the model and its
card, the method and its parameters, the RoI, the class, the label and the pool. ``rerun`` reads them, runs the
explanation again through the normal core path (:func:`~napari_seg_explain.core.job_inputs.job_from_files`)
and prints one JSON line: ``identical`` (maps equal, NaN where NaN) and ``max_abs_diff``.

Paths: the files the result lists (its map, RoI and extra maps) must be plain names inside the sidecar's folder
(no ``..``, absolute paths or symlinks leading out); the recorded inputs (image, model, card, label, pool, RoI
mask) may be anywhere but must be absolute paths, are only read, and an nnU-Net model folder (unpickled by
nnU-Net) is loaded only with ``--trust-model``; rerun writes nowhere but ``-o``.

Sidecars written before the inputs were recorded (no ``run.inputs``) are rerun from the geometry source, the
model source and its card and the ``_roi`` map; what cannot be recovered (the label file, the pool paths) is
named in a clear error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError

HELP = ("rerun a saved result from its JSON sidecar and report whether the map is identical. The model file "
        "is hashed again: if its sha256 differs from the recorded one, the rerun still runs and reports "
        "model_sha256_matches false (and says so on stderr), so the effect of the changed model can be measured")


def add_rerun_parser(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rerun", parents=flags, help=HELP, description=HELP + ".")
    p.add_argument("result", help="the result's JSON sidecar (or its map file: the sidecar beside it is read)")
    p.add_argument("-o", "--output", help="write the rerun's map (and sidecar) here (.nii.gz, .nii, .npy)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--overwrite", action="store_true", help="replace -o OUT (and its sidecar) if it exists")
    p.add_argument("--trust-model", action="store_true",
                   help="load an nnU-Net model folder the sidecar names (nnU-Net unpickles its checkpoints)")
    p.set_defaults(func=cmd_rerun)


def _sidecar(path: str) -> Path:
    from ..core.results import MAP_SUFFIXES, split_suffix

    p = Path(path)
    if p.name.lower().endswith(MAP_SUFFIXES):
        stem, _ = split_suffix(p)
        p = stem.with_name(stem.name + ".json")
    if not p.is_file():
        raise UserError(f"{p} is not a file: give the JSON sidecar written beside a map")
    return p


def _existing(path: Any, what: str, base: Path, folder_ok: bool = False) -> str:
    """A recorded input that exists now; it must be an absolute path (see :mod:`..core.safe_paths`)."""
    from ..core.safe_paths import absolute_input

    if not path:
        raise UserError(f"the sidecar records no {what}")
    cand = absolute_input(path, what)
    if cand.is_file() or (folder_ok and cand.is_dir()):
        return str(cand)
    kind = "a file or folder" if folder_ok else "a file"
    raise UserError(f"the recorded {what} {path} is not {kind} (moved or deleted?); cannot rerun")


def _own_file(name: Any, what: str, base: Path) -> str:
    """A file the result itself lists (map, RoI map): a plain name inside the sidecar's folder."""
    from ..core.safe_paths import inside

    path = inside(base, name, f"the sidecar's {what} entry")
    if not path.is_file():
        raise UserError(f"the recorded {what} {path} is not a file (moved or deleted?); cannot rerun")
    return str(path)


def check_trusted_model(model: str, trust: bool) -> None:
    """nnU-Net folders are unpickled by nnU-Net (code can run): a sidecar may name one only with --trust-model."""
    from ..core.models.nnunet import is_nnunet_dir

    if is_nnunet_dir(model) and not trust:
        raise UserError(f"the sidecar names the nnU-Net folder {model}, whose checkpoints nnU-Net unpickles (a "
                        "hostile checkpoint runs code): check that it is yours, then add --trust-model")


def recorded_inputs(meta: dict[str, Any], sidecar: Path) -> dict[str, Any]:
    """What to pass to job_from_files, from ``run.inputs`` or (older sidecars) what else the sidecar holds."""
    base = sidecar.parent
    run = meta.get("run") or {}
    rec = run.get("inputs")
    if rec is not None:
        out = dict(rec)
        out["image"] = _existing(rec.get("image"), "image", base, folder_ok=True)
        out["contrasts"] = [_existing(c, "contrast", base) for c in rec.get("contrasts") or []]
        out["model"] = _existing(rec.get("model"), "model", base, folder_ok=True)
        out["card"] = _existing(rec["card"], "model card", base) if rec.get("card") else None
        out["roi_mask"] = _existing(rec["roi_mask"], "RoI mask", base) if rec.get("roi_mask") else None
        out["label"] = _existing(rec["label"], "label", base) if rec.get("label") else None
        out["pool"] = [_existing(p, "pool entry", base, folder_ok=True) for p in rec["pool"]] if rec.get("pool") \
            else None
        return out
    # an older sidecar: rebuild what we can, name what we cannot
    geom, params = meta.get("geometry") or {}, meta.get("params") or {}
    model = (meta.get("provenance") or {}).get("model") or {}
    missing = []
    if params.get("metric") == "dice_vs_label":
        missing.append("the label file (--label): the result was scored against a ground truth")
    pool = params.get("pool") or {}
    if isinstance(pool, dict) and pool and not pool.get("self_pool") and geom.get("slice_index") is None:
        missing.append(f"the pool paths (--pool; recorded only as {pool.get('source')!r})")
    if len(geom.get("channel_names") or []) > 1:
        missing.append("the --contrasts files")
    if missing:
        raise UserError(f"{sidecar.name} was written before seg-explain recorded its inputs (no run.inputs): "
                        f"missing {'; '.join(missing)}. Rerun the original explain command instead")
    files = meta.get("files") or {}
    roi_mask = _own_file(files["roi"], "RoI map", base) if "roi" in files else None
    card = (model.get("card") or {}).get("source")
    return {"image": _existing(geom.get("source"), "image (geometry source)", base, folder_ok=True),
            "contrasts": [], "model": _existing(model.get("source"), "model (provenance source)", base,
                                                folder_ok=True),
            "card": _existing(card, "model card", base) if card else None,
            "slice_index": geom.get("slice_index"), "roi_box": None, "roi_mask": roi_mask, "roi_point": None,
            "target": str(run.get("target", params.get("target_class", 1))), "label": None, "pool": None,
            "pool_exclude": 5, "note": "older sidecar: the RoI is the saved _roi map"}


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """``identical`` (NaN == NaN) and the largest absolute difference where both are finite."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {"identical": False, "max_abs_diff": None, "shape_recorded": list(a.shape),
                "shape_rerun": list(b.shape)}
    both = np.isfinite(a) & np.isfinite(b)
    diff = float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0
    return {"identical": bool(np.array_equal(a, b, equal_nan=True)), "max_abs_diff": diff,
            "nan_mismatch": int((np.isnan(a) != np.isnan(b)).sum())}


def cmd_rerun(args: argparse.Namespace) -> dict[str, Any]:
    from ..core.explainers import registry
    from ..core.job_inputs import job_from_files
    from ..core.results import Explanation
    from .common import check_output, load, run_with_bar, save_result

    sidecar = _sidecar(args.result)
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {sidecar}: {exc}") from exc
    if not isinstance(meta, dict) or "method" not in meta or "map" not in (meta.get("files") or {}):
        raise UserError(f"{sidecar.name} is not a result sidecar written beside a map by seg-explain explain")
    map_path = Path(_own_file(meta["files"]["map"], "map", sidecar.parent))
    recorded = Explanation.load(map_path)
    spec = registry.get(meta["method"])
    inp = recorded_inputs(meta, sidecar)
    check_trusted_model(inp["model"], getattr(args, "trust_model", False))
    names = {f.name for f in dataclasses.fields(spec.config)}
    values = {k: v for k, v in (meta.get("params") or {}).items() if k in names}
    config = spec.make_config(**values)
    ns = argparse.Namespace(image=inp["image"], contrasts=inp.get("contrasts") or None, model=inp["model"],
                            card=inp.get("card"), device=args.device, overwrite=getattr(args, "overwrite", False),
                            **{k: inp.get(k) for k in ("folds", "checkpoint", "mirroring", "ensemble")})
    if args.output:
        ns.output, ns.roi_mask, ns.label, ns.pool = args.output, inp.get("roi_mask"), inp.get("label"), inp.get("pool")
        out = check_output(args.output, ns)
        if out.resolve() in {(sidecar.parent / f).resolve() for f in meta["files"].values()} | {sidecar.resolve()}:
            raise UserError(f"-o {out} would overwrite the result being rerun; choose another output name")
    image, model = load(ns)
    want = ((meta.get("provenance") or {}).get("model") or {}).get("sha256")
    same_model = want is None or model.sha256 == want
    if not same_model:
        print(f"warning: the model's sha256 differs from the recorded one ({model.sha256[:12]} vs {want[:12]}): "
              f"the model file changed; rerunning anyway", file=sys.stderr)
    job = job_from_files(model, image, spec.name, config=config, slice_index=inp.get("slice_index"),
                         roi_box=inp.get("roi_box"), roi_mask=inp.get("roi_mask"), label=inp.get("label"),
                         pool=inp.get("pool"), pool_exclude=inp.get("pool_exclude", 5),
                         target=inp.get("target", 1), image_path=inp["image"], roi_point=inp.get("roi_point"),
                         roi_name=(meta.get("run") or {}).get("roi_name", "RoI 1"))
    expl = run_with_bar(job.run(model), f"rerun {spec.title}", not args.quiet)
    files = []
    if args.output:
        expl.run["inputs"] = meta["run"]["inputs"] if "inputs" in (meta.get("run") or {}) else inp
        files = save_result(expl, out, ns, like=image, slice_index=job.geometry.get("slice_index"))
    result = compare(recorded.map, expl.map)
    if result["identical"] and recorded.maps.keys() == expl.maps.keys():
        extra = {k: compare(recorded.maps[k], expl.maps[k])["identical"] for k in expl.maps}
        result["identical_extra_maps"] = extra
    return {"command": "rerun", "result": str(sidecar), **result, "model_sha256_matches": same_model,
            "model_sha256_recorded": want, "model_sha256_now": model.sha256,
            "run_id_recorded": (meta.get("run") or {}).get("id"), "run_id_now": expl.run.get("id"),
            "output": str(files[0]) if files else None, "files": [str(f) for f in files],
            "notes": [inp["note"]] if inp.get("note") else []}
