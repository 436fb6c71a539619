"""Success-rate intervals and the evaluator agreement metrics on known values."""

from __future__ import annotations

import numpy as np
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


# ---------------------------------------------------------------- agreement metrics (hand-computed)
from policy_eval.metrics import beta_interval, bootstrap_agreement, kendall, mmrv, pearson, spearman  # noqa: E402

TABLES = [
    # predicted, real, pearson, spearman, kendall (tau-b), mmrv
    ([0.1, 0.5, 0.9], [0.2, 0.4, 0.8], 0.24 / (0.32 * 0.56 / 3) ** 0.5, 1.0, 1.0, 0.0),
    ([0.9, 0.5, 0.1], [0.1, 0.5, 0.9], -1.0, -1.0, -1.0, 2.0 / 3),  # perfectly reversed
    # ties in predicted: pair (0, 1) is tied there but not in real -> only policy 1 sees a violation (0.2)
    ([0.5, 0.5, 0.8, 0.2], [0.4, 0.6, 0.9, 0.1], 0.24 / 0.0612**0.5, 4.5 / 22.5**0.5, 5 / 30**0.5, 0.05),
]


@pytest.mark.parametrize("pred, real, r, rho, tau, m", TABLES)
def test_agreement_metrics_on_hand_computed_tables(pred, real, r, rho, tau, m):
    assert pearson(pred, real) == pytest.approx(r, abs=1e-12)
    assert spearman(pred, real) == pytest.approx(rho, abs=1e-12)
    assert kendall(pred, real) == pytest.approx(tau, abs=1e-12)
    assert mmrv(pred, real) == pytest.approx(m, abs=1e-12)


@pytest.mark.parametrize("pred, real, r, rho, tau, m", TABLES)
def test_agreement_metrics_match_scipy(pred, real, r, rho, tau, m):
    from scipy import stats

    assert pearson(pred, real) == pytest.approx(stats.pearsonr(pred, real)[0], abs=1e-12)
    assert spearman(pred, real) == pytest.approx(stats.spearmanr(pred, real)[0], abs=1e-12)
    assert kendall(pred, real) == pytest.approx(stats.kendalltau(pred, real)[0], abs=1e-12)


def test_mmrv_is_simpler_strict_and_asymmetric():
    # all-equal predictions: "i above j" is never predicted, so a pair counts only for the policy that is
    # really above the other: policy 0 has no violation, 1 has 0.4 (over 0), 2 has max(0.8, 0.4)
    assert mmrv([0.3, 0.3, 0.3], [0.1, 0.5, 0.9]) == pytest.approx((0.0 + 0.4 + 0.8) / 3)
    assert mmrv([0.1, 0.5, 0.9], [0.3, 0.3, 0.3]) == pytest.approx(
        0.0
    )  # violations of size |real_i - real_j| = 0
    assert pearson([0.3, 0.3], [0.1, 0.9]) != pearson([0.3, 0.3], [0.1, 0.9])  # NaN: undefined for a constant


@pytest.mark.parametrize(
    "bad, match",
    [
        (([0.1, 0.2], [0.1]), "2 policies but real has 1"),
        (([0.1], [0.1]), "at least 2 policies"),
        (([0.1, float("nan")], [0.1, 0.2]), "NaN"),
    ],
)
def test_agreement_metrics_reject_bad_input(bad, match):
    for f in (pearson, spearman, kendall, mmrv):
        with pytest.raises(ValueError, match=match):
            f(*bad)


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        (0, 10, 0.0, 1 - 0.025 ** (1 / 10)),  # closed forms at the ends
        (10, 10, 0.025 ** (1 / 10), 1.0),
        (5, 10, 0.18709, 0.81291),  # tabulated
        (1, 20, 0.0012650, 0.24873),
    ],
)
def test_beta_interval_known_values(k, n, lo, hi):
    a, b = beta_interval(k, n)
    assert a == pytest.approx(lo, abs=2e-5) and b == pytest.approx(hi, abs=2e-5)
    assert beta_interval(0, 0) == (0.0, 1.0)
    w = wilson_interval(k, n)
    assert b - a >= (w[1] - w[0]) - 1e-9  # exact intervals are never narrower than Wilson here


def test_bootstrap_agreement_intervals():
    rng = np.random.default_rng(0)
    rates = [0.1, 0.3, 0.5, 0.7, 0.9]
    real = [rng.random(60) < p for p in rates]
    same = bootstrap_agreement(real, real, n_boot=300)
    assert same["pearson"]["value"] == pytest.approx(1.0) and same["mmrv"]["high"] == 0.0
    noisy = [rng.random(60) < p for p in rates]
    res = bootstrap_agreement(noisy, real, n_boot=300, seed=1)
    for k in ("pearson", "spearman", "kendall"):
        assert res[k]["low"] <= res[k]["value"] <= res[k]["high"] and res[k]["low"] > 0
    assert res == bootstrap_agreement(noisy, real, n_boot=300, seed=1)  # seeded
    reversed_ = bootstrap_agreement(noisy[::-1], real, n_boot=300)
    assert reversed_["pearson"]["high"] < 0
    with pytest.raises(ValueError, match="policy 0"):
        bootstrap_agreement([[True]], [[True, False]])


def test_pooled_success_counts_every_checkpoints_episodes():
    from policy_eval.metrics import pooled_success

    per = {"a": {"success_rate": 0.5}, "b": {"success_rate": 0.9}, "c": {"success_rate": 0.0}}
    r = pooled_success(per, ["a", "b"], 10)
    assert r["success_rate"] == pytest.approx(0.7) and r["episodes"] == 20 and r["per_seed"] == [0.5, 0.9]
    assert tuple(r["ci"]) == pytest.approx(wilson_interval(14, 20))
    assert pooled_success(per, ["c"], 50)["ci"][0] == 0.0


def test_ratio_interval_covers_the_true_ratio_and_narrows_with_data():
    from policy_eval.metrics import ratio_interval

    rng = np.random.default_rng(0)
    draws = [
        ratio_interval(rng.exponential(1.0, 50), rng.exponential(2.0, 50), n_boot=500) for _ in range(60)
    ]
    covered = np.mean([r["low"] < 0.5 < r["high"] for r in draws])
    assert 0.85 <= covered <= 1.0  # a 95% interval
    assert all(r["low"] < r["value"] < r["high"] for r in draws)
    small = draws[0]
    big = ratio_interval(rng.exponential(1.0, 5000), rng.exponential(2.0, 5000))
    assert big["high"] - big["low"] < 0.3 * (small["high"] - small["low"])
    assert abs(big["value"] - 0.5) < 0.03
    with pytest.raises(ValueError, match="non-empty"):
        ratio_interval([], [1.0])
