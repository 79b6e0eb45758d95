"""The runtime anomaly detector, pure: rules, an online detector, and a labelled data set.

Rules (per job type, over the Welford state of the runtimes of its completed jobs, see
:mod:`app.core.metrics_math`; nothing is decided before ``min_samples`` runtimes are known):

* ``runtime_anomaly`` — a completed job whose runtime is more than ``sigma`` standard
  deviations from its type's mean (the state *before* the job is added);
* ``runtime_overrun`` — a running job whose elapsed time exceeds ``ratio`` × its type's
  mean runtime.

:class:`RuntimeDetector` applies the completion rule online, job after job, which is what
the agent does; :func:`labelled_runtimes` is the synthetic labelled set it is measured on
(``tests/unit/test_anomaly.py``, ``bench/anomaly.py``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from app.core.metrics_math import RUNTIME_BUCKETS, welford_add, welford_merge, welford_std

RUNTIME_ANOMALY = "runtime_anomaly"
RUNTIME_OVERRUN = "runtime_overrun"


@dataclass(frozen=True, kw_only=True)
class Anomaly:
    """What a rule found: the rule, the observed value and the baseline it was judged on."""

    rule: str
    observed_s: float
    mean_s: float
    std_s: float
    samples: int
    #: runtime_anomaly: deviation in standard deviations; runtime_overrun: observed / mean.
    score: float

    def metrics(self) -> dict[str, float]:
        return {"observed_s": self.observed_s, "mean_s": self.mean_s, "std_s": self.std_s,
                "samples": float(self.samples), "score": self.score}

    def describe(self, *, job_id: str, job_type: str) -> str:
        if self.rule == RUNTIME_OVERRUN:
            return (f"Job {job_id} ({job_type}) has been running {self.observed_s:.0f} s, "
                    f"{self.score:.2f}x its type's mean runtime of {self.mean_s:.0f} s")
        return (f"Job {job_id} ({job_type}) ran {self.observed_s:.0f} s, {self.score:+.1f} standard deviations "
                f"from its type's mean of {self.mean_s:.0f} s (σ {self.std_s:.0f} s, {self.samples} jobs)")


def check_completed(*, stats: Mapping[str, Any], runtime_s: float, min_samples: int,
                    sigma: float) -> Anomaly | None:
    """The ``runtime_anomaly`` rule for one completed job against its type's ``stats``."""
    n = stats["n"]
    if n < min_samples:
        return None
    mean, std = stats["mean"], welford_std(stats)
    deviation = runtime_s - mean
    if std == 0.0:
        if deviation == 0.0:
            return None
        score = math.copysign(math.inf, deviation)
    else:
        score = deviation / std
        if abs(score) <= sigma:
            return None
    return Anomaly(rule=RUNTIME_ANOMALY, observed_s=runtime_s, mean_s=mean, std_s=std, samples=n,
                   score=score if math.isfinite(score) else math.copysign(1e9, score))


def check_overrun(*, stats: Mapping[str, Any], elapsed_s: float, min_samples: int,
                  ratio: float) -> Anomaly | None:
    """The ``runtime_overrun`` rule for a running job that has run ``elapsed_s`` so far."""
    n = stats["n"]
    mean = stats["mean"]
    if n < min_samples or mean <= 0 or elapsed_s <= ratio * mean:
        return None
    return Anomaly(rule=RUNTIME_OVERRUN, observed_s=elapsed_s, mean_s=mean, std_s=welford_std(stats),
                   samples=n, score=elapsed_s / mean)


def type_distribution(job_type_states: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per job type: merged Welford state, min, max and histogram counts, from per-partition states."""
    result: dict[str, dict[str, Any]] = {}
    for job_type, states in job_type_states.items():
        merged = welford_merge(states)
        buckets = [0] * len(RUNTIME_BUCKETS)
        for s in states:
            for i, count in enumerate(s.get("buckets", [])):
                buckets[i] += count
        result[job_type] = {
            **merged,
            "min": min((s["min"] for s in states if s.get("min") is not None), default=None),
            "max": max((s["max"] for s in states if s.get("max") is not None), default=None),
            "buckets": buckets,
        }
    return result


#: A flagged runtime further than this many times ``sigma`` from the mean is kept out of its
#: type's baseline (4σ by default).
EXCLUDE_FACTOR = 2.0


def learns(*, verdict: Anomaly | None, sigma: float) -> bool:
    """Whether a completed job's runtime joins its type's baseline.

    Normal ones and mild anomalies do; gross outliers (beyond ``EXCLUDE_FACTOR × sigma``) do
    not, so one stuck job does not widen σ and hide the next. Leaving out *every* flagged
    runtime would truncate the baseline's tails at ``sigma`` and shrink σ job after job (seen
    on Gaussian data: the detector then flags ever more normal jobs)."""
    return verdict is None or abs(verdict.score) <= EXCLUDE_FACTOR * sigma


@dataclass
class RuntimeDetector:
    """The completion rule applied online: judge each runtime, then learn it if
    :func:`learns` says so (as the agent does)."""

    min_samples: int
    sigma: float
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def observe(self, *, job_type: str, runtime_s: float) -> Anomaly | None:
        state = self.states.get(job_type) or {"n": 0, "mean": 0.0, "m2": 0.0}
        verdict = check_completed(stats=state, runtime_s=runtime_s, min_samples=self.min_samples, sigma=self.sigma)
        if learns(verdict=verdict, sigma=self.sigma):
            self.states[job_type] = welford_add(state, x=runtime_s)
        return verdict


# -- labelled synthetic data set ---------------------------------------------------------------
#: Job types of the synthetic set: (name, typical runtime s, relative spread).
SYNTHETIC_TYPES: tuple[tuple[str, float, float], ...] = (
    ("calibration", 1800.0, 0.08), ("imaging", 5400.0, 0.10), ("source-finding", 900.0, 0.06),
)


@dataclass(frozen=True, kw_only=True)
class LabelledRuntime:
    job_type: str
    runtime_s: float
    anomalous: bool


def labelled_runtimes(*, n: int = 3000, anomaly_rate: float = 0.03, seed: int = 11,
                      noise: str = "uniform") -> list[LabelledRuntime]:
    """A labelled stream of completed-job runtimes, in completion order.

    Normal runtimes of a type are its typical runtime times ``1 + e × spread``: with
    ``noise="uniform"`` e is uniform within ± 1.6 (bounded variation: a job of a type does
    about the same work; σ of e is 0.92, so no normal job lies beyond 2σ), with
    ``noise="gaussian"`` e is standard normal — where a 2σ rule flags about 4.6 % of normal
    jobs by construction. Anomalous ones (``anomaly_rate`` of the jobs) are what the detector
    is for: stuck or slowed jobs (× 1.5–4) and early exits (× 0.2–0.6)."""
    if noise not in ("uniform", "gaussian"):
        raise ValueError(f"noise must be uniform or gaussian, got {noise!r}")
    rng = random.Random(seed)
    result: list[LabelledRuntime] = []
    for _ in range(n):
        name, typical, spread = rng.choice(SYNTHETIC_TYPES)
        if rng.random() < anomaly_rate:
            factor = rng.uniform(1.5, 4.0) if rng.random() < 0.7 else rng.uniform(0.2, 0.6)
            result.append(LabelledRuntime(job_type=name, runtime_s=typical * factor, anomalous=True))
        else:
            e = rng.uniform(-1.6, 1.6) if noise == "uniform" else rng.gauss(0.0, 1.0)
            factor = 1.0 + e * spread
            result.append(LabelledRuntime(job_type=name, runtime_s=typical * factor, anomalous=False))
    return result


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def accuracy(self) -> float:
        total = self.true_positives + self.false_positives + self.true_negatives + self.false_negatives
        return (self.true_positives + self.true_negatives) / total if total else 1.0

    def as_dict(self) -> dict[str, float]:
        return {"tp": self.true_positives, "fp": self.false_positives, "tn": self.true_negatives,
                "fn": self.false_negatives, "precision": self.precision, "recall": self.recall,
                "accuracy": self.accuracy}


def evaluate(*, data: Iterable[LabelledRuntime], min_samples: int, sigma: float) -> Evaluation:
    """Run :class:`RuntimeDetector` over ``data`` and count its verdicts against the labels."""
    detector = RuntimeDetector(min_samples=min_samples, sigma=sigma)
    tp = fp = tn = fn = 0
    for item in data:
        flagged = detector.observe(job_type=item.job_type, runtime_s=item.runtime_s) is not None
        if flagged and item.anomalous:
            tp += 1
        elif flagged:
            fp += 1
        elif item.anomalous:
            fn += 1
        else:
            tn += 1
    return Evaluation(true_positives=tp, false_positives=fp, true_negatives=tn, false_negatives=fn)
