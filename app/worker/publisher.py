"""Publishing events: the Python API, and the one place every ingest path builds its records.

``prepare_record`` turns an event into exactly the Kafka record that the Python publisher,
``POST /api/events`` and ``cosmic send`` all produce: the topic of its family, key = the
topic's key field (job_id, resource_id, user_id or component), value = Confluent Avro, the
Kafka timestamp = the event's timestamp (so replay by time window is replay by event time),
and headers ``event_type``, ``event_id``, ``correlation_id``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.core.codecs import Codecs
from app.core.errors import CosmicError
from app.core.models import EventBase, JobSubmitted, ResourceRequest
from app.core.settings import Settings
from app.core.timeutil import utc_ms, utc_now
from app.core.validation import EventTimeBounds, event_to_json, key_of, parse_event, parse_events, topic_of


class PublishError(CosmicError):
    """Kafka did not acknowledge an event (the ids it did acknowledge are in ``published``)."""

    def __init__(self, message: str, *, published: list[str]) -> None:
        super().__init__(message)
        self.published = published


@dataclass(frozen=True, kw_only=True)
class OutgoingRecord:
    event_id: str
    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...]


def prepare_record(*, event: EventBase, codecs: Codecs, topic_prefix: str) -> OutgoingRecord:
    """The Kafka record of ``event`` (encoding raises EventEncodeError)."""
    topic = topic_of(event)
    value = codecs.for_topic(topic).encode(event)
    return OutgoingRecord(
        event_id=event.event_id,
        topic=topic_prefix + topic,
        key=key_of(event).encode(),
        value=value,
        timestamp_ms=utc_ms(event.timestamp),
        headers=(
            ("event_type", event.event_type.encode()),
            ("event_id", event.event_id.encode()),
            ("correlation_id", event.correlation_id.encode()),
        ),
    )


class EventPublisher:
    """Validate, encode and publish events from any Python process (acks=all, idempotent).

    Usage::

        async with EventPublisher(settings=Settings.from_env()) as publisher:
            await publisher.publish_job_submitted(job_id="j-1", user_id="alice", ...)
    """

    def __init__(self, *, settings: Settings, codecs: Codecs | None = None) -> None:
        self.settings = settings
        self.codecs = codecs or Codecs(settings=settings)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", enable_idempotence=True,
            linger_ms=5,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise PublishError(f"Kafka at {self.settings.kafka_bootstrap} is unreachable: {exc!r}", published=[]) from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> "EventPublisher":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, event: EventBase) -> str:
        """Publish one event; returns its event_id once Kafka acknowledged it."""
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[EventBase]) -> list[str]:
        """Encode all first (nothing is sent if any fails), then send and await every ack."""
        if self._producer is None:
            raise PublishError("publisher not started", published=[])
        records = [
            prepare_record(event=e, codecs=self.codecs, topic_prefix=self.settings.topic_prefix)
            for e in events
        ]
        futures = [
            await self._producer.send(
                r.topic, r.value, key=r.key, timestamp_ms=r.timestamp_ms, headers=list(r.headers)
            )
            for r in records
        ]
        published: list[str] = []
        for record, future in zip(records, futures):
            try:
                await future
            except KafkaError as exc:
                raise PublishError(f"event {record.event_id} not acknowledged: {exc!r}", published=published) from exc
            published.append(record.event_id)
        return published

    async def publish_json(self, data: Any, *, now: datetime | None = None) -> list[str]:
        """Validate decoded JSON (one event or a list), then publish all of it or nothing."""
        events = parse_events(data=data, now=now or datetime.now(timezone.utc),
                              bounds=EventTimeBounds.of(self.settings))
        return await self.publish_many(events)

    async def publish_job_submitted(
        self, *, job_id: str, user_id: str, tacc_system: str, nodes: int, gpus: int, walltime: str,
        estimated_cost_usd: float, priority: int, job_type: str, correlation_id: str | None = None,
    ) -> JobSubmitted:
        """Publish a JobSubmitted event and return it (with its generated ids)."""
        draft = JobSubmitted(
            event_id=str(uuid.uuid4()), event_type="JobSubmitted", timestamp=utc_now(),
            correlation_id=correlation_id or str(uuid.uuid4()), user_id=user_id, schema_version=1,
            job_id=job_id, tacc_system=tacc_system,
            resource_request=ResourceRequest(nodes=nodes, gpus=gpus, walltime=walltime),
            estimated_cost_usd=estimated_cost_usd, priority=priority, job_type=job_type,
        )
        # The same checks as JSON input (walltime format, priority range, ...).
        event = parse_event(data=event_to_json(draft), now=utc_now(), bounds=EventTimeBounds.of(self.settings))
        await self.publish(event)
        return event
