"""The alert rules (app.core.alert_rules): successive health reports → which alerts fire and resolve."""

from __future__ import annotations

from app.core.alert_rules import (
    FIRING, RESOLVED, RULE_DLQ, RULE_DOWN, RULE_LAG, RULE_STALLED, Thresholds, dlq_growth, evaluate, silence,
)

W = "worker-a"
T = Thresholds(lag=100, stall_seconds=60.0, dlq_growth=3, dlq_window_seconds=300.0)


def healthy(**overrides: float) -> dict[str, float]:
    metrics = {"consumer_lag": 0.0, "seconds_since_commit": 1.0, "tables_recovered": 1.0, "kafka_reachable": 1.0,
               "registry_reachable": 1.0, "rabbitmq_connected": 1.0, "dlq_events": 0.0,
               "uptime_seconds": 1000.0, "health_interval_seconds": 5.0}
    metrics.update(overrides)
    return metrics


def run(reports: list[tuple[float, dict[str, float]]], thresholds: Thresholds = T):
    """Feed reports (at, metrics) in order; return the state and [(at, state, rule, alert_id)]."""
    state = None
    seen = []
    for at, metrics in reports:
        state, changes = evaluate(component=W, state=state, metrics=metrics, at=at, thresholds=thresholds)
        seen += [(at, c.state, c.alert.rule, c.alert.alert_id) for c in changes]
    return state, seen


def test_healthy_reports_raise_nothing():
    state, seen = run([(t, healthy()) for t in range(0, 60, 5)])
    assert seen == [] and state["firing"] == {}


def test_lag_above_threshold_fires_once_and_resolves_with_the_same_id():
    state, seen = run([(0, healthy(consumer_lag=50)), (5, healthy(consumer_lag=101)), (10, healthy(consumer_lag=5000)),
                       (15, healthy(consumer_lag=100)), (20, healthy(consumer_lag=0))])
    assert seen == [(5, FIRING, RULE_LAG, f"{RULE_LAG}@{W}"), (15, RESOLVED, RULE_LAG, f"{RULE_LAG}@{W}")]
    assert state["firing"] == {}


def test_stall_needs_both_an_old_commit_and_lag():
    # idle worker: no commit for a long time but nothing to consume -> no alert
    _, idle = run([(0, healthy(seconds_since_commit=600, consumer_lag=0))])
    assert idle == []
    # lag but commits keep coming -> lag is handled, not stalled
    _, busy = run([(0, healthy(seconds_since_commit=3, consumer_lag=40))])
    assert busy == []
    # lag and no commit for N s -> stalled; commits resume -> resolved
    _, seen = run([(0, healthy(seconds_since_commit=30, consumer_lag=40)),
                   (5, healthy(seconds_since_commit=59.9, consumer_lag=45)),
                   (10, healthy(seconds_since_commit=60, consumer_lag=50)),
                   (15, healthy(seconds_since_commit=65, consumer_lag=55)),
                   (20, healthy(seconds_since_commit=0.5, consumer_lag=3))])
    assert seen == [(10, FIRING, RULE_STALLED, f"{RULE_STALLED}@{W}"), (20, RESOLVED, RULE_STALLED, f"{RULE_STALLED}@{W}")]


def test_stalled_consumer_with_drained_lag_resolves():
    _, seen = run([(0, healthy(seconds_since_commit=90, consumer_lag=10)),
                   (5, healthy(seconds_since_commit=95, consumer_lag=0))])
    assert [s for _, s, _, _ in seen] == [FIRING, RESOLVED]


def test_dlq_growth_within_the_window_fires_and_quiet_window_resolves():
    _, seen = run([(0, healthy(dlq_events=0)), (10, healthy(dlq_events=2)),   # +2 < 3
                   (20, healthy(dlq_events=3)),                                 # +3 in window -> fire
                   (200, healthy(dlq_events=3)),                                # still +3 within 300 s
                   (311, healthy(dlq_events=3)),                                # window now starts at 20: +0
                   ])
    assert seen == [(20, FIRING, RULE_DLQ, f"{RULE_DLQ}@{W}"), (311, RESOLVED, RULE_DLQ, f"{RULE_DLQ}@{W}")]


def test_dlq_growth_counts_from_zero_for_a_young_worker_and_survives_a_restart():
    # a worker 10 s old already dead-lettered 5: those 5 are growth within the window
    added, _ = dlq_growth(samples=[], at=100.0, total=5, uptime=10.0, window=300.0)
    assert added == 5
    # an old worker seen for the first time: its lifetime total is not "growth"
    added, _ = dlq_growth(samples=[], at=100.0, total=5, uptime=10_000.0, window=300.0)
    assert added == 0
    # the counter went down: the worker restarted, old samples are dropped
    added, kept = dlq_growth(samples=[[90.0, 40.0], [95.0, 42.0]], at=100.0, total=1, uptime=3.0, window=300.0)
    assert added == 1 and kept == [[100.0, 1.0]]


def test_a_dependency_down_fires_component_down_and_recovery_resolves_it():
    state, seen = run([(0, healthy()), (1, healthy(rabbitmq_connected=0)), (2, healthy(rabbitmq_connected=0)),
                       (3, healthy())])
    aid = f"{RULE_DOWN}:rabbitmq@{W}"
    assert seen == [(1, FIRING, RULE_DOWN, aid), (3, RESOLVED, RULE_DOWN, aid)]


def test_dependency_alerts_name_the_dependency_and_a_disabled_bridge_is_not_down():
    _, changes = evaluate(component=W, state=None, metrics=healthy(kafka_reachable=0, registry_reachable=0),
                          at=0, thresholds=T)
    assert {(c.alert.component, c.alert.severity) for c in changes} == {("kafka", "CRITICAL"),
                                                                        ("schema-registry", "CRITICAL")}
    no_bridge = healthy()
    del no_bridge["rabbitmq_connected"]
    assert evaluate(component=W, state=None, metrics=no_bridge, at=0, thresholds=T)[1] == []


def test_resolved_alert_repeats_the_firing_alerts_rule_and_component():
    state, changes = evaluate(component=W, state=None, metrics=healthy(registry_reachable=0), at=0, thresholds=T)
    fired = changes[0].alert
    _, changes = evaluate(component=W, state=state, metrics=healthy(), at=5, thresholds=T)
    resolved = changes[0]
    assert resolved.state == RESOLVED
    assert (resolved.alert.alert_id, resolved.alert.rule, resolved.alert.component, resolved.alert.severity) == (
        fired.alert_id, fired.rule, fired.component, fired.severity)
    assert resolved.alert.metrics == {"registry_reachable": 1.0}


def test_several_conditions_at_once_are_independent():
    state, seen = run([(0, healthy(consumer_lag=500, seconds_since_commit=120, rabbitmq_connected=0)),
                       (5, healthy(consumer_lag=500, seconds_since_commit=0.1))])
    assert sorted((s, r) for _, s, r, _ in seen) == [
        (FIRING, RULE_DOWN), (FIRING, RULE_LAG), (FIRING, RULE_STALLED), (RESOLVED, RULE_DOWN), (RESOLVED, RULE_STALLED)]
    assert list(state["firing"]) == [f"{RULE_LAG}@{W}"]


def test_a_silent_component_fires_once_and_its_next_report_resolves_it():
    state, _ = run([(0, healthy(health_interval_seconds=5))])
    assert silence(component=W, state=state, now=14.0, thresholds=T) is None  # within max(3 x 5 s, 15 s)
    change = silence(component=W, state=state, now=16.0, thresholds=T)
    assert change is not None and change.state == FIRING and change.alert.rule == RULE_DOWN
    state = {**state, "firing": {change.alert.alert_id: change.alert.to_json()}}
    assert silence(component=W, state=state, now=30.0, thresholds=T) is None  # already firing
    _, changes = evaluate(component=W, state=state, metrics=healthy(), at=31.0, thresholds=T)
    assert [(c.state, c.alert.alert_id) for c in changes] == [(RESOLVED, change.alert.alert_id)]


# -- through the agent (watch_system_health on the memory store) ---------------------------
def _report(*, metrics: dict[str, float], component: str = W):  # noqa: ANN202
    from app.core.models import SystemHealthReport
    from app.core.timeutil import utc_now
    import uuid

    return SystemHealthReport(event_id=str(uuid.uuid4()), event_type="SystemHealthReport", timestamp=utc_now(),
                              correlation_id=f"health:{component}", user_id=None, schema_version=1,
                              component=component, status="OK", metrics=metrics, details=None)


async def test_the_agent_keeps_the_latest_report_and_emits_firing_then_resolved(memory_registry, captured, monkeypatch):
    import agents.system_health as system_health
    from app.worker.main import app, codecs
    from tables.component_health import component_health

    monkeypatch.setattr("app.worker.streams.emit", captured_emit := _Capture())
    app.finalize()
    app.flow_control.resume()
    codec = codecs.for_topic("system-health")
    down = _report(metrics=healthy(rabbitmq_connected=0))
    async with system_health.watch_system_health.test_context() as agent:
        await agent.put(codec.encode(_report(metrics=healthy())), key=W.encode())
        await agent.put(codec.encode(down), key=W.encode())
        await agent.put(codec.encode(down), key=W.encode())  # the same report again: applied once
        await agent.put(codec.encode(_report(metrics=healthy(rabbitmq_connected=0))), key=W.encode())
        for alert in list(captured_emit.events):  # the agent reads its own alerts back: skipped
            await agent.put(codec.encode(alert), key=alert.component.encode())
        await agent.put(codec.encode(_report(metrics=healthy())), key=W.encode())
        state = component_health[W]
    alerts = captured_emit.events
    assert [(a.state, a.alert_id) for a in alerts] == [("FIRING", f"{RULE_DOWN}:rabbitmq@{W}"),
                                                      ("RESOLVED", f"{RULE_DOWN}:rabbitmq@{W}")]
    assert alerts[0].correlation_id == alerts[1].correlation_id and alerts[0].event_id != alerts[1].event_id
    assert alerts[0].component == "rabbitmq" and alerts[0].severity == "CRITICAL"
    assert state["firing"] == {} and state["metrics"]["rabbitmq_connected"] == 1.0
    assert captured["dead"] == []


class _Capture:
    def __init__(self) -> None:
        self.events: list = []

    async def __call__(self, *events) -> None:  # noqa: ANN002
        self.events.extend(events)
