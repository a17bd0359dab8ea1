"""Paired comparison of two methods over the same cases: mean difference, bootstrap confidence interval, Wilcoxon.

The paired unit is the case: ``difference[case] = arm[case] − baseline[case]``. Cases whose difference is undefined
(NaN, e.g. a Dice that is undefined because reference and prediction are both empty) are left out and counted. The
confidence interval of the mean difference comes from ``scipy.stats.bootstrap`` over cases (resampling the
differences is the paired bootstrap) with a fixed seed, so a report reproduces; the p-value from the two-sided
Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped as in its default ``"wilcox"``
method; all differences zero gives p = 1).
"""
from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: bootstrap interval methods of scipy.stats.bootstrap offered here
CI_METHODS: tuple[str, ...] = ("BCa", "percentile", "basic")
#: differences at most this far from 0 count as ties (Dice values are ratios of voxel counts: float noise only)
TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class PairedDifference:
    """Summary of the per-case differences ``arm − baseline``.

    Attributes:
        mean: mean difference over the cases where it is defined; NaN when there is none.
        ci_low: lower end of the bootstrap confidence interval of ``mean``; NaN with fewer than 2 cases.
        ci_high: upper end of that interval.
        p_value: two-sided Wilcoxon signed-rank p; 1.0 when every difference is 0, NaN with no case.
        num_cases: cases with a defined difference (those the statistics use).
        num_undefined: cases left out because the difference is NaN.
        better: cases with difference > 0 (the arm scores higher).
        worse: cases with difference < 0.
        tied: cases with difference 0.
        ci_method: the bootstrap interval method used (BCa falls back to percentile where BCa is undefined).
    """

    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    num_cases: int
    num_undefined: int
    better: int
    worse: int
    tied: int
    ci_method: str


def check_bootstrap_options(*, n_resamples: int, confidence_level: float, ci_method: str) -> None:
    """Refuse bootstrap options that :func:`paired_difference` cannot use (before any case is read).

    Raises:
        ValueError: ``n_resamples`` < 1, ``confidence_level`` outside (0, 1), or ``ci_method`` not in
            :data:`CI_METHODS`.
    """
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {list(CI_METHODS)}, got {ci_method!r}.")
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must lie in (0, 1), got {confidence_level}.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}.")


def _bootstrap_interval(differences: np.ndarray, *, n_resamples: int, confidence_level: float, method: str,
                        seed: int) -> tuple[float, float, str]:
    """``(low, high, method used)``; BCa falls back to the percentile interval where its jackknife is degenerate
    (scipy then returns NaN, e.g. for two cases)."""
    from scipy.stats import bootstrap

    if differences.size < 2:
        return math.nan, math.nan, method
    if np.ptp(differences) == 0:  # every resample has the same mean
        return float(differences[0]), float(differences[0]), method
    # scipy >= 1.15 names the generator 'rng'; older versions only know 'random_state'
    generator_keyword = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: handled by the fallback below
        interval = bootstrap((differences,), np.mean, n_resamples=n_resamples, confidence_level=confidence_level,
                             method=method, vectorized=True,
                             **{generator_keyword: np.random.default_rng(seed)}).confidence_interval
    if method == "BCa" and not (np.isfinite(interval.low) and np.isfinite(interval.high)):
        return _bootstrap_interval(differences, n_resamples=n_resamples, confidence_level=confidence_level,
                                   method="percentile", seed=seed)
    return float(interval.low), float(interval.high), method


def _wilcoxon_p(differences: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if differences.size == 0:
        return math.nan
    if not np.any(differences):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's notes on small samples and zeros: the method is documented above
        return float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_difference(arm: Sequence[float], baseline: Sequence[float], *, n_resamples: int = 10000,
                      confidence_level: float = 0.95, ci_method: str = "BCa", seed: int = 0) -> PairedDifference:
    """Mean of ``arm − baseline`` over cases, its bootstrap confidence interval and the Wilcoxon p-value.

    Args:
        arm: one value per case (NaN: undefined).
        baseline: the baseline's values of the same cases, in the same order.
        n_resamples: bootstrap resamples.
        confidence_level: e.g. 0.95 for a 95 % interval.
        ci_method: one of :data:`CI_METHODS` (scipy's BCa, percentile or basic interval).
        seed: seed of the bootstrap's random generator; the same inputs and seed give the same interval.

    Returns:
        The :class:`PairedDifference`.

    Raises:
        ValueError: the sequences differ in length, or an option is out of range.
    """
    if len(arm) != len(baseline):
        raise ValueError(f"paired values need one value per case on both sides, got {len(arm)} and {len(baseline)}.")
    check_bootstrap_options(n_resamples=n_resamples, confidence_level=confidence_level, ci_method=ci_method)
    all_differences = np.asarray(arm, dtype=float) - np.asarray(baseline, dtype=float)
    differences = all_differences[~np.isnan(all_differences)]
    differences[np.abs(differences) <= TIE_TOLERANCE] = 0.0  # float noise is a tie, for the counts and the test
    ci_low, ci_high, ci_method = _bootstrap_interval(differences, n_resamples=n_resamples,
                                                     confidence_level=confidence_level, method=ci_method, seed=seed)
    tied = int(np.sum(differences == 0))
    better = int(np.sum(differences > 0))
    return PairedDifference(
        mean=float(differences.mean()) if differences.size else math.nan, ci_low=ci_low, ci_high=ci_high,
        p_value=_wilcoxon_p(differences), num_cases=int(differences.size),
        num_undefined=int(all_differences.size - differences.size), better=better,
        worse=int(differences.size) - better - tied, tied=tied, ci_method=ci_method)
