"""The two-object predicates: verdict and margin agree, and the margin is the distance to the verdict flipping."""

from __future__ import annotations

import numpy as np
import pytest

from scenes.predicates import (
    ObjectPlacedParams,
    ObjectStackedParams,
    object_placed,
    object_placed_margin,
    object_stacked,
    object_stacked_margin,
)

Q = np.array([1.0, 0, 0, 0])


def poses(**positions):
    return {k: (np.asarray(v, float), Q) for k, v in positions.items()}


def test_object_placed():
    p = ObjectPlacedParams(object="cube", center=(0.5, 0.1), size=(0.1, 0.1), rest_height=0.025)
    inside = poses(cube=[0.52, 0.1, 0.025])
    assert object_placed(p, inside, inside) and object_placed_margin(p, inside, inside) == pytest.approx(0.01)
    held = poses(cube=[0.5, 0.1, 0.06])  # above the square, still in the hand
    assert not object_placed(p, held, held) and object_placed_margin(p, held, held) == pytest.approx(-0.025)
    outside = poses(cube=[0.58, 0.1, 0.025])
    assert not object_placed(p, outside, outside)
    assert object_placed_margin(p, outside, outside) == pytest.approx(-0.03)


def test_object_stacked():
    p = ObjectStackedParams(object="cube", base="blue", height=0.05)
    on = poses(cube=[0.5, 0.105, 0.075], blue=[0.5, 0.1, 0.025])
    assert object_stacked(p, on, on) and object_stacked_margin(p, on, on) == pytest.approx(0.01)
    beside = poses(cube=[0.56, 0.1, 0.025], blue=[0.5, 0.1, 0.025])
    assert not object_stacked(p, beside, beside) and object_stacked_margin(p, beside, beside) < -0.03
    slid = poses(cube=[0.525, 0.1, 0.075], blue=[0.5, 0.1, 0.025])
    assert object_stacked_margin(p, slid, slid) == pytest.approx(-0.005)
    assert not object_stacked(p, slid, slid)
