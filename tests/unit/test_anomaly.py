"""The runtime anomaly detector: its rules, and precision / recall on labelled synthetic data."""

from __future__ import annotations

import pytest

from app.core.anomaly import (
    RUNTIME_ANOMALY, RUNTIME_OVERRUN, RuntimeDetector, check_completed, check_overrun, evaluate, labelled_runtimes,
    learns,
)
from app.core.metrics_math import welford_add
from app.core.settings import Settings


def _stats(values):  # noqa: ANN001, ANN202
    state = None
    for v in values:
        state = welford_add(state, x=v)
    return state


def test_nothing_is_flagged_before_the_minimum_sample_count():
    stats = _stats([100.0, 101.0, 99.0])
    assert check_completed(stats=stats, runtime_s=10_000, min_samples=4, sigma=2.0) is None
    assert check_overrun(stats=stats, elapsed_s=10_000, min_samples=4, ratio=1.5) is None


def test_completed_rule_flags_beyond_sigma_both_ways():
    stats = _stats([100.0 + (i % 5) for i in range(20)])  # mean 102, σ ~1.45
    assert check_completed(stats=stats, runtime_s=103.0, min_samples=10, sigma=2.0) is None
    slow = check_completed(stats=stats, runtime_s=110.0, min_samples=10, sigma=2.0)
    fast = check_completed(stats=stats, runtime_s=90.0, min_samples=10, sigma=2.0)
    assert slow is not None and slow.rule == RUNTIME_ANOMALY and slow.score > 2 and slow.samples == 20
    assert fast is not None and fast.score < -2
    assert "standard deviations" in slow.describe(job_id="j1", job_type="imaging")
    constant = _stats([50.0] * 12)
    assert check_completed(stats=constant, runtime_s=50.0, min_samples=10, sigma=2.0) is None
    assert check_completed(stats=constant, runtime_s=51.0, min_samples=10, sigma=2.0) is not None


def test_overrun_rule_fires_past_the_ratio_of_the_mean():
    stats = _stats([1000.0] * 10)
    assert check_overrun(stats=stats, elapsed_s=1500.0, min_samples=10, ratio=1.5) is None
    found = check_overrun(stats=stats, elapsed_s=1501.0, min_samples=10, ratio=1.5)
    assert found is not None and found.rule == RUNTIME_OVERRUN and found.score == pytest.approx(1.501)


def test_gross_outliers_stay_out_of_the_baseline():
    detector = RuntimeDetector(min_samples=10, sigma=2.0)
    for i in range(30):
        assert detector.observe(job_type="t", runtime_s=1000.0 + (i % 7) * 10) is None
    before = dict(detector.states["t"])
    assert detector.observe(job_type="t", runtime_s=50_000.0) is not None
    assert detector.states["t"] == before  # not learned
    mild = check_completed(stats=before, runtime_s=before["mean"] + 2.5 * 21.0, min_samples=10, sigma=2.0)
    assert mild is not None and learns(verdict=mild, sigma=2.0)
    assert learns(verdict=None, sigma=2.0)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_precision_recall_on_the_labelled_synthetic_set(seed):
    settings = Settings()
    data = labelled_runtimes(n=3000, seed=seed)
    result = evaluate(data=data, min_samples=settings.anomaly_min_samples, sigma=settings.anomaly_sigma)
    print(f"\nanomaly detector on labelled set (seed {seed}, {len(data)} jobs, "
          f"{sum(d.anomalous for d in data)} anomalous): precision {result.precision:.3f}, "
          f"recall {result.recall:.3f}, accuracy {result.accuracy:.4f} "
          f"(tp {result.true_positives}, fp {result.false_positives}, fn {result.false_negatives})")
    assert result.accuracy > 0.95
    assert result.precision > 0.95
    assert result.recall > 0.9


def test_gaussian_noise_costs_precision_as_a_two_sigma_rule_must():
    data = labelled_runtimes(n=3000, seed=12, noise="gaussian")
    result = evaluate(data=data, min_samples=10, sigma=2.0)
    print(f"\nanomaly detector on gaussian-noise set: precision {result.precision:.3f}, "
          f"recall {result.recall:.3f}, accuracy {result.accuracy:.4f}")
    assert result.recall > 0.9 and result.accuracy > 0.95
    # about 4.6 % of normal jobs lie beyond 2σ of a normal distribution: they are flagged
    normal = sum(not d.anomalous for d in data)
    assert 0.01 < result.false_positives / normal < 0.08
    with pytest.raises(ValueError):
        labelled_runtimes(noise="poisson")
