"""Multi-seed statistics in the style of rliable (Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice", NeurIPS 2021), written on scipy because rliable does not import here.

Scores come as a list of per-task arrays ``[x_1 (n_1,), …, x_M (n_M,)]`` (one task is the common case:
one metric of one configuration over seeds). Aggregates pool all runs of all tasks:

- IQM = mean of the middle 50 % of the pooled scores, ``scipy.stats.trim_mean(x, 0.25)``;
- stratified bootstrap CI: resample runs with replacement *within* each task, recompute the aggregate
  (``scipy.stats.bootstrap`` with one sample per task, ``paired=False``, percentile intervals as rliable);
- performance profile: ``F(τ) = 1/M Σ_m 1/n_m Σ_i [x_{m,i} > τ]``, the fraction of runs above τ;
- curves over seeds: each run's (step, value) curve is interpolated onto a common step grid first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from mmssl.errors import DataError

Scores = Sequence[np.ndarray] | np.ndarray


def iqm(x, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean along ``axis``: the mean after trimming 25 % from each end."""
    return stats.trim_mean(x, 0.25, axis=axis)


def mean(x, axis: int = -1) -> np.ndarray | float:
    return np.mean(x, axis=axis)


def std(x, axis: int = -1) -> np.ndarray | float:
    """Sample standard deviation (ddof=1); 0 for a single run."""
    x = np.asarray(x, dtype=float)
    return np.std(x, axis=axis, ddof=1) if x.shape[axis] > 1 else np.zeros(np.delete(x.shape, axis % x.ndim))


def median(x, axis: int = -1) -> np.ndarray | float:
    return np.median(x, axis=axis)


AGGREGATES: dict[str, Callable] = {"iqm": iqm, "mean": mean, "median": median}


def _tasks(scores: Scores) -> list[np.ndarray]:
    """Normalise to a list of 1-D float arrays, one per task; a 2-D array is (runs, tasks) as in rliable."""
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        tasks = [scores[:, m] for m in range(scores.shape[1])]
    elif isinstance(scores, np.ndarray) and scores.ndim == 1:
        tasks = [scores]
    else:
        tasks = [np.asarray(t, dtype=float).reshape(-1) for t in scores]
    tasks = [np.asarray(t, dtype=float) for t in tasks]
    if not tasks or any(t.size == 0 for t in tasks):
        raise DataError("no scores to aggregate: every task needs at least one run")
    if any(not np.all(np.isfinite(t)) for t in tasks):
        raise DataError("scores contain NaN or Inf; drop diverged runs or report them separately")
    return tasks


def aggregate(scores: Scores, statistic: str | Callable = "iqm") -> float:
    """The aggregate (IQM by default) of all runs of all tasks pooled."""
    fn = AGGREGATES[statistic] if isinstance(statistic, str) else statistic
    return float(fn(np.concatenate(_tasks(scores))))


def bootstrap_ci(scores: Scores, statistic: str | Callable = "iqm", confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Stratified percentile bootstrap CI of the pooled aggregate: (low, high).

    Each task's runs are resampled independently (scipy treats the tasks as separate samples), which is
    rliable's ``StratifiedBootstrap``. With a single run everywhere the interval is the point itself.
    """
    tasks = _tasks(scores)
    fn = AGGREGATES[statistic] if isinstance(statistic, str) else statistic
    if all(np.ptp(t) == 0 for t in tasks):  # every resample is the data itself
        value = float(fn(np.concatenate(tasks)))
        return value, value
    # scipy needs two or more observations per sample; a single-run task resamples to itself anyway
    varying = [t for t in tasks if t.size > 1]
    fixed = np.concatenate([t for t in tasks if t.size == 1] or [np.empty(0)])

    def pooled(*samples, axis=-1):
        samples = [np.moveaxis(s, axis, -1) for s in samples]
        const = np.broadcast_to(fixed, samples[0].shape[:-1] + fixed.shape)
        return fn(np.concatenate([*samples, const], axis=-1), axis=-1)

    res = stats.bootstrap(varying, pooled, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                          paired=False, vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(scores: Scores, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """n, mean, std, IQM and the bootstrap CI of the IQM, as one row of a results table."""
    pooled = np.concatenate(_tasks(scores))
    low, high = bootstrap_ci(scores, "iqm", confidence, n_resamples, seed)
    return {"n": int(pooled.size), "mean": float(pooled.mean()), "std": float(std(pooled)), "iqm": float(iqm(pooled)),
            "ci_low": low, "ci_high": high}


def performance_profile(scores: Scores, taus: np.ndarray) -> np.ndarray:
    """Score distribution ``F(τ)`` (T,): fraction of runs with score > τ, averaged over tasks."""
    taus = np.asarray(taus, dtype=float)
    return np.mean([(t[:, None] > taus[None, :]).mean(0) for t in _tasks(scores)], axis=0)


def performance_profile_ci(scores: Scores, taus: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F(τ)`` with stratified bootstrap bands: (profile (T,), low (T,), high (T,))."""
    tasks, taus = _tasks(scores), np.asarray(taus, dtype=float)
    profile = performance_profile(tasks, taus)
    if all(t.size == 1 for t in tasks):
        return profile, profile.copy(), profile.copy()

    def fraction_above(*samples, axis=-1):
        # samples[m]: (..., n_m) → (..., T) averaged over tasks; the τ axis is moved first as scipy expects
        per_task = [(np.moveaxis(s, axis, -1)[..., None] > taus).mean(-2) for s in samples]
        return np.moveaxis(np.mean(per_task, axis=0), -1, 0)

    res = stats.bootstrap(tasks, fraction_above, n_resamples=n_resamples, confidence_level=confidence,
                          method="percentile", paired=False, vectorized=True, rng=np.random.default_rng(seed))
    return profile, np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)


def interpolate_curves(curves: Sequence[tuple[np.ndarray, np.ndarray]], num: int = 100,
                       grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Put runs logged at different steps on one step grid: (grid (G,), values (R, G)).

    The default grid spans the steps every run covers (max of the first steps to min of the last), so
    nothing is extrapolated; inside it values are linearly interpolated (``np.interp``).
    """
    if not curves:
        raise DataError("no curves to aggregate")
    clean = []
    for steps, values in curves:
        steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
        order = np.argsort(steps, kind="stable")
        if steps.size == 0:
            raise DataError("a run has an empty curve; check that the metric was logged")
        clean.append((steps[order], values[order]))
    if grid is None:
        start, stop = max(s[0] for s, _ in clean), min(s[-1] for s, _ in clean)
        if start > stop:
            raise DataError(f"curves do not overlap (latest start {start:g} > earliest end {stop:g}); pass a grid")
        grid = np.linspace(start, stop, num) if stop > start else np.array([start])
    grid = np.asarray(grid, dtype=float)
    return grid, np.stack([np.interp(grid, s, v) for s, v in clean])


def aggregate_curves(curves: Sequence[tuple[np.ndarray, np.ndarray]], statistic: str = "iqm", num: int = 100,
                     confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Aggregate over seeds at each grid step: ``{"step", "value", "low", "high"}``, each (G,).

    The band is a percentile bootstrap over runs at each step (one vectorised scipy call over the grid).
    """
    grid, values = interpolate_curves(curves, num)
    fn = AGGREGATES[statistic]
    point = np.asarray(fn(values, axis=0), dtype=float)
    if values.shape[0] == 1:
        return {"step": grid, "value": point, "low": point.copy(), "high": point.copy()}
    res = stats.bootstrap((values,), fn, axis=0, n_resamples=n_resamples, confidence_level=confidence,
                          method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    # a step where every run has the same value gives a NaN interval; the band collapses to the point
    low = np.where(np.isnan(res.confidence_interval.low), point, res.confidence_interval.low)
    high = np.where(np.isnan(res.confidence_interval.high), point, res.confidence_interval.high)
    return {"step": grid, "value": point, "low": low, "high": high}
