"""Model cards: the ``<model>.yaml`` beside a model file that says how to feed it.

Schema (every key optional except where a state dict needs ``architecture``)::

    name: mni152-wm-unet2d
    description: one line
    weights: model.safetensors          # file the card describes (default: same stem)
    architecture: {name: UNet, kwargs: {spatial_dims: 2, ...}}   # MONAI network for state dicts
    spatial_dims: 2
    in_channels: 1
    channels: [T1]                      # names of the input channels, in order (multi-contrast: T1, T1c, T2, FLAIR)
    classes: [background, white_matter]
    output_activation: softmax          # softmax | sigmoid | none (outputs are probabilities)
    normalization: {method: minmax}     # none | minmax | zscore | ct_window (center, width)
    input_size: [128, 128]              # native input size (3-D: the training patch; optional)
    orientation: file                   # 3-D models: voxel order fed to the model: file (its own) | RAS | LPS ...
    fit: pad                            # pad (centre pad/crop) | resize (bilinear in, bilinear out)
    expects:                            # the training data, for warnings on inputs unlike it (optional)
      modality: MR                      # MR | CT | ... (CT: Hounsfield units, air at -1000)
      intensity_range: [0, 1200]        # raw intensities of the training scans (e.g. 0.5 and 99.5 percentiles)
      spacing: [1.5, 1.5]               # mm per pixel of the model's input axes
    receptive_field: 92                 # pixels one output pixel sees (PdCR's far-field statistics)

Without a card: raw float32 ``(B, C, H, W)`` in, logits ``(B, K, H, W)`` out, softmax if K > 1,
sigmoid if K == 1 (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

ACTIVATIONS = ("softmax", "sigmoid", "none", "auto")
NORMALIZATIONS = ("none", "minmax", "zscore", "ct_window")
FITS = ("pad", "resize")


@dataclass(frozen=True)
class ModelCard:
    """What a model expects and returns. Defaults describe a model without a card."""

    name: str = ""
    description: str = ""
    weights: str | None = None
    architecture: str | None = None
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    spatial_dims: int = 2
    in_channels: int | None = None
    channels: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    output_activation: str = "auto"
    normalization: str = "none"
    ct_center: float | None = None
    ct_width: float | None = None
    input_size: tuple[int, ...] | None = None
    fit: str = "pad"
    source: str | None = None
    modality: str | None = None
    intensity_range: tuple[float, float] | None = None
    spacing: tuple[float, ...] | None = None
    receptive_field: int | None = None
    orientation: str = "file"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["channels"] = list(self.channels)
        d["input_size"] = list(self.input_size) if self.input_size else None
        for key in ("intensity_range", "spacing"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    def class_index(self, target: int | str) -> int:
        """Index of a class given as an integer or as one of ``classes``."""
        if isinstance(target, str) and not target.lstrip("-").isdigit():
            if target not in self.classes:
                raise ModelLoadError(f"class {target!r} is not one of the model's classes {list(self.classes)}")
            return self.classes.index(target)
        return int(target)


def _require(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise ModelLoadError(f"model card {path}: {msg}; correct it in the card")


def load_card(path: str | Path) -> ModelCard:
    """Parse and validate a model card; every bad value raises ``ModelLoadError`` naming it."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        why = (f"{getattr(exc, 'problem', None) or 'not valid YAML'} at line {mark.line + 1}" if mark is not None
               else getattr(exc, "strerror", None) or str(exc).splitlines()[0])
        raise ModelLoadError(f"cannot read model card {path} ({why}): fix it (YAML 'key: value' lines, see the "
                             "sample model's card) or remove it") from exc
    _require(isinstance(raw, dict), path, "must be a YAML mapping of keys to values")
    try:
        return _card_from_dict(raw, path)
    except (TypeError, ValueError) as exc:  # e.g. in_channels: three
        raise ModelLoadError(f"model card {path}: a value has the wrong type ({exc})") from exc


def _card_from_dict(raw: dict[str, Any], path: Path) -> ModelCard:
    arch = raw.get("architecture")
    arch_name, arch_kwargs = None, {}
    if isinstance(arch, str):
        arch_name = arch
    elif isinstance(arch, dict):
        arch_name = arch.get("name")
        arch_kwargs = dict(arch.get("kwargs") or {})
    elif arch is not None:
        raise ModelLoadError(f"model card {path}: 'architecture' must be a name or {{name, kwargs}}")
    norm = raw.get("normalization", "none")
    if isinstance(norm, str):
        norm = {"method": norm}
    _require(isinstance(norm, dict), path, "'normalization' must be a name or a mapping with 'method'")
    method = str(norm.get("method", "none")).lower().replace("-", "").replace("_", "")
    method = {"ctwindow": "ct_window", "zscore": "zscore", "minmax": "minmax", "none": "none"}.get(method, method)
    _require(method in NORMALIZATIONS, path, f"normalization method {norm.get('method')!r} is not one of {NORMALIZATIONS}")
    if method == "ct_window":
        _require("center" in norm and "width" in norm, path, "ct_window normalization needs 'center' and 'width'")
        _require(float(norm["width"]) > 0, path, "ct_window 'width' must be > 0")
    act = str(raw.get("output_activation", "auto")).lower()
    _require(act in ACTIVATIONS, path, f"output_activation {act!r} is not one of {ACTIVATIONS}")
    fit = str(raw.get("fit", "pad")).lower()
    _require(fit in FITS, path, f"fit {fit!r} is not one of {FITS}")
    dims = int(raw.get("spatial_dims", 2))
    _require(dims in (2, 3), path, "spatial_dims must be 2 or 3")
    size = raw.get("input_size")
    if size is not None:
        _require(isinstance(size, (list, tuple)) and len(size) == dims and all(int(s) > 0 for s in size),
                 path, f"input_size must list {dims} positive sizes")
        size = tuple(int(s) for s in size)
    expects = raw.get("expects") or {}
    _require(isinstance(expects, dict), path, "'expects' must be a mapping (modality, intensity_range, spacing)")
    rng = expects.get("intensity_range")
    if rng is not None:
        _require(isinstance(rng, (list, tuple)) and len(rng) == 2 and float(rng[0]) < float(rng[1]), path,
                 "expects.intensity_range must be [low, high] with low < high")
        rng = (float(rng[0]), float(rng[1]))
    spacing = expects.get("spacing")
    if spacing is not None:
        _require(isinstance(spacing, (list, tuple)) and len(spacing) == dims and all(float(v) > 0 for v in spacing),
                 path, f"expects.spacing must list {dims} positive spacings (mm)")
        spacing = tuple(float(v) for v in spacing)
    orient = str(raw.get("orientation", "file"))
    orient = "file" if orient.lower() == "file" else orient.upper()
    _require(orient == "file" or (len(orient) == dims and set(orient) <= set("RLAPSI")
                                  and len({c.replace("L", "R").replace("P", "A").replace("I", "S") for c in orient})
                                  == dims), path, f"orientation must be 'file' or {dims} axis codes such as RAS")
    rf = raw.get("receptive_field")
    _require(rf is None or int(rf) > 0, path, "receptive_field must be a positive number of pixels")
    in_ch = raw.get("in_channels")
    _require(in_ch is None or int(in_ch) > 0, path, "in_channels must be a positive integer")
    chans = raw.get("channels") or []
    _require(isinstance(chans, list) and all(isinstance(c, (str, int)) for c in chans), path,
             "channels must be a list of names, e.g. [T1, T1c, T2, FLAIR]")
    _require(not chans or in_ch is None or len(chans) == int(in_ch), path,
             f"channels names {len(chans)} inputs but in_channels is {in_ch}")
    return ModelCard(
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        weights=raw.get("weights"),
        architecture=arch_name,
        architecture_kwargs=arch_kwargs,
        spatial_dims=dims,
        in_channels=int(in_ch) if in_ch is not None else (len(chans) or None),
        channels=tuple(str(c) for c in chans),
        classes=tuple(str(c) for c in raw.get("classes", ()) or ()),
        output_activation=act,
        normalization=method,
        ct_center=float(norm["center"]) if method == "ct_window" else None,
        ct_width=float(norm["width"]) if method == "ct_window" else None,
        input_size=size,
        fit=fit,
        source=str(path),
        modality=str(expects["modality"]).upper() if expects.get("modality") else None,
        intensity_range=rng,
        spacing=spacing,
        receptive_field=int(rf) if rf is not None else None,
        orientation=orient,
    )


def find_card(model_path: Path) -> Path | None:
    """The card beside a model: ``<stem>.yaml`` / ``.yml`` (stems like ``x.onnx`` -> ``x.yaml``)."""
    for suffix in (".yaml", ".yml"):
        cand = model_path.with_suffix(suffix)
        if cand.exists() and cand != model_path:
            return cand
    return None
