"""The plain records a Run is planned with: the dock's :class:`Choices`, one :class:`PlannedRun` per RoI, the
:class:`Estimate` of the cost line (no Qt; shared by the controller and the model-space planner)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import layers as L
from . import pools

if TYPE_CHECKING:
    from ...core.explainers.base import ExplainerSpec
    from ...core.jobs import ExplainJob


@dataclass
class Choices:
    """The dock's inputs for a Run: layer names ('' for none), the class, the pool, the method's parameters."""

    method: str
    image: str
    roi: str = ""
    every_shape: bool = False
    target: int = 1
    class_name: str = ""
    ground_truth: str = ""
    pool: str = pools.POOL_SELF
    pool_folder: str = ""
    exclude: int = 5
    values: dict[str, Any] = field(default_factory=dict)
    roi_slices: int = 2  # 3-D models: a shape drawn on slice z is the RoI on slices z - k .. z + k
    contrasts: tuple[str, ...] = ()  # a multi-channel model: one layer per contrast, in channel order


@dataclass
class PlannedRun:
    """One job of a Run, with where its layers go and how they are named."""

    job: "ExplainJob"
    geom: L.SliceGeometry
    run_id: str
    label: str
    desc: str
    pool: pools.PoolSpec | None = None

    @property
    def spec(self) -> "ExplainerSpec":
        return self.job.spec


@dataclass
class Estimate:
    """The cost line: its text, about how many seconds the upper bound of forward passes takes (NaN: unknown),
    the explained slices (volumes) and whether a Run would start (``ok``)."""

    text: str
    seconds: float = float("nan")
    passes: int = 0
    slices: list[int | None] = field(default_factory=list)
    ok: bool = False
