"""Scores and their 95% confidence intervals from aggregated counts (never from rows)."""

from __future__ import annotations

import math

Z95 = 1.96


def nps(promoters: int, passives: int, detractors: int) -> tuple[float | None, tuple[float, float] | None]:
    """NPS = %promoters - %detractors (-100..100). The interval uses the standard error of the
    difference of two proportions of one multinomial sample:
    sqrt((pp(1-pp) + pd(1-pd) + 2 pp pd) / n); no interval for fewer than 2 answers."""
    n = promoters + passives + detractors
    if n == 0:
        return None, None
    pp, pd = promoters / n, detractors / n
    score = 100.0 * (pp - pd)
    if n < 2:
        return score, None
    half = Z95 * math.sqrt((pp * (1 - pp) + pd * (1 - pd) + 2 * pp * pd) / n) * 100.0
    return score, (max(-100.0, score - half), min(100.0, score + half))


def csat(satisfied: int, n: int) -> tuple[float | None, tuple[float, float] | None]:
    """CSAT = % of answers 4-5 on 1-5, with the Wilson score interval (sound for small n and for 0% or 100%)."""
    if n == 0:
        return None, None
    p = satisfied / n
    z2 = Z95 * Z95
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return 100.0 * p, (max(0.0, 100.0 * (center - half)), min(100.0, 100.0 * (center + half)))


def mean_with_ci(
    total: float, total_sq: float, n: int, scale: tuple[float, float] | None = None
) -> tuple[float | None, tuple[float, float] | None]:
    """Mean score with mean +- 1.96 * sd / sqrt(n) (sample sd); no interval for fewer than 2
    answers. With `scale` (min, max) the interval is cut at the scale's ends, as the NPS and
    CSAT intervals are: a mean of 1-7 answers is never below 1 or above 7."""
    if n == 0:
        return None, None
    mean = total / n
    if n < 2:
        return mean, None
    variance = max(0.0, (total_sq - total * total / n) / (n - 1))
    half = Z95 * math.sqrt(variance) / math.sqrt(n)
    low, high = mean - half, mean + half
    if scale is not None:
        low, high = max(scale[0], low), min(scale[1], high)
    return mean, (low, high)


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
