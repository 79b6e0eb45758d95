"""``cosmic rebuild``: recompute job state from ``job-lifecycle`` alone and compare with the table.

Reads every partition from the beginning and feeds each job's events, in offset order,
through the same pure state machine as the agent (dedupe by event_id, parking, retries).
Reports every job whose recomputed status, retry count, per-status timestamps, user or
job type differs from ``job_state``, and jobs present on only one side.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any, Callable, Iterable

from app.core.codecs import Codecs
from app.core.errors import EventDecodeError
from app.core.state_machine import decide
from app.core.timeutil import utc_ms
from app.core.topic_specs import JOB_LIFECYCLE

COMPARED = ("status", "retry_count", "timestamps", "user_id", "job_type")


def recompute(*, records: Iterable[Any], codecs: Codecs, max_retries: int, job_id: str | None = None) -> dict[str, dict]:
    """job_id → recomputed state, from raw job-lifecycle records in partition/offset order."""
    codec = codecs.for_topic(JOB_LIFECYCLE)
    states: dict[str, dict] = {}
    seen: dict[str, set[str]] = {}
    seq = itertools.count()
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    for record in ordered:
        try:
            event = codec.decode(record.value or b"")
        except EventDecodeError:
            continue
        if job_id is not None and event.job_id != job_id:
            continue
        ids = seen.setdefault(event.job_id, set())
        if event.event_id in ids:
            continue
        entry = {"event_id": event.event_id, "at_ms": utc_ms(event.timestamp), "seq": next(seq),
                 "offset": record.offset, "value": base64.b64encode(record.value).decode()}
        decode: Callable[[dict], Any] = lambda e: (codec.decode(base64.b64decode(e["value"])), e["at_ms"])  # noqa: E731
        outcome = decide(state=states.get(event.job_id), event=event, at_ms=entry["at_ms"], parked_entry=entry,
                         decode_parked=decode, max_retries=max_retries)
        own_rejected = any(e is entry for e, _, _ in outcome.rejected)
        if not own_rejected:
            ids.add(event.event_id)
        if outcome.state is not None:
            states[event.job_id] = outcome.state
    return states


def differences(*, expected: dict[str, dict], actual: dict[str, dict]) -> list[dict[str, Any]]:
    diffs = []
    for job in sorted(set(expected) | set(actual)):
        if job not in actual:
            diffs.append({"job_id": job, "problem": "missing from job_state"})
            continue
        if job not in expected:
            diffs.append({"job_id": job, "problem": "in job_state but not derivable from job-lifecycle"})
            continue
        for field in COMPARED:
            want, have = expected[job].get(field), actual[job].get(field)
            if want != have:
                diffs.append({"job_id": job, "field": field, "recomputed": want, "table": have})
    return diffs
