"""``track_job_lifecycle``: dedupe, validate and apply each job-lifecycle event, and run
the runtime-anomaly side on it (the topic's one state-changing reader).

Per event (see :mod:`app.core.state_machine` for the transition and out-of-order rules):

1. The lifecycle (:func:`handle_job_event`): dedupe by event_id (the ids the job's own row
   has applied; an exact duplicate is dropped and counted), decide (apply / park / reject),
   write ``job_state`` (one value per job, fenced by source offset, with the event's id),
   update the partition's ``job_counts`` and ``active_jobs`` (fenced likewise), then emit
   one AuditRecord per applied transition to ``audit-trail`` and a NotificationSent to
   ``notifications`` on completion, failure and retry. Rejected events go to
   ``job-lifecycle.dlq`` with their reason; undecodable records too (this agent owns the
   topic's dead letters).
2. The anomaly side (:func:`agents.runtime_anomaly.handle_lifecycle_event`): ``known_jobs``
   (a copy of what step 1 left in ``job_state``), ``runtime_stats`` and runtime alerts, for
   every decodable event whatever step 1 decided (see :func:`handle_event` for the order and
   the failures).
3. The RabbitMQ copy (``COSMIC_RABBITMQ_BRIDGE_ENABLED``): every decodable event, whatever
   steps 1 and 2 decided, is copied to the ``job.events`` exchange with the batch's other
   copies, confirmed before the batch is acked (:mod:`app.worker.rabbit_bridge`) — so this
   agent is the topic's only reader.

Emitted events get deterministic ids (:func:`app.core.ids.derived_id`, uuid5 of the source
event id), so a replay after a crash re-emits the same ids and downstream consumers apply
them once.

Re-assertion on replay: Faust writes a table value to the local RocksDB at once and its
changelog record asynchronously, so a SIGKILLed worker can restart with local values whose
changelog records never reached Kafka. Faust flushes the producer before committing
offsets, so only events after the last commit are affected — exactly the events that are
replayed. A replayed (fenced) event therefore writes the values it touched again,
unchanged, so every changelog holds them and a worker rebuilt from the changelogs agrees.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter
from typing import Any

import app.worker.streams as streams
from agents.runtime_anomaly import handle_lifecycle_event as handle_anomalies
from app.core.errors import DuplicateEvent, RejectedEvent
from app.core.ids import derived_id
from app.core.models import AuditRecord, JobCancelled, JobEvent, NotificationSent
from app.core.state_machine import ACTIVE_STATUSES, Transition, decide
from app.core.timeutil import from_epoch_ms, utc_ms
from app.core.topic_specs import JOB_LIFECYCLE
from app.worker import streams
from app.worker.main import app, codecs, settings
from app.worker.observability import IDEMPOTENCY_HITS as IDEMPOTENCY_HITS_METRIC, labelled
from app.worker.streams import Origin, process_events
from app.worker.topics import job_lifecycle_topic
from tables.active_jobs import active_jobs
from tables.job_counts import job_counts
from tables.job_state import job_state

logger = logging.getLogger(__name__)

HISTORY_LENGTH = 32
#: Event ids applied or parked, kept in the job's own row for deduplication (events are
#: keyed by job, so a job's row sees every copy of its events).
SEEN_IDS = 256
#: Events recognised as already applied, by how: "duplicate" (same event_id at a new
#: offset) or "replay" (same offset after a worker restart).
IDEMPOTENCY_HITS: Counter[str] = Counter()


def _entry(event: JobEvent, origin: Origin) -> dict[str, Any]:
    """What is stored when an event is parked (enough to apply or dead-letter it later)."""
    return {
        "event_id": event.event_id,
        "at_ms": utc_ms(event.timestamp),
        "seq": origin.offset,
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "timestamp_ms": origin.timestamp_ms,
        "key": base64.b64encode(origin.key or b"").decode(),
        "value": base64.b64encode(origin.value or b"").decode(),
    }


def _decode_parked(entry: dict[str, Any]) -> tuple[JobEvent, int]:
    event = codecs.for_topic(JOB_LIFECYCLE).decode(base64.b64decode(entry["value"]))
    return event, entry["at_ms"]  # type: ignore[return-value]


def _origin_of(entry: dict[str, Any]) -> Origin:
    return Origin(
        topic=entry["topic"], partition=entry["partition"], offset=entry["offset"],
        timestamp_ms=entry.get("timestamp_ms"), key=base64.b64decode(entry["key"]),
        value=base64.b64decode(entry["value"]),
    )


def _transition_from(data: dict[str, Any]) -> Transition:
    return Transition(**data)


async def handle_job_event(event: JobEvent, origin: Origin) -> None:
    """The lifecycle side of one event (step 1 of the module docstring)."""
    job_id = event.job_id
    state = job_state.get(job_id)
    offset = origin.offset
    if state is not None and state.get("offset", -1) >= offset:
        # Handled before a restart: recall what it did instead of deciding again.
        IDEMPOTENCY_HITS["replay"] += 1
        labelled(IDEMPOTENCY_HITS_METRIC, "track_job_lifecycle").inc()
        job_state[job_id] = state  # re-assert: its changelog record may have died with the worker
        record = next((h for h in state.get("history", []) if h["offset"] == offset), None)
        transitions = [_transition_from(t) for t in record["transitions"]] if record else []
        rejected = [tuple(r) for r in record["rejected"]] if record else []
    else:
        seen = state is not None and (
            event.event_id in state.get("event_ids", ())
            or any(h["event_id"] == event.event_id for h in state.get("history", []))
        )
        if seen:
            IDEMPOTENCY_HITS["duplicate"] += 1
            labelled(IDEMPOTENCY_HITS_METRIC, "track_job_lifecycle").inc()
            raise DuplicateEvent(f"event {event.event_id} was already applied")
        outcome = decide(
            state=state, event=event, at_ms=utc_ms(event.timestamp), parked_entry=_entry(event, origin),
            decode_parked=_decode_parked, max_retries=settings.max_job_retries,
        )
        transitions = outcome.transitions
        rejected = outcome.rejected
        if outcome.state is not None:
            new_state = dict(outcome.state)
            new_state["offset"] = offset
            history = list(new_state.get("history", []))[-(HISTORY_LENGTH - 1):]
            history.append(
                {
                    "offset": offset,
                    "event_id": event.event_id,
                    "transitions": [dict(vars(t)) for t in transitions],  # flat fields: asdict's deep copy is not needed
                    "rejected": [list(r) for r in rejected],
                }
            )
            new_state["history"] = history
            if not any(e["offset"] == offset for e, _, _ in rejected):  # applied or parked: never again
                new_state["event_ids"] = [*new_state.get("event_ids", ())[-(SEEN_IDS - 1):], event.event_id]
            job_state[job_id] = new_state
            state = new_state
    user_id = (state or {}).get("user_id")
    if transitions:
        _update_counts(partition=origin.partition, offset=offset, transitions=transitions)
        _update_active(partition=origin.partition, offset=offset, user_id=user_id, job_id=job_id,
                       status=transitions[-1].to_status)
    own_rejection = next(((r, m) for e, r, m in rejected if e["offset"] == offset), None)
    effects = []
    for transition in transitions:
        effects.append(_audit_record(job_id=job_id, user_id=user_id, transition=transition, event=event))
        notification = _notification(job_id=job_id, user_id=user_id, transition=transition, state=state)
        if notification is not None:
            effects.append(notification)
    if effects:
        await streams.emit(*effects)
    for entry, reason, message in rejected:
        if entry["offset"] != offset:  # parked earlier, rejected now
            await streams.dead_letter(origin=_origin_of(entry), reason=reason,
                              error=RejectedEvent(message, reason=reason), attempts=1)
    if own_rejection is not None:
        reason, message = own_rejection
        raise RejectedEvent(message, reason=reason)


def _update_counts(*, partition: int, offset: int, transitions: list[Transition]) -> None:
    key = str(partition)
    current = job_counts.get(key) or {"offset": -1, "counts": {}}
    if current["offset"] >= offset:
        job_counts[key] = current  # replay: re-assert (see the module docstring)
        return
    counts = dict(current["counts"])
    for t in transitions:
        if t.from_status:
            counts[t.from_status] = counts.get(t.from_status, 0) - 1
        counts[t.to_status] = counts.get(t.to_status, 0) + 1
    job_counts[key] = {"offset": offset, "counts": counts}


def _update_active(*, partition: int, offset: int, user_id: str | None, job_id: str, status: str) -> None:
    key = f"{partition}/{user_id or '-'}"
    current = active_jobs.get(key) or {"offset": -1, "jobs": []}
    if current["offset"] >= offset:
        active_jobs[key] = current  # replay: re-assert
        return
    active = job_id in current["jobs"]
    if active == (status in ACTIVE_STATUSES):
        # Unchanged (QUEUED -> RUNNING, say): nothing written, so the key keeps the offset of its
        # last change. Every event after that offset left the set as it was, so replaying them
        # from it changes nothing either: the fence stays exact with fewer writes (a job
        # changes the set twice of its four or five events, entering and leaving).
        return
    jobs = set(current["jobs"])
    if active:
        jobs.discard(job_id)
    else:
        jobs.add(job_id)
    active_jobs[key] = {"offset": offset, "jobs": sorted(jobs)}


def _audit_record(*, job_id: str, user_id: str | None, transition: Transition, event: JobEvent) -> AuditRecord:
    actor = user_id or "system"
    if isinstance(event, JobCancelled) and event.event_id == transition.event_id:
        actor = event.cancelled_by
    return AuditRecord(
        event_id=derived_id(transition.event_id, "audit"),
        event_type="AuditRecord",
        timestamp=from_epoch_ms(ms=transition.at_ms),
        correlation_id=event.correlation_id,
        user_id=user_id,
        schema_version=1,
        action="job.transition",
        actor=actor,
        resource_type="job",
        resource_id=job_id,
        outcome="SUCCESS",
        before=json.dumps({"status": transition.from_status}),
        after=json.dumps({"status": transition.to_status, "retry_count": transition.retry_count}),
        source_event_id=transition.event_id,
    )


def _notification(
    *, job_id: str, user_id: str | None, transition: Transition, state: dict[str, Any] | None
) -> NotificationSent | None:
    if not user_id:
        return None
    if transition.is_retry:
        severity, title = "WARNING", f"Job {job_id} is being retried (attempt {transition.retry_count + 1})"
    elif transition.to_status == "COMPLETED":
        severity, title = "INFO", f"Job {job_id} completed"
    elif transition.to_status == "FAILED":
        severity, title = "ERROR", f"Job {job_id} failed"
    else:
        return None
    error = (state or {}).get("last_error") or {}
    body = title if transition.to_status != "FAILED" else f"{title}: {error.get('code', '')} {error.get('message', '')}".strip()
    nid = derived_id(transition.event_id, "notification")
    return NotificationSent(
        event_id=nid,
        event_type="NotificationSent",
        timestamp=from_epoch_ms(ms=transition.at_ms),
        correlation_id=(state or {}).get("correlation_id") or nid,
        user_id=user_id,
        schema_version=1,
        notification_id=nid,
        channel="WEBSOCKET",
        severity=severity,
        title=title,
        body=body,
        job_id=job_id,
    )


async def handle_event(event: JobEvent, origin: Origin) -> None:
    """Both sides of one job-lifecycle event: the lifecycle's, then the anomaly side's.

    Order: lifecycle first. The anomaly side writes its own tables (known_jobs,
    runtime_stats) and reads the job's ``job_state`` value as the lifecycle side left it: a
    job is known once its JobSubmitted was applied, with the status the lifecycle decided. The
    order also decides what is emitted first and whose exception reaches
    :func:`app.worker.streams.process_events`: a completion's audit record and "completed"
    notification precede an alert about its runtime (both notifications go to the owner's
    partition of ``notifications``, in that order), and the lifecycle's outcome is the event's
    outcome.

    The anomaly side runs whatever the lifecycle decided (applied, parked, rejected, an
    exact duplicate, a failure): it writes ``known_jobs`` only when what it derives from
    ``job_state`` changed, and judges a JobCompleted only if the lifecycle accepted it; its
    offset fences (``known_jobs``, ``runtime_stats``) and "a job completes once" make
    duplicates and replays safe there. Then the lifecycle's exception is raised again, so process_events
    dead-letters it, counts the duplicate or retries exactly as before (a retry runs both
    sides again, each fenced by offset as on a replay after a restart).

    The anomaly side's own failures are settled apart, by the same per-event policy
    (:func:`app.worker.streams.handle_decoded`: a bug is dead-lettered as ``error`` and consuming
    goes on; Kafka being down is waited out), and never reach process_events. Reaching it,
    one would replace the lifecycle's outcome (a rejection's reason, a duplicate's count)
    with ``error``, or, as a Kafka error, run the lifecycle side again; process_events does
    not undo a failed attempt, so the lifecycle's writes and emits are in the batch already.
    Settled apart, they stay there, applied once.
    """
    try:
        await handle_job_event(event, origin)
    except Exception:
        await _anomaly_side(event=event, origin=origin)
        raise
    await _anomaly_side(event=event, origin=origin)


async def _anomaly_side(*, event: JobEvent, origin: Origin) -> None:
    await streams.handle_decoded(topic=JOB_LIFECYCLE, origin=origin, handler=handle_anomalies, event=event)


# State-changing agent: concurrency 1, so Faust never commits past an in-flight event.
@app.agent(job_lifecycle_topic, concurrency=1)
async def track_job_lifecycle(stream):
    async for result in process_events(stream, topic=JOB_LIFECYCLE, handler=handle_event,
                                       copy_to_rabbitmq=settings.rabbitmq_bridge_enabled):
        yield result
