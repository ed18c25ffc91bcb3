"""What every command shares: the progress bar, loading, output checks and the JSON summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core.errors import UserError


class Bar:
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
    """Drive a core generator with a progress bar on stderr; return its result."""
    from ..core.progress import drive

    bar = Bar(enabled, title)
    try:
        return drive(gen, bar)
    finally:
        bar.close()


def batch_size(text: str) -> int:
    """``--batch-size``: ``auto`` (0) or an integer >= 1 (else a UserError: one ``error:`` line, exit 2)."""
    if str(text).lower() == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"--batch-size must be 'auto' or an integer >= 1 (got {text!r})")
    return value


def input_files(args: argparse.Namespace) -> list[Path]:
    """Every file the command reads (pool folders contribute their files)."""
    named = [args.image, args.model, getattr(args, "card", None), getattr(args, "label", None),
             getattr(args, "roi_mask", None), *(getattr(args, "pool", None) or []),
             *(getattr(args, "contrasts", None) or [])]
    out: list[Path] = []
    for p in (Path(n) for n in named if n):
        out += [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
    if Path(args.model).suffix.lower() not in (".yaml", ".yml") and not Path(args.model).is_dir():
        out += [Path(args.model).with_suffix(".yaml"), Path(args.model).with_suffix(".yml")]
    return [p.resolve() for p in out]


def check_output(path: str, args: argparse.Namespace) -> Path:
    """The output path is writable in format and folder, and none of its files would replace an input."""
    from ..core.results import split_suffix

    out = Path(path)
    stem, suffix = split_suffix(out)
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist; create it first")
    mine = {out.resolve(), stem.with_name(stem.name + ".json").resolve()}
    for inp in input_files(args):
        if inp in mine or (inp.parent == out.parent.resolve() and inp.name.startswith(stem.name + "_")
                           and inp.name.endswith(suffix)):
            raise UserError(f"-o {out} would overwrite the input {inp}; choose another output name")
    check_new([out, stem.with_name(stem.name + ".json")], args)
    check_writable(out.parent)
    return out


def check_writable(folder: Path) -> None:
    """Fail before the work, not after it, when the output folder cannot take a file."""
    import tempfile

    from ..core.input_checks import write_error

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".seg-explain-probe-"):
            pass
    except OSError as exc:
        raise write_error(folder, exc) from exc


def check_new(paths: "list[Path]", args: argparse.Namespace) -> None:
    """Refuse to replace an existing file unless ``--overwrite`` was given."""
    if getattr(args, "overwrite", False):
        return
    for p in paths:
        if Path(p).exists():
            raise UserError(f"{p} already exists; give --overwrite to replace it, or choose another output name")


def atomic_write(path: Path, write: Any) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, renamed over ``path``: no partial file on failure."""
    import os
    import tempfile

    from ..core.input_checks import write_error

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def output_targets(out: Path, expl: Any) -> list[Path]:
    """Every file ``expl.save(out)`` writes: the map, its extra maps, the RoI and the sidecar."""
    from ..core.results import split_suffix

    stem, suffix = split_suffix(out)
    keys = [f"_{k}" for k in expl.maps] + (["_roi"] if expl.roi is not None else [])
    return [out, *(stem.with_name(stem.name + k + suffix) for k in keys), stem.with_name(stem.name + ".json")]


def save_result(expl: Any, out: Path, args: argparse.Namespace, **kw: Any) -> list[Path]:
    """``expl.save`` after checking no file would be replaced; a failed write names its cause in one sentence."""
    from ..core.input_checks import write_error

    check_new(output_targets(out, expl), args)
    try:
        return expl.save(out, **kw)
    except UserError as exc:
        if isinstance(exc.__cause__, OSError):
            raise write_error(out, exc.__cause__) from exc.__cause__
        raise


def load(args: argparse.Namespace):
    """The image and the model the arguments name, checked to fit each other."""
    from ..core.images import read_image
    from ..core.models import load_model

    image = read_image(args.image)
    extra = getattr(args, "contrasts", None) or []
    if extra:  # co-registered contrasts in separate files: one channel (or more) each, in the card's order
        from ..core.images import stack_channels

        images = [image, *(read_image(p) for p in extra)]
        one_each = all(img.n_channels == 1 for img in images)
        image = stack_channels(images, [stem_of(p) for p in (args.image, *extra)] if one_each else None)
    options = {k: getattr(args, k, None) for k in ("folds", "checkpoint", "mirroring", "ensemble")}
    model = load_model(args.model, args.card, device=args.device, **options)
    model.check_channels(image.n_channels)
    return image, model


def stem_of(path: str) -> str:
    """A file's name without its (double) extension: ``sub-01_FLAIR.nii.gz`` -> ``sub-01_FLAIR``."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".mgz", ".png", ".tif", ".tiff", ".npy"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


SUMMARY_KEYS = ("M0", "metric", "positive_share", "negative_share", "irrelevant_share", "min_ate", "max_ate",
                "n_blocks", "n_blocks_screened_in", "dice_explained", "perturbation_ratio", "dilations")


def summary(cmd: str, files: list[Path], expl: Any = None, **extra: Any) -> dict[str, Any]:
    """The one JSON line a command prints: outputs, the result's headline numbers, cost and device."""
    out: dict[str, Any] = {"command": cmd, "output": str(files[0]), "files": [str(f) for f in files]}
    if expl is not None:
        from ..core.explainers import registry

        keys = [s.key for s in registry.get(expl.method).stats] if expl.method in registry.names() else []
        out |= {k: expl.stats[k] for k in (*SUMMARY_KEYS, *keys) if k in expl.stats}
        out |= {"run_id": expl.run_id, "forward_passes": expl.provenance["forward_passes"],
                "wall_time_s": expl.provenance["wall_time_s"], "batch_size": expl.provenance.get("batch_size"),
                "device": expl.provenance["model"]["device"], "warnings": expl.warnings}
    return out | extra
