"""Pure math of the job-metrics analytics: sample checks, rollups, event-time windows,
Welford's online mean/variance (and its parallel merge), runtime histograms, top-N.

No Faust, no I/O: every function takes and returns plain JSON-able values, so the agents
store them in tables as they are and the tests recompute them independently.

A *rollup* is ``{"count": n, "<metric>": {"sum": s, "max": m}, ...}`` for the four resource
metrics; means are derived (``sum / count``) when read, so rollups of disjoint sample sets
add up exactly (:func:`merge_rollups`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

#: The resource metrics of a JobMetricsSample that are rolled up.
METRICS: tuple[str, ...] = ("cpu_pct", "gpu_pct", "memory_gb", "io_mb_s")
#: Utilisation metrics: percentages within 0..100.
PERCENT_METRICS = frozenset({"cpu_pct", "gpu_pct"})

#: Window name → size in ms (tumbling windows aligned to the Unix epoch, UTC).
WINDOWS: dict[str, int] = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
#: Window name → how long its windows are kept, in ms behind the newest event time of
#: their source partition.
RETENTION: dict[str, int] = {"1m": 3 * 3_600_000, "1h": 3 * 86_400_000, "1d": 35 * 86_400_000}

#: Upper bounds (seconds) of the execution-time histogram buckets; the last is open.
RUNTIME_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, math.inf)


# -- sample checks -----------------------------------------------------------------------------
def sample_problem(*, values: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, reason) of the first unusable value of a metrics sample, or None.

    ``values`` holds cpu_pct, gpu_pct, memory_gb, io_mb_s, execution_time_s and gpu_id.
    Refused: non-numbers, NaN and infinities, utilisation outside 0..100, negative memory,
    I/O or execution time, a negative gpu_id."""
    for name in METRICS + ("execution_time_s",):
        value = values.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return name, f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return name, f"must be a finite number, got {value}"
        if name in PERCENT_METRICS and not 0 <= value <= 100:
            return name, f"utilisation must be within 0..100 %, got {value}"
        if value < 0:
            return name, f"must not be negative, got {value}"
    gpu_id = values.get("gpu_id")
    if gpu_id is not None and (isinstance(gpu_id, bool) or not isinstance(gpu_id, int) or gpu_id < 0):
        return "gpu_id", f"must be null or an integer >= 0, got {gpu_id!r}"
    return None


# -- rollups -----------------------------------------------------------------------------------
def empty_rollup() -> dict[str, Any]:
    return {"count": 0, **{name: {"sum": 0.0, "max": None} for name in METRICS}}


def add_sample(rollup: Mapping[str, Any] | None, *, values: Mapping[str, float]) -> dict[str, Any]:
    """A new rollup: ``rollup`` (None = empty) plus one sample's ``values``."""
    base = rollup if rollup is not None else empty_rollup()
    result: dict[str, Any] = {"count": base["count"] + 1}
    for name in METRICS:
        old = base[name]
        value = float(values[name])
        result[name] = {"sum": old["sum"] + value, "max": value if old["max"] is None else max(old["max"], value)}
    return result


def merge_rollups(rollups: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The rollup of the union of disjoint sample sets."""
    result = empty_rollup()
    for rollup in rollups:
        result["count"] += rollup["count"]
        for name in METRICS:
            part = rollup[name]
            result[name]["sum"] += part["sum"]
            if part["max"] is not None:
                result[name]["max"] = part["max"] if result[name]["max"] is None else max(result[name]["max"], part["max"])
    return result


def summarize(rollup: Mapping[str, Any]) -> dict[str, Any]:
    """``{"count", "<metric>": {"mean", "max"}}`` of a rollup (the JSON the API serves)."""
    count = rollup["count"]
    out: dict[str, Any] = {"count": count}
    for name in METRICS:
        part = rollup[name]
        out[name] = {"mean": part["sum"] / count if count else None, "max": part["max"]}
    return out


# -- windows -----------------------------------------------------------------------------------
def window_start(*, at_ms: int, size_ms: int) -> int:
    """Start (ms) of the tumbling window of ``size_ms`` holding event time ``at_ms``."""
    return at_ms - at_ms % size_ms


def window_key(*, partition: int, window: str, scope: str, name: str, start_ms: int) -> str:
    """Key of one window aggregate: ``<partition>|<window>|<scope>|<start_ms>|<name>``.

    Led by the source partition that writes it (see docs/metrics.md), so Faust's changelog
    partition and the key agree; readers merge the partitions."""
    return f"{partition}|{window}|{scope}|{start_ms:015d}|{name}"


def parse_window_key(key: str) -> tuple[int, str, str, int, str]:
    """(partition, window, scope, start_ms, name) of a :func:`window_key`."""
    partition, window, scope, start, name = key.split("|", 4)
    return int(partition), window, scope, int(start), name


def expired(*, window: str, start_ms: int, newest_ms: int) -> bool:
    """Whether a window of ``window`` starting at ``start_ms`` is past its retention."""
    return start_ms + WINDOWS[window] + RETENTION[window] <= newest_ms


# -- Welford -----------------------------------------------------------------------------------
def welford_empty() -> dict[str, float]:
    return {"n": 0, "mean": 0.0, "m2": 0.0}


def welford_add(state: Mapping[str, Any] | None, *, x: float) -> dict[str, Any]:
    """Welford's update with one observation ``x`` (returns a new state)."""
    s = state if state is not None else welford_empty()
    n = s["n"] + 1
    delta = x - s["mean"]
    mean = s["mean"] + delta / n
    m2 = s["m2"] + delta * (x - mean)
    return {"n": n, "mean": mean, "m2": m2}


def welford_merge(states: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine states of disjoint observation sets (Chan et al.'s parallel formula)."""
    n, mean, m2 = 0, 0.0, 0.0
    for s in states:
        if not s["n"]:
            continue
        total = n + s["n"]
        delta = s["mean"] - mean
        mean = mean + delta * s["n"] / total
        m2 = m2 + s["m2"] + delta * delta * n * s["n"] / total
        n = total
    return {"n": n, "mean": mean, "m2": m2}


def welford_std(state: Mapping[str, Any]) -> float:
    """Sample standard deviation (n - 1); 0 below two observations."""
    return math.sqrt(state["m2"] / (state["n"] - 1)) if state["n"] > 1 else 0.0


# -- runtime distribution ----------------------------------------------------------------------
def bucket_of(*, seconds: float) -> int:
    """Index in :data:`RUNTIME_BUCKETS` of the bucket holding ``seconds``."""
    for index, bound in enumerate(RUNTIME_BUCKETS):
        if seconds <= bound:
            return index
    return len(RUNTIME_BUCKETS) - 1


def bucket_label(index: int) -> str:
    bound = RUNTIME_BUCKETS[index]
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


# -- top N -------------------------------------------------------------------------------------
def update_top(entries: Iterable[Mapping[str, Any]], *, entry: Mapping[str, Any], k: int,
               field: str = "execution_time_s", key: str = "job_id") -> list[dict[str, Any]]:
    """``entries`` with ``entry`` replacing the one of the same ``key``, the ``k`` largest by
    ``field`` (ties by key), largest first."""
    merged = {e[key]: dict(e) for e in entries}
    merged[entry[key]] = dict(entry)
    return top_n(merged.values(), n=k, field=field, key=key)


def top_n(entries: Iterable[Mapping[str, Any]], *, n: int, field: str = "execution_time_s",
          key: str = "job_id") -> list[dict[str, Any]]:
    return sorted((dict(e) for e in entries), key=lambda e: (-e[field], e[key]))[:n]
