"""IQM, stratified bootstrap, performance profiles and curve aggregation on hand-computable inputs."""

import numpy as np
import pytest

from mmssl.errors import DataError
from mmssl.eval import stats


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm(np.arange(1, 9.0)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # an outlier moves the mean but not the IQM: middle half of [0..6, 100] is 2, 3, 4, 5
    x = np.array([0, 1, 2, 3, 4, 5, 6, 100.0])
    assert stats.iqm(x) == pytest.approx(3.5)
    assert stats.mean(x) == pytest.approx(121 / 8)


def test_std_is_sample_std_and_zero_for_one_run():
    assert stats.std(np.array([1, 2, 3, 4.0])) == pytest.approx(np.sqrt(5 / 3))
    assert stats.summarize(np.array([0.7]))["std"] == 0.0


def test_bootstrap_two_points_covers_all_resample_means():
    # resample means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 → the 95% interval is [0, 1]
    assert stats.bootstrap_ci(np.array([0.0, 1.0]), "mean") == (0.0, 1.0)


def test_bootstrap_is_stratified_over_tasks():
    # task A = [0, 1] is resampled on its own, task B = [10, 10, 10] always stays 30 in the sum:
    # pooled means are (0+0+30)/5, (0+1+30)/5, (1+1+30)/5 → interval [6.0, 6.4]
    low, high = stats.bootstrap_ci([np.array([0, 1.0]), np.array([10, 10, 10.0])], "mean")
    assert (low, high) == pytest.approx((6.0, 6.4))
    # pooling the same numbers without strata mixes the tasks and is far wider
    low_p, high_p = stats.bootstrap_ci(np.array([0, 1, 10, 10, 10.0]), "mean")
    assert high_p - low_p > 3


def test_bootstrap_single_run_tasks_are_fixed():
    # a one-run task resamples to itself: pooled means of [0, 1] with a fixed 5 are 5/3, 2, 7/3
    assert stats.bootstrap_ci([np.array([0, 1.0]), np.array([5.0])], "mean") == pytest.approx((5 / 3, 7 / 3))
    assert stats.bootstrap_ci([np.array([0.3])]) == (0.3, 0.3)


def test_summarize_ci_contains_iqm_and_is_seeded():
    x = np.random.default_rng(0).normal(size=20)
    row = stats.summarize(x)
    assert row["n"] == 20 and row["ci_low"] < row["iqm"] < row["ci_high"]
    assert stats.summarize(x) == row


def test_bad_scores_are_rejected():
    with pytest.raises(DataError, match="NaN"):
        stats.aggregate(np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="at least one run"):
        stats.aggregate([np.array([1.0]), np.array([])])


def test_performance_profile_counts_runs_above_tau_averaged_over_tasks():
    assert stats.performance_profile(np.array([0, 1, 2, 3.0]), [0.5, 2.5]) == pytest.approx([0.75, 0.25])
    # task A: 0 of 2 above 1.5, task B: 4 of 4 → (0 + 1) / 2
    assert stats.performance_profile([np.array([0, 1.0]), np.array([2, 3, 4, 5.0])], [1.5]) == pytest.approx([0.5])
    taus = np.linspace(-1, 6, 15)
    profile, low, high = stats.performance_profile_ci([np.array([0, 1.0, 2]), np.array([2, 3, 4, 5.0])], taus)
    assert profile.shape == low.shape == high.shape == (15,)
    assert np.all(low <= profile + 1e-12) and np.all(profile <= high + 1e-12)
    assert np.all(np.diff(profile) <= 0) and profile[0] == 1 and profile[-1] == 0


def test_interpolate_curves_onto_common_grid():
    curves = [(np.array([0, 10.0]), np.array([0, 10.0])), (np.array([20, 0, 5.0]), np.array([20, 0, 5.0]))]
    grid, values = stats.interpolate_curves(curves, num=11)
    assert grid == pytest.approx(np.arange(11.0))  # overlap of [0, 10] and [0, 20]
    assert values == pytest.approx(np.stack([grid, grid]))
    with pytest.raises(DataError, match="do not overlap"):
        stats.interpolate_curves([(np.array([0, 1.0]), np.zeros(2)), (np.array([2, 3.0]), np.zeros(2))])


def test_aggregate_curves_iqm_and_band():
    steps = np.array([0, 10, 20.0])
    curves = [(steps, steps + k) for k in range(4)]  # offsets 0..3 → IQM offset = mean(1, 2) = 1.5
    agg = stats.aggregate_curves(curves, num=3)
    assert agg["step"] == pytest.approx(steps)
    assert agg["value"] == pytest.approx(steps + 1.5)
    assert np.all(agg["low"] <= agg["value"]) and np.all(agg["value"] <= agg["high"])
    assert np.all(agg["high"] - agg["low"] > 0)
