"""Wilson interval against known values."""

from __future__ import annotations

import pytest

from policy_eval.metrics import wilson_interval


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        # reference values from the closed form with z = 1.959964
        (0, 10, 0.0, 0.27753),
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        (81, 100, 0.72221, 0.87486),
    ],
)
def test_wilson_known_values(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert a == pytest.approx(lo, abs=2e-5) and b == pytest.approx(hi, abs=2e-5)


def test_wilson_narrows_with_n_and_contains_p():
    w10 = wilson_interval(7, 10)
    w1000 = wilson_interval(700, 1000)
    assert w10[0] < 0.7 < w10[1] and w1000[0] < 0.7 < w1000[1]
    assert (w1000[1] - w1000[0]) < (w10[1] - w10[0]) / 5
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(5, 10, 0.99)[0] < wilson_interval(5, 10, 0.9)[0]


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
