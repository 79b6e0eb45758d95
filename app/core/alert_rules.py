"""Alert rules over successive health reports of one component: pure functions, no I/O.

A worker's :class:`~app.core.models.SystemHealthReport` carries flat ``metrics`` (see
:mod:`app.worker.health` for the keys). :func:`evaluate` takes the component's stored state and a new
report's metrics and returns the new state plus the alerts that changed: ``FIRING`` when a
condition starts to hold, ``RESOLVED`` (same ``alert_id``) when it stops. Rules:

* ``consumer_lag``: total consumer lag above ``alert_lag_threshold`` (WARNING).
* ``consumer_stalled``: no offset commit for ``alert_stall_seconds`` while lag > 0 — the
  stalled consumer Faust is known for (CRITICAL).
* ``dlq_growth``: at least ``alert_dlq_growth`` new dead letters within the DLQ window (WARNING).
* ``component_down``: a dependency the worker reports unreachable — Kafka, the schema registry,
  RabbitMQ (when the bridge is on) — or a worker that stopped reporting (CRITICAL).

State (JSON-able, kept in the ``component_health`` table): ``firing`` (alert_id → alert),
``dlq_samples`` ([at, dead letters] within the window) and ``last_report_at``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

RULE_LAG = "consumer_lag"
RULE_STALLED = "consumer_stalled"
RULE_DLQ = "dlq_growth"
RULE_DOWN = "component_down"

FIRING = "FIRING"
RESOLVED = "RESOLVED"

#: Report metric (1 = fine, 0 = down) → the dependency it is about.
DEPENDENCY_METRICS: tuple[tuple[str, str], ...] = (
    ("kafka_reachable", "kafka"),
    ("registry_reachable", "schema-registry"),
    ("rabbitmq_connected", "rabbitmq"),
)


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    lag: int = 10_000
    stall_seconds: float = 60.0
    dlq_growth: int = 1
    #: Dead letters are counted over this many seconds (growth within it fires; none resolves).
    dlq_window_seconds: float = 300.0
    #: A component is silent (down) after max(silence_factor × its interval, silence_min_seconds).
    silence_factor: float = 3.0
    silence_min_seconds: float = 15.0

    @classmethod
    def from_settings(cls, settings: Any) -> "Thresholds":
        return cls(lag=settings.alert_lag_threshold, stall_seconds=settings.alert_stall_seconds,
                   dlq_growth=settings.alert_dlq_growth)


@dataclass(frozen=True, kw_only=True)
class Alert:
    """A condition that holds (or held) for a component."""

    alert_id: str
    component: str
    rule: str
    severity: str
    message: str
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Alert":
        return cls(alert_id=data["alert_id"], component=data["component"], rule=data["rule"],
                   severity=data["severity"], message=data["message"], metrics=dict(data.get("metrics") or {}))


@dataclass(frozen=True, kw_only=True)
class AlertChange:
    state: str  # FIRING | RESOLVED
    alert: Alert


def alert_id(*, rule: str, component: str, subject: str = "") -> str:
    """Stable id of a condition, e.g. ``component_down:rabbitmq@worker-h-6066``."""
    return f"{rule}:{subject}@{component}" if subject else f"{rule}@{component}"


def dlq_growth(
    *, samples: Sequence[Sequence[float]], at: float, total: float, uptime: float, window: float
) -> tuple[float, list[list[float]]]:
    """Dead letters added within ``window`` seconds before ``at``, and the samples to keep.

    ``total`` counts the worker's dead letters since it started (``uptime`` seconds ago). A
    total below the last sample means the worker restarted: older samples are dropped. With
    no sample in the window, the baseline is 0 if the worker started within it, else ``total``.
    """
    kept = [[float(t), float(v)] for t, v in samples if at - float(t) <= window]
    if kept and total < kept[-1][1]:
        kept = []
    if kept:
        baseline = kept[0][1]
    else:
        baseline = 0.0 if uptime <= window else total
    kept.append([at, float(total)])
    return max(total - baseline, 0.0), kept


def conditions(
    *, component: str, metrics: Mapping[str, float], dlq_added: float, thresholds: Thresholds
) -> dict[str, Alert]:
    """The alert conditions that hold for one report, by alert_id."""
    active: dict[str, Alert] = {}
    lag = float(metrics.get("consumer_lag", 0.0))
    since_commit = float(metrics.get("seconds_since_commit", 0.0))
    if lag > thresholds.lag:
        aid = alert_id(rule=RULE_LAG, component=component)
        active[aid] = Alert(
            alert_id=aid, component=component, rule=RULE_LAG, severity="WARNING",
            message=f"{component}: consumer lag {lag:.0f} is above {thresholds.lag}",
            metrics={"consumer_lag": lag, "threshold": float(thresholds.lag)})
    if lag > 0 and since_commit >= thresholds.stall_seconds:
        aid = alert_id(rule=RULE_STALLED, component=component)
        active[aid] = Alert(
            alert_id=aid, component=component, rule=RULE_STALLED, severity="CRITICAL",
            message=(f"{component}: no offset commit for {since_commit:.0f} s while {lag:.0f} messages "
                     f"wait (stalled consumer?)"),
            metrics={"consumer_lag": lag, "seconds_since_commit": since_commit,
                     "threshold": float(thresholds.stall_seconds)})
    if dlq_added >= thresholds.dlq_growth:
        aid = alert_id(rule=RULE_DLQ, component=component)
        active[aid] = Alert(
            alert_id=aid, component=component, rule=RULE_DLQ, severity="WARNING",
            message=(f"{component}: {dlq_added:.0f} events dead-lettered in the last "
                     f"{thresholds.dlq_window_seconds:.0f} s"),
            metrics={"dlq_added": dlq_added, "dlq_events": float(metrics.get("dlq_events", 0.0)),
                     "threshold": float(thresholds.dlq_growth)})
    for key, dependency in DEPENDENCY_METRICS:
        if key in metrics and float(metrics[key]) < 1.0:
            aid = alert_id(rule=RULE_DOWN, component=component, subject=dependency)
            active[aid] = Alert(
                alert_id=aid, component=dependency, rule=RULE_DOWN, severity="CRITICAL",
                message=f"{dependency} is down as seen by {component}",
                metrics={key: float(metrics[key])})
    return active


def _changes(*, firing: Mapping[str, Mapping[str, Any]], active: Mapping[str, Alert],
             metrics: Mapping[str, float]) -> tuple[dict[str, dict[str, Any]], list[AlertChange]]:
    changes: list[AlertChange] = []
    still: dict[str, dict[str, Any]] = {}
    for aid, data in firing.items():
        if aid in active:
            still[aid] = dict(data)
        else:
            was = Alert.from_json(data)
            resolved = Alert(alert_id=aid, component=was.component, rule=was.rule, severity=was.severity,
                             message=f"resolved: {was.message}",
                             metrics={k: float(metrics[k]) for k in was.metrics if k in metrics})
            changes.append(AlertChange(state=RESOLVED, alert=resolved))
    for aid, alert in active.items():
        if aid not in firing:
            still[aid] = alert.to_json()
            changes.append(AlertChange(state=FIRING, alert=alert))
    return still, changes


def evaluate(
    *, component: str, state: Mapping[str, Any] | None, metrics: Mapping[str, float], at: float,
    thresholds: Thresholds,
) -> tuple[dict[str, Any], list[AlertChange]]:
    """Apply one report (``metrics`` at epoch seconds ``at``) to the component's state."""
    state = state or {}
    added, samples = dlq_growth(
        samples=state.get("dlq_samples") or [], at=at, total=float(metrics.get("dlq_events", 0.0)),
        uptime=float(metrics.get("uptime_seconds", float("inf"))), window=thresholds.dlq_window_seconds)
    active = conditions(component=component, metrics=metrics, dlq_added=added, thresholds=thresholds)
    firing, changes = _changes(firing=state.get("firing") or {}, active=active, metrics=metrics)
    new_state = {"firing": firing, "dlq_samples": samples, "last_report_at": at,
                 "interval_seconds": float(metrics.get("health_interval_seconds",
                                                       state.get("interval_seconds", 5.0)))}
    return new_state, changes


def silence(
    *, component: str, state: Mapping[str, Any] | None, now: float, thresholds: Thresholds
) -> AlertChange | None:
    """A FIRING ``component_down`` for a component that stopped reporting, once (None otherwise).

    The next report of that component resolves it (:func:`evaluate` finds the condition gone)."""
    if not state or "last_report_at" not in state:
        return None
    aid = alert_id(rule=RULE_DOWN, component=component)
    if aid in (state.get("firing") or {}):
        return None
    limit = max(thresholds.silence_factor * float(state.get("interval_seconds", 5.0)),
                thresholds.silence_min_seconds)
    quiet = now - float(state["last_report_at"])
    if quiet <= limit:
        return None
    return AlertChange(state=FIRING, alert=Alert(
        alert_id=aid, component=component, rule=RULE_DOWN, severity="CRITICAL",
        message=f"{component} sent no health report for {quiet:.0f} s",
        metrics={"seconds_since_report": quiet, "threshold": limit}))
