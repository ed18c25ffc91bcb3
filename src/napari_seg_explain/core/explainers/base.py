"""What every explainer declares about itself: the spec the CLI, the widget, the layers and the folder read.

A method is one module that builds an :class:`ExplainerSpec` and registers it
(:func:`~napari_seg_explain.core.explainers.registry.register`). Its parameters are a frozen dataclass whose
fields carry :func:`param` metadata (range, step, tooltip, CLI flag), so forms and flags are generated, not
written per method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from ..models import SegmentationModel
    from ..progress import Progress
    from ..results import Explanation

#: what a method may need: a RoI (required), a perturbation pool, a ground-truth label, gradients
NEEDS = ("roi", "roi_optional", "pool", "label", "gradients")
#: how a result layer is drawn: a signed map (diverging, transparent at 0), a [0, 1] saliency, a mask,
#: the RoI outline
LAYER_STYLES = ("diverging", "saliency", "mask", "outline")


def param(default: Any, *, lo: float | None = None, hi: float | None = None, step: float | None = None,
          tip: str = "", flag: str | None = None, label: str | None = None, advanced: bool = True,
          choices: tuple[Any, ...] | None = None, per_axis: bool = False) -> Any:
    """A config field with its user-facing description (a ``dataclasses.field`` with metadata).

    ``per_axis``: the value may also be one number per spatial axis (a tuple; ``--patch 4 8 8``).
    """
    meta = {"lo": lo, "hi": hi, "step": step, "tip": tip, "flag": flag, "label": label, "advanced": advanced,
            "choices": choices, "per_axis": per_axis}
    return field(default=default, metadata={"seg_explain": meta})


@dataclass(frozen=True)
class ParamInfo:
    """One config parameter as forms and flags see it."""

    name: str
    default: Any
    type: type
    lo: float | None
    hi: float | None
    step: float | None
    tip: str
    flag: str
    label: str
    advanced: bool
    choices: tuple[Any, ...] | None
    per_axis: bool = False



def threshold_param(tip: str = "probability threshold of a predicted pixel") -> Any:
    """The probability threshold every method shares (0.5 by default)."""
    return param(0.5, lo=1e-6, hi=1 - 1e-6, step=0.01, label="Threshold", tip=tip)


def seed_param(tip: str) -> Any:
    """The seed every method records (and uses, where it draws at random)."""
    return param(0, lo=0, hi=2**31 - 1, label="Seed", tip=tip)


def batch_size_param(tip: str) -> Any:
    """Images per forward pass; 0 = automatic (the Engine times a few sizes)."""
    return param(0, lo=0, hi=65536, label="Batch size", tip=tip)

def config_params(config_cls: type) -> list[ParamInfo]:
    """The parameters of a config dataclass, in declaration order (fields without :func:`param` included)."""
    hints = {f.name: f.type for f in dataclasses.fields(config_cls)}
    out = []
    for f in dataclasses.fields(config_cls):
        meta = dict(f.metadata.get("seg_explain") or {})
        default = f.default
        typ = type(default) if default is not None else (str if "str" in str(hints[f.name]) else float)
        out.append(ParamInfo(
            name=f.name, default=default, type=typ, lo=meta.get("lo"), hi=meta.get("hi"), step=meta.get("step"),
            tip=meta.get("tip", ""), flag=meta.get("flag") or "--" + f.name.replace("_", "-"),
            label=meta.get("label") or f.name.replace("_", " "), advanced=meta.get("advanced", True),
            choices=meta.get("choices"), per_axis=bool(meta.get("per_axis"))))
    return out


def check_ranges(config: Any, method: str) -> None:
    """Raise a UserError naming the first parameter outside its declared range or choices."""
    for p in config_params(type(config)):
        v = getattr(config, p.name)
        if p.choices is not None and v not in p.choices:
            raise UserError(f"{method} parameter {p.name} must be one of {', '.join(map(str, p.choices))} (got {v!r})")
        values = v if (p.per_axis and isinstance(v, (tuple, list))) else (v,)
        if p.per_axis and isinstance(v, (tuple, list)) and not 1 <= len(v) <= 3:
            raise UserError(f"{method} parameter {p.name} takes one value or one per spatial axis (got {v})")
        for x in values:
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                if x != x or (p.lo is not None and x < p.lo) or (p.hi is not None and x > p.hi):
                    rng = f"{p.lo if p.lo is not None else '-inf'}..{p.hi if p.hi is not None else 'inf'}"
                    raise UserError(f"{method} parameter {p.name} must be in {rng} (got {v})")


@dataclass(frozen=True)
class ResultLayer:
    """One layer of a result: ``key`` is ``"map"``, ``"roi"`` or a key of ``Explanation.maps``."""

    key: str
    title: str  # e.g. "map", "saliency": the layer is named "<Method> <title> · <run>"
    style: str  # one of LAYER_STYLES
    colorbar: bool = False
    unit: str = ""  # what the values are, for legends (e.g. "Dice points")


@dataclass(frozen=True)
class Stat:
    """A summary statistic of a result (``Explanation.stats[key]``) as the results panel shows it."""

    key: str
    label: str
    fmt: str = "{:.3g}"


#: an explainer run: generator yielding Progress, returning an Explanation
Runner = Callable[..., Generator["Progress", None, "Explanation"]]


@dataclass(frozen=True)
class ExplainerSpec:
    """Everything the rest of the program knows about one method.

    ``run(model, image, roi, target, *, config, pool=None, label=None, geometry=None)``: ``image`` is
    ``(C, *S)`` raw intensities with ``len(S)`` in ``dims``; ``roi`` a bool mask of shape ``S`` (or None when
    the method allows it); returns an Explanation whose ``map`` has shape ``S``.
    ``estimate(config, roi_or_shape, patch)``: upper bound of forward passes, for the cost shown before Run.
    """

    name: str
    title: str
    paper: str
    config: type
    run: Runner
    needs: frozenset[str] = frozenset()
    dims: tuple[int, ...] = (2,)
    stats: tuple[Stat, ...] = ()
    layers: tuple[ResultLayer, ...] = ()
    estimate: Callable[[Any, "np.ndarray | tuple[int, ...]"], int] | None = None
    summary: Callable[["Explanation"], str] | None = None
    description: str = ""
    #: the stage names its Progress events carry, in order (one tuple per way it can run), for "k/n stage"
    stages: tuple[tuple[str, ...], ...] = ()
    #: stats keys written at the top level of a JSON output (``-o result.json``), e.g. Shapley's values
    json_keys: tuple[str, ...] = ()
    #: summary over several models' results of the same input (``--models``: e.g. folds), or None
    aggregate: Callable[[list["Explanation"]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        bad = set(self.needs) - set(NEEDS)
        if bad:
            raise ValueError(f"explainer {self.name!r}: unknown needs {sorted(bad)} (known: {NEEDS})")
        for lay in self.layers:
            if lay.style not in LAYER_STYLES:
                raise ValueError(f"explainer {self.name!r}: layer style {lay.style!r} not in {LAYER_STYLES}")

    @property
    def label(self) -> str:
        """What a method list shows: ``PdCR (Jiang et al. 2026)``."""
        return f"{self.title} ({self.paper})" if self.paper else self.title

    def params(self) -> list[ParamInfo]:
        return config_params(self.config)

    def make_config(self, **values: Any) -> Any:
        """The config with ``values`` (unknown names are an error naming the method's parameters)."""
        known = {p.name for p in self.params()}
        unknown = set(values) - known
        if unknown:
            raise UserError(f"{self.title} has no parameter {', '.join(sorted(unknown))} (it has: "
                            f"{', '.join(sorted(known))})")
        values = {k: (v[0] if len(v) == 1 else tuple(v)) if isinstance(v, list) else v for k, v in values.items()}
        return self.config(**values)

    def uses(self, need: str) -> bool:
        return need in self.needs

    def run_generator(self, model: "SegmentationModel", image: Any, roi: Any, target: int, *, config: Any = None,
                      pool: Any = None, label: Any = None, geometry: dict[str, Any] | None = None
                      ) -> Generator["Progress", None, "Explanation"]:
        """Call ``run`` with only the inputs this method takes."""
        kw: dict[str, Any] = {"config": config if config is not None else self.config(), "geometry": geometry}
        if self.uses("pool"):
            kw["pool"] = pool
        if self.uses("label"):
            kw["label"] = label
        return self.run(model, image, roi, target, **kw)
