"""Success predicates, chosen by name in a SceneSpec's `task.success`.

A predicate sees the world's object poses (name -> pos [3], quat wxyz [4]) and the poses at reset,
and returns whether the task is achieved. Each has a strict parameter model validated at load, and
a `margin`: the signed distance (metres) from the verdict flipping, positive when achieved, so an
imagined outcome can say how close it came to the other verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from common.config import Strict
from common.registry import Registry


@dataclass(frozen=True)
class PredicateEntry:
    params: type[Strict]
    fn: Callable[..., bool]
    description: str
    margin: Callable[..., float]


PREDICATES: Registry[PredicateEntry] = Registry("success predicate")

Poses = dict[str, tuple[np.ndarray, np.ndarray]]


class ObjectInRegionParams(Strict):
    object: str
    center: tuple[float, float] = Field(description="region centre (x, y) on the table, metres")
    size: tuple[float, float] = Field(description="region extent (x, y), metres")


def object_in_region(p: ObjectInRegionParams, poses: Poses, initial: Poses) -> bool:
    """The object's centre lies inside an axis-aligned rectangle on the table."""
    pos = poses[p.object][0]
    half = np.asarray(p.size) / 2
    return bool(np.all(np.abs(pos[:2] - np.asarray(p.center)) <= half))


def object_in_region_margin(p: ObjectInRegionParams, poses: Poses, initial: Poses) -> float:
    """How deep inside the rectangle the object's centre is (metres; negative: how far outside an edge)."""
    pos = poses[p.object][0]
    return float(np.min(np.asarray(p.size) / 2 - np.abs(pos[:2] - np.asarray(p.center))))


class ObjectLiftedParams(Strict):
    object: str
    height: float = Field(0.10, gt=0, description="required rise of the object's centre, metres")


def object_lifted(p: ObjectLiftedParams, poses: Poses, initial: Poses) -> bool:
    """The object's centre has risen at least `height` above where it started."""
    return bool(poses[p.object][0][2] - initial[p.object][0][2] >= p.height)


def object_lifted_margin(p: ObjectLiftedParams, poses: Poses, initial: Poses) -> float:
    """The object's rise beyond the required height (metres; negative: how much higher it must go)."""
    return float(poses[p.object][0][2] - initial[p.object][0][2] - p.height)


class ObjectPlacedParams(Strict):
    object: str
    center: tuple[float, float] = Field(description="region centre (x, y) on the table, metres")
    size: tuple[float, float] = Field(description="region extent (x, y), metres")
    rest_height: float = Field(
        gt=0, description="the object's centre height when resting on the table, metres"
    )
    tolerance: float = Field(0.01, gt=0, description="how far above its resting height it may be, metres")


def object_placed(p: ObjectPlacedParams, poses: Poses, initial: Poses) -> bool:
    """The object rests on the table (not held above it) with its centre inside a rectangle."""
    return object_placed_margin(p, poses, initial) >= 0


def object_placed_margin(p: ObjectPlacedParams, poses: Poses, initial: Poses) -> float:
    """The smaller of the depth inside the rectangle and the height left before it counts as held up."""
    pos = poses[p.object][0]
    inside = float(np.min(np.asarray(p.size) / 2 - np.abs(pos[:2] - np.asarray(p.center))))
    return min(inside, p.tolerance - abs(float(pos[2]) - p.rest_height))


class ObjectStackedParams(Strict):
    object: str
    base: str = Field(description="the object it must rest on")
    height: float = Field(gt=0, description="centre-to-centre height when stacked, metres")
    tolerance_xy: float = Field(0.02, gt=0, description="largest horizontal offset of the centres, metres")
    tolerance_z: float = Field(0.01, gt=0, description="largest deviation from `height`, metres")


def object_stacked(p: ObjectStackedParams, poses: Poses, initial: Poses) -> bool:
    """The object sits on `base`: centres within `tolerance_xy` horizontally, `height` apart vertically."""
    return object_stacked_margin(p, poses, initial) >= 0


def object_stacked_margin(p: ObjectStackedParams, poses: Poses, initial: Poses) -> float:
    """The smaller of the horizontal and vertical slack left (metres; negative: how far off)."""
    top, base = poses[p.object][0], poses[p.base][0]
    dxy = float(np.linalg.norm(top[:2] - base[:2]))
    dz = float(top[2] - base[2])
    return min(p.tolerance_xy - dxy, p.tolerance_z - abs(dz - p.height))


PREDICATES.register(
    "object_in_region",
    PredicateEntry(
        ObjectInRegionParams, object_in_region, object_in_region.__doc__ or "", object_in_region_margin
    ),
    description="object centre inside an (x, y) rectangle",
)
PREDICATES.register(
    "object_lifted",
    PredicateEntry(ObjectLiftedParams, object_lifted, object_lifted.__doc__ or "", object_lifted_margin),
    description="object centre raised >= height above its start",
)
PREDICATES.register(
    "object_placed",
    PredicateEntry(ObjectPlacedParams, object_placed, object_placed.__doc__ or "", object_placed_margin),
    description="object resting on the table inside an (x, y) rectangle",
)
PREDICATES.register(
    "object_stacked",
    PredicateEntry(ObjectStackedParams, object_stacked, object_stacked.__doc__ or "", object_stacked_margin),
    description="object resting on another object",
)
