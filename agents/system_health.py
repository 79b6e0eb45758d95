"""``watch_system_health``: keep each component's latest health report and raise alerts.

Per :class:`~app.core.models.SystemHealthReport` on ``system-health`` (key = component): apply the
rules of :mod:`app.core.alert_rules` to the component's state in ``component_health`` and emit a
:class:`~app.core.models.SystemAlert` to ``system-health`` for every change — ``FIRING`` when a
condition starts, ``RESOLVED`` with the same ``alert_id`` and ``correlation_id`` when it ends.
The agent reads its own alerts back and skips them, except a silence alert (below), which it
records as firing.

Idempotent: the table value records the source offset that last changed it; a replayed
report (offset already applied) re-asserts the value and re-emits the alerts that report
raised, with the same deterministic event ids (uuid5 of the report's event id, the alert id
and the state), so consumers apply them once.

``detect_silent_components`` (timer): a component this worker holds that sent nothing for
max(3 × its interval, 15 s) gets a FIRING ``component_down`` alert; its next report resolves it.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from app.core.alert_rules import RULE_DOWN, AlertChange, Thresholds, alert_id, evaluate, silence
from app.core.models import EventBase, SystemAlert, SystemHealthReport
from app.core.topic_specs import SYSTEM_HEALTH
from app.worker import streams
from app.worker.faust_internals.state import trust_unknown_changelog
from app.worker.main import app, settings
from app.worker.streams import Origin, process_events
from app.worker.topics import system_health_topic
from tables.component_health import component_health

logger = logging.getLogger(__name__)

ID_NAMESPACE = uuid.UUID("0b7e4c2a-5d61-4f8e-a3c9-5e1a1e27a1e0")
THRESHOLDS = Thresholds.from_settings(settings)
#: Silence alerts this worker emitted and has not seen back yet (alert_id → time sent).
_SILENCE_SENT: dict[str, float] = {}


def _alert_event(change: AlertChange, *, source_id: str, correlation_id: str) -> SystemAlert:
    alert = change.alert
    return SystemAlert(
        event_id=str(uuid.uuid5(ID_NAMESPACE, f"{source_id}:{alert.alert_id}:{change.state}")),
        event_type="SystemAlert",
        timestamp=datetime.now(timezone.utc),
        correlation_id=correlation_id,
        user_id=None,
        schema_version=1,
        alert_id=alert.alert_id,
        component=alert.component,
        rule=alert.rule,
        severity=alert.severity,
        state=change.state,
        message=alert.message,
        metrics=dict(alert.metrics),
        job_id=None,
    )


def _correlation(*, firing: dict[str, Any], change: AlertChange, source_id: str) -> str:
    """FIRING starts a correlation id (kept with the firing alert); RESOLVED repeats it."""
    known = (firing.get(change.alert.alert_id) or {}).get("correlation_id")
    return known or str(uuid.uuid5(ID_NAMESPACE, f"{source_id}:{change.alert.alert_id}"))


async def handle_health_event(event: EventBase, origin: Origin) -> None:
    trust_unknown_changelog(component_health, source_topic=origin.topic, consumer=app.consumer)
    if isinstance(event, SystemAlert):
        _record_silence_alert(event)
        return
    assert isinstance(event, SystemHealthReport)
    component = event.component
    state = component_health.get(component)
    if state is not None and state.get("event_id") == event.event_id and state.get("offset") != origin.offset:
        return  # the same report delivered twice (a producer retry): already applied
    if state is not None and state.get("offset", -1) >= origin.offset:
        component_health[component] = state  # replay: re-assert (see agents/job_lifecycle.py)
        if state.get("offset") == origin.offset and state.get("last_alerts"):
            await streams.emit(*[_from_json(a) for a in state["last_alerts"]])
        return
    at = event.timestamp.timestamp()
    before = dict((state or {}).get("firing") or {})
    rules_state, changes = evaluate(component=component, state=state, metrics=event.metrics, at=at,
                                    thresholds=THRESHOLDS)
    alerts = []
    for change in changes:
        correlation_id = _correlation(firing=before, change=change, source_id=event.event_id)
        if change.state == "FIRING":
            rules_state["firing"][change.alert.alert_id]["correlation_id"] = correlation_id
        alerts.append(_alert_event(change, source_id=event.event_id, correlation_id=correlation_id))
        logger.warning("alert %s %s: %s", change.state, change.alert.alert_id, change.alert.message)
    component_health[component] = {
        **rules_state,
        "offset": origin.offset,
        "event_id": event.event_id,
        "status": event.status,
        "metrics": dict(event.metrics),
        "details": event.details,
        "reported_at": at,
        "last_alerts": [_to_json(a) for a in alerts],
    }
    if alerts:
        await streams.emit(*alerts)


def _to_json(alert: SystemAlert) -> dict[str, Any]:
    data = alert.asdict()
    data["timestamp"] = alert.timestamp.timestamp()
    return data


def _from_json(data: dict[str, Any]) -> SystemAlert:
    fields = dict(data)
    fields["timestamp"] = datetime.fromtimestamp(fields["timestamp"], tz=timezone.utc)
    return SystemAlert(**{k: v for k, v in fields.items() if not k.startswith("__")})


def _record_silence_alert(alert: SystemAlert) -> None:
    """A silence alert came back: remember it as firing so the next report resolves it."""
    if alert.rule != RULE_DOWN or alert.state != "FIRING" or alert.alert_id != alert_id(
            rule=RULE_DOWN, component=alert.component):
        return
    _SILENCE_SENT.pop(alert.alert_id, None)
    state = component_health.get(alert.component)
    if state is None or alert.alert_id in (state.get("firing") or {}):
        return
    if alert.timestamp.timestamp() < float(state.get("last_report_at", 0)):
        return  # the component reported again after the alert was raised
    firing = dict(state.get("firing") or {})
    firing[alert.alert_id] = {"alert_id": alert.alert_id, "component": alert.component, "rule": alert.rule,
                              "severity": alert.severity, "message": alert.message,
                              "metrics": dict(alert.metrics), "correlation_id": alert.correlation_id}
    component_health[alert.component] = {**state, "firing": firing}


# State-changing agent: concurrency 1, so Faust never commits past an in-flight report.
@app.agent(system_health_topic, concurrency=1)
async def watch_system_health(stream):  # noqa: ANN001, ANN201
    async for result in process_events(stream, topic=SYSTEM_HEALTH, handler=handle_health_event,
                                       max_wait_ms=settings.background_batch_max_wait_ms):
        yield result


@app.timer(interval=max(settings.health_interval_seconds, 1.0))
async def detect_silent_components() -> None:
    """FIRING ``component_down`` for components held here that stopped reporting."""
    now = time.time()
    alerts = []
    for component, state in list(component_health.items()):
        change = silence(component=component, state=state, now=now, thresholds=THRESHOLDS)
        if change is None or now - _SILENCE_SENT.get(change.alert.alert_id, 0.0) < 60.0:
            continue
        _SILENCE_SENT[change.alert.alert_id] = now
        source = f"silence:{state.get('last_report_at')}"
        alerts.append(_alert_event(change, source_id=source,
                                   correlation_id=str(uuid.uuid5(ID_NAMESPACE, f"{source}:{change.alert.alert_id}"))))
        logger.warning("alert FIRING %s: %s", change.alert.alert_id, change.alert.message)
    if alerts:
        await streams.emit(*alerts)
