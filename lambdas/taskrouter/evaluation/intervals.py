"""The Wilson score interval of a proportion, and how many trials a target needs under it.

Wilson's interval rather than the normal approximation's: it stays inside [0, 1] and keeps its
coverage for the small counts and the shares near 1 that a threshold is chosen from (a handful of
kept turns, nearly all right)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def z_score(level: float) -> float:
    """The two-sided normal quantile of a confidence level in (0, 1): 1.96 for 0.95."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, trials: int, level: float) -> Interval:
    """The Wilson score interval of `successes` out of `trials` (> 0) at `level`."""
    z = z_score(level)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def trials_for_lower_bound(target: float, level: float) -> int:
    """The fewest trials whose Wilson lower bound reaches `target` (in (0, 1)) when every one succeeds:
    n of n right bounds the share below at n / (n + z²), so n ≥ target·z² / (1 − target). Fewer trials
    cannot show the target whatever they hold. Settled on `wilson` itself, so that the rule and the
    interval a choice is judged by never disagree by a rounding."""
    z = z_score(level)
    n = max(1, math.ceil(target * z * z / (1 - target)))
    while wilson(n, n, level).low < target:
        n += 1
    while n > 1 and wilson(n - 1, n - 1, level).low >= target:
        n -= 1
    return n
