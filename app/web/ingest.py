"""``POST /api/events``: one JSON event or a JSON array of events → validated, Avro, Kafka.

All-or-nothing: every item is validated and encoded before anything is produced; a
rejected batch answers 400 naming the item (``index``) and the ``field``. The body limit
is ``COSMIC_INGEST_MAX_BYTES`` (default 1 MiB) → 413. The caller needs a JWT with the
publisher role (``COSMIC_JWT_PUBLISHER_ROLE``) or the operator role: 401 without a valid token,
403 with another role — checked before the body is read. An ``X-Correlation-ID`` header is
given to events that carry no ``correlation_id``. Success: ``202 {"accepted": n,
"event_ids": [...], "correlation_ids": [...]}`` once Kafka acknowledged every event.
"""

from __future__ import annotations

import json
from typing import Any

from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from app.core.auth import Principal
from app.core.errors import EventEncodeError, EventValidationError
from app.core.timeutil import utc_now
from app.core.validation import EventTimeBounds, parse_events
from app.web.openapi import header_param
from app.web.route import PUBLISHER, endpoint, page
from app.worker.main import app, codecs, settings
from app.worker.publisher import prepare_record

CORRELATION_HEADER = "X-Correlation-ID"


async def read_limited(request: Request, *, limit: int) -> bytes | None:
    """The body, or None when it exceeds ``limit`` bytes (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _with_correlation(data: Any, correlation_id: str | None) -> Any:
    if not correlation_id:
        return data
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and item.get("correlation_id") is None:
            item["correlation_id"] = correlation_id
    return data


@page("/api/events")
class EventsView(View):
    """Ingest endpoint of the platform's API."""

    @endpoint(
        access=PUBLISHER, tags=["events"], summary="Ingest one JSON event or a JSON array (≤ 1,000) of events",
        description="Needs a JWT with the publisher role (COSMIC_JWT_PUBLISHER_ROLE) or the operator role. "
                    "Validated, Avro-encoded and produced to Kafka; all-or-nothing. "
                    "202 once Kafka acknowledged every event.",
        parameters=[header_param(CORRELATION_HEADER, "fills correlation_id of events that carry none")],
        request_body="an event object or an array of events (fields of docs/events.md)",
        responses={202: '{"accepted", "event_ids", "correlation_ids"}',
                   400: '{"error", "field", "reason", "index"}: the bad field',
                   413: "body over COSMIC_INGEST_MAX_BYTES",
                   503: "Kafka did not acknowledge (or the codec could not encode)"},
    )
    async def post(self, request: Request, *, principal: Principal) -> Response:
        raw = await read_limited(request, limit=settings.ingest_max_bytes)
        if raw is None:
            return self.json(
                {"error": "body too large", "limit_bytes": settings.ingest_max_bytes}, status=413
            )
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            return self.json({"error": "malformed JSON", "field": "", "reason": str(exc)}, status=400)
        data = _with_correlation(data, request.headers.get(CORRELATION_HEADER))
        try:
            events = parse_events(data=data, now=utc_now(), bounds=EventTimeBounds.of(settings))
        except EventValidationError as exc:
            return self.json(exc.to_dict(), status=400)
        try:
            records = [
                prepare_record(event=e, codecs=codecs, topic_prefix=settings.topic_prefix) for e in events
            ]
        except EventEncodeError as exc:
            return self.json({"error": "events could not be encoded", "reason": str(exc)}, status=503)
        published: list[str] = []
        try:
            futures = [
                await app.producer.send(
                    r.topic, r.key, r.value, None, r.timestamp_ms / 1000.0, list(r.headers)
                )
                for r in records
            ]
            for record, future in zip(records, futures):
                await future
                published.append(record.event_id)
        except KafkaError as exc:
            return self.json(
                {"error": "Kafka did not acknowledge every event", "reason": repr(exc), "published": published},
                status=503,
            )
        return self.json(
            {
                "accepted": len(events),
                "event_ids": [e.event_id for e in events],
                "correlation_ids": [e.correlation_id for e in events],
            },
            status=202,
        )
