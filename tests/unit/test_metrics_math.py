"""The pure math of the metrics analytics, checked against direct recomputation."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from app.core.metrics_math import (
    METRICS, RUNTIME_BUCKETS, add_sample, bucket_of, expired, merge_rollups, parse_window_key, sample_problem,
    summarize, top_n, update_top, welford_add, welford_merge, welford_std, window_key, window_start,
)


def _sample(rng: random.Random) -> dict[str, float]:
    return {"cpu_pct": rng.uniform(0, 100), "gpu_pct": rng.uniform(0, 100), "memory_gb": rng.uniform(0, 512),
            "io_mb_s": rng.uniform(0, 2000), "execution_time_s": rng.uniform(0, 1e5), "gpu_id": rng.randint(0, 7)}


def test_rollups_equal_direct_count_mean_max_and_merge_exactly():
    rng = random.Random(1)
    samples = [_sample(rng) for _ in range(500)]
    rollup = None
    for s in samples:
        rollup = add_sample(rollup, values=s)
    summary = summarize(rollup)
    assert summary["count"] == 500
    for name in METRICS:
        assert summary[name]["mean"] == pytest.approx(statistics.fmean(s[name] for s in samples))
        assert summary[name]["max"] == max(s[name] for s in samples)
    halves = [None, None]
    for i, s in enumerate(samples):
        halves[i % 2] = add_sample(halves[i % 2], values=s)
    merged = summarize(merge_rollups(halves))
    for name in METRICS:
        assert merged[name]["mean"] == pytest.approx(summary[name]["mean"])
        assert merged[name]["max"] == summary[name]["max"]
    assert summarize(merge_rollups([]))["cpu_pct"] == {"mean": None, "max": None}


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [("cpu_pct", -0.1, "0..100"), ("gpu_pct", 100.5, "0..100"), ("cpu_pct", math.nan, "finite"),
     ("memory_gb", math.inf, "finite"), ("io_mb_s", -1.0, "negative"), ("execution_time_s", -5.0, "negative"),
     ("gpu_id", -1, "integer >= 0"), ("memory_gb", "12", "number"), ("gpu_pct", True, "number")],
)
def test_bad_sample_values_are_named(field, value, fragment):
    values = _sample(random.Random(2))
    values[field] = value
    problem = sample_problem(values=values)
    assert problem is not None and problem[0] == field and fragment in problem[1]


def test_good_sample_values_and_bounds_pass():
    values = {"cpu_pct": 0.0, "gpu_pct": 100.0, "memory_gb": 0, "io_mb_s": 0.0, "execution_time_s": 0.0,
              "gpu_id": None}
    assert sample_problem(values=values) is None


def test_windows_are_tumbling_by_event_time_and_keys_round_trip():
    at = 1_700_000_123_456
    assert window_start(at_ms=at, size_ms=60_000) == 1_700_000_100_000 - 1_700_000_100_000 % 60_000
    assert window_start(at_ms=at, size_ms=60_000) % 60_000 == 0
    assert 0 <= at - window_start(at_ms=at, size_ms=3_600_000) < 3_600_000
    key = window_key(partition=7, window="1h", scope="node", name="c401-001|x", start_ms=3_600_000)
    assert parse_window_key(key) == (7, "1h", "node", 3_600_000, "c401-001|x")
    # keys of one partition and size sort by window start
    keys = [window_key(partition=1, window="1m", scope="node", name="n", start_ms=s) for s in (60_000, 600_000)]
    assert sorted(keys) == keys
    assert expired(window="1m", start_ms=0, newest_ms=60_000 + 3 * 3_600_000)
    assert not expired(window="1m", start_ms=0, newest_ms=60_000 + 3 * 3_600_000 - 1)


def test_welford_matches_statistics_and_merges_like_one_pass():
    rng = random.Random(3)
    xs = [rng.gauss(1000, 120) for _ in range(1000)]
    state = None
    for x in xs:
        state = welford_add(state, x=x)
    assert state["n"] == 1000
    assert state["mean"] == pytest.approx(statistics.fmean(xs))
    assert welford_std(state) == pytest.approx(statistics.stdev(xs))
    parts = [None] * 7
    for i, x in enumerate(xs):
        parts[i % 7] = welford_add(parts[i % 7], x=x)
    merged = welford_merge(parts)
    assert merged["n"] == 1000
    assert merged["mean"] == pytest.approx(state["mean"])
    assert welford_std(merged) == pytest.approx(welford_std(state))
    assert welford_std(welford_add(None, x=5.0)) == 0.0


def test_runtime_buckets_and_top_n():
    assert bucket_of(seconds=0) == 0 and bucket_of(seconds=60) == 0 and bucket_of(seconds=61) == 1
    assert bucket_of(seconds=1e9) == len(RUNTIME_BUCKETS) - 1
    entries: list = []
    for job, t in [("a", 5.0), ("b", 9.0), ("c", 1.0), ("a", 11.0), ("d", 9.0)]:
        entries = update_top(entries, entry={"job_id": job, "execution_time_s": t}, k=3)
    assert [(e["job_id"], e["execution_time_s"]) for e in entries] == [("a", 11.0), ("b", 9.0), ("d", 9.0)]
    assert [e["job_id"] for e in top_n(entries, n=2)] == ["a", "b"]
