"""Success-rate statistics and the agreement of an evaluator's ranking with ground truth.

    pearson(predicted, real), spearman(...), kendall(...), mmrv(...)   # two success-rate sequences
    wilson_interval(k, n), beta_interval(k, n), beta_posterior_interval(k, n)  # a rate's interval
    paired_difference(perturbed, control)                              # matched seeds, Newcombe
    bootstrap_agreement(pred_outcomes, real_outcomes)                  # metrics with bootstrap intervals
    ratio_interval(a, b)                                               # mean(a) / mean(b), bootstrapped

`mmrv` is SIMPLER's mean maximum rank violation: for each policy i the largest |real_i - real_j|
over the policies j that the two sequences order differently, with strict comparisons
((predicted_i > predicted_j) != (real_i > real_j)), averaged over i. Correlations of a constant
sequence are undefined and returned as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    # inverse normal CDF via the error function's inverse, no scipy needed
    return math.sqrt(2) * _erfinv(confidence)


def _erfinv(y: float) -> float:
    """Inverse error function by Newton iterations on math.erf (|error| < 1e-12)."""
    x = 0.0
    for _ in range(100):
        err = math.erf(x) - y
        if abs(err) < 1e-14:
            break
        x -= err / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def _pair(predicted: ArrayLike, real: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    if p.ndim != 1 or r.ndim != 1:
        raise ValueError(
            f"predicted and real must be 1-D sequences of success rates, got shapes {p.shape} and {r.shape}"
        )
    if len(p) != len(r):
        raise ValueError(f"predicted has {len(p)} policies but real has {len(r)}")
    if len(p) < 2:
        raise ValueError(f"need at least 2 policies to compare rankings, got {len(p)}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r))):
        raise ValueError("predicted and real must not contain NaN or inf")
    return p, r


def pearson(predicted: ArrayLike, real: ArrayLike) -> float:
    """Pearson correlation coefficient."""
    p, r = _pair(predicted, real)
    dp, dr = p - p.mean(), r - r.mean()
    den = math.sqrt(float((dp * dp).sum() * (dr * dr).sum()))
    return float((dp * dr).sum() / den) if den > 0 else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(predicted: ArrayLike, real: ArrayLike) -> float:
    """Spearman rank correlation (Pearson of average ranks, so ties are handled)."""
    p, r = _pair(predicted, real)
    return pearson(_ranks(p), _ranks(r))


def kendall(predicted: ArrayLike, real: ArrayLike) -> float:
    """Kendall's tau-b (accounts for ties in either sequence)."""
    p, r = _pair(predicted, real)
    i, j = np.triu_indices(len(p), k=1)
    sp, sr = np.sign(p[i] - p[j]), np.sign(r[i] - r[j])
    concordant_minus_discordant = float((sp * sr).sum())
    n_p, n_r = float((sp != 0).sum()), float((sr != 0).sum())
    den = math.sqrt(n_p * n_r)
    return concordant_minus_discordant / den if den > 0 else float("nan")


def mmrv(predicted: ArrayLike, real: ArrayLike) -> float:
    """Mean maximum rank violation (SIMPLER): lower is better, 0 = no pair ordered differently."""
    p, r = _pair(predicted, real)
    n = len(p)
    worst = np.zeros(n)
    for a in range(n):
        for b in range(n):
            if (p[a] > p[b]) != (r[a] > r[b]):
                worst[a] = max(worst[a], abs(r[a] - r[b]))
    return float(worst.mean())


def mean_abs_error(predicted: ArrayLike, real: ArrayLike) -> float:
    """Mean over policies of |predicted - real| success rate: calibration, which a ranking metric ignores."""
    p, r = _pair(predicted, real)
    return float(np.mean(np.abs(p - r)))


AGREEMENT = {
    "pearson": pearson,
    "spearman": spearman,
    "kendall": kendall,
    "mmrv": mmrv,
    "mae": mean_abs_error,
}


def beta_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval from Beta quantiles; (0, 1) when n == 0."""
    from scipy.stats import beta

    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    a = (1 - confidence) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(a, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - a, successes + 1, n - successes))
    return lo, hi


def beta_posterior_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Equal-tailed interval of Beta(k + 1, n - k + 1), the posterior of a success rate under a uniform
    prior (RoboLab's per-variant interval; narrower than Clopper-Pearson's `beta_interval`)."""
    from scipy.stats import beta

    a = (1 - confidence) / 2
    return float(beta.ppf(a, k + 1, n - k + 1)), float(beta.ppf(1 - a, k + 1, n - k + 1))


def paired_difference(perturbed: list[bool], control: list[bool], confidence: float = 0.95) -> dict[str, Any]:
    """Difference of success rates (perturbed - control) over matched seeds with Newcombe's (1998) method 10
    interval for paired proportions (Wilson intervals of each rate combined through the phi correlation
    of the pairs); `significant` when the interval excludes 0."""
    if len(perturbed) != len(control):
        raise ValueError("paired outcomes need one perturbed and one control outcome per seed")
    n = len(perturbed)
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n_pairs": 0, "significant": False}
    x, y = np.asarray(perturbed, bool), np.asarray(control, bool)
    a, b, c, d = (int(np.sum(m)) for m in (x & y, x & ~y, ~x & y, ~x & ~y))
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    den = float(a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / np.sqrt(den) if den > 0 else 0.0
    if b == c == 0 and den > 0:
        # no seed changed outcome: method 10 would give a zero-width interval (phi = 1); Newcombe's
        # continuity-corrected phi keeps the uncertainty a finite number of pairs leaves
        phi = max(a * d - b * c - n / 2, 0.0) / np.sqrt(den)
    dl = np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    du = np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    theta = p1 - p2
    lo, hi = max(theta - dl, -1.0), min(theta + du, 1.0)
    return {
        "value": float(theta),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_pairs": n,
        "gained": b,
        "lost": c,
        "significant": bool(lo > 0 or hi < 0),
    }


def bootstrap_agreement(
    pred_outcomes: Sequence[Sequence[bool]],
    real_outcomes: Sequence[Sequence[bool]],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each agreement metric with a percentile bootstrap interval over episodes.

    pred_outcomes[i] / real_outcomes[i]: per-episode success of policy i in the evaluated world and in
    ground truth, on the same seeds (paired: a resample draws the same seed indices on both sides).
    Returns {metric: {"value", "low", "high"}}; resamples where a metric is undefined are skipped.
    """
    if len(pred_outcomes) != len(real_outcomes):
        raise ValueError(f"{len(pred_outcomes)} policies evaluated but {len(real_outcomes)} in ground truth")
    P = [np.asarray(x, dtype=np.float64) for x in pred_outcomes]
    R = [np.asarray(x, dtype=np.float64) for x in real_outcomes]
    for i, (a, b) in enumerate(zip(P, R, strict=True)):
        if len(a) != len(b) or len(a) == 0:
            raise ValueError(
                f"policy {i}: {len(a)} evaluated episodes vs {len(b)} ground-truth episodes (need equal, > 0)"
            )
    rng = np.random.default_rng(seed)
    point = {k: f([a.mean() for a in P], [b.mean() for b in R]) for k, f in AGREEMENT.items()}
    samples: dict[str, list[float]] = {k: [] for k in AGREEMENT}
    for _ in range(n_boot):
        idx = [rng.integers(0, len(a), len(a)) for a in P]
        ps = [a[i].mean() for a, i in zip(P, idx, strict=True)]
        rs = [b[i].mean() for b, i in zip(R, idx, strict=True)]
        for k, f in AGREEMENT.items():
            v = f(ps, rs)
            if not math.isnan(v):
                samples[k].append(v)
    q = (1 - confidence) / 2
    out = {}
    for k in AGREEMENT:
        s_ = np.asarray(samples[k])
        lo, hi = (
            (float(np.quantile(s_, q)), float(np.quantile(s_, 1 - q)))
            if len(s_)
            else (float("nan"), float("nan"))
        )
        out[k] = {"value": point[k], "low": lo, "high": hi}
    return out


def ratio_interval(
    a: ArrayLike, b: ArrayLike, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """mean(a) / mean(b) of two independent samples (e.g. per-transition errors of two generators) with a
    percentile bootstrap interval, each sample resampled on its own: {"value", "low", "high"}."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(x) == 0 or len(y) == 0:
        raise ValueError(f"a ratio of means needs two non-empty samples, got {len(x)} and {len(y)}")
    if y.mean() <= 0:
        raise ValueError("the denominator's mean must be positive")
    rng = np.random.default_rng(seed)
    num = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    den = y[rng.integers(0, len(y), (n_boot, len(y)))].mean(1)
    r = num / np.maximum(den, np.finfo(np.float64).tiny)
    q = (1 - confidence) / 2
    return {
        "value": float(x.mean() / y.mean()),
        "low": float(np.quantile(r, q)),
        "high": float(np.quantile(r, 1 - q)),
    }


def pooled_success(per: dict[str, Any], paths: list[str], episodes: int) -> dict[str, Any]:
    """The success of an arm of checkpoints (e.g. one per training seed), each evaluated on the same
    `episodes` seeds (`per`: an evaluation's `policies`): the pooled rate with its Wilson 95% interval, and
    each checkpoint's rate."""
    k = sum(round(per[p]["success_rate"] * episodes) for p in paths)
    total = episodes * len(paths)
    return {
        "success_rate": k / total,
        "ci": list(wilson_interval(k, total)),
        "per_seed": [per[p]["success_rate"] for p in paths],
        "episodes": total,
    }


def arms_table(arms: dict[str, dict[str, Any]], title: str) -> Any:
    """A rich Table of `pooled_success` arms (with an optional `gain_points` against a reference arm)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("arm", "success", "95% CI", "per training seed", "gain (points)"):
        table.add_column(col)
    for arm, v in arms.items():
        table.add_row(
            arm,
            f"{v['success_rate']:.2f}",
            f"[{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]",
            " ".join(f"{x:.2f}" for x in v["per_seed"]),
            f"{v.get('gain_points', 0.0):+.1f}",
        )
    return table
