"""The explainer registry: the only place that maps a method name to its code.

Built-in methods register themselves when :mod:`napari_seg_explain.core.explainers` is imported; a plugin or
a test registers its own with :func:`register` and then appears in the CLI, the widget, the result layers
and the results folder with no other edit.
"""

from __future__ import annotations

from ..errors import UserError
from .base import ExplainerSpec

_SPECS: dict[str, ExplainerSpec] = {}


def register(spec: ExplainerSpec, *, replace: bool = False) -> ExplainerSpec:
    """Add ``spec`` under ``spec.name`` (lower case); a second spec of the same name needs ``replace``."""
    name = spec.name.lower()
    if name != spec.name or not name.replace("_", "").isalnum():
        raise ValueError(f"explainer name {spec.name!r} must be lower-case letters, digits and '_'")
    if name in _SPECS and not replace and _SPECS[name] is not spec:
        raise ValueError(f"an explainer named {name!r} is already registered")
    _SPECS[name] = spec
    return spec


def unregister(name: str) -> None:
    _SPECS.pop(name, None)


def get(name: str) -> ExplainerSpec:
    """The spec of ``name``; an unknown name is a UserError listing the known ones."""
    _load_builtins()
    try:
        return _SPECS[name.lower()]
    except KeyError:
        raise UserError(f"unknown explainer {name!r}; available: {', '.join(names())}") from None


def names() -> list[str]:
    _load_builtins()
    return list(_SPECS)


def specs() -> list[ExplainerSpec]:
    _load_builtins()
    return list(_SPECS.values())


def _load_builtins() -> None:
    from . import pdcr  # noqa: F401 - each module registers its spec on import; PdCR is listed first
    from . import misure  # noqa: F401
    from . import shapley  # noqa: F401
    from . import seg_gradcam  # noqa: F401 - baselines users compare PdCR and MiSuRe against
    from . import rise  # noqa: F401
    from . import occlusion  # noqa: F401
