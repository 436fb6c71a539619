"""Success-rate statistics."""

from __future__ import annotations

import math



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
