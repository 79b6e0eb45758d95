"""The project's own exceptions; library errors are wrapped into these."""

from __future__ import annotations


class CosmicError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(CosmicError):
    """A COSMIC_* setting is missing or malformed."""


class FaustVersionError(ConfigError):
    """The installed faust-streaming (or aiokafka) is not the version :mod:`app.worker.faust_internals`
    was written and tested against."""


class StackError(CosmicError):
    """The local stack (Kafka, RabbitMQ, registry) could not be started, stopped or checked."""


class MissingToolError(StackError):
    """A program the local stack needs (java, mvn, apt-get, rabbitmq-server) is not installed."""


class PortInUseError(StackError):
    """A port the stack wants is held by a process that is not ours."""


class RegistryError(CosmicError):
    """The schema registry's storage (its Kafka topic) failed or timed out."""


class CodecError(CosmicError):
    """Base class of encode/decode errors of event payloads."""


class EventDecodeError(CodecError):
    """Bytes on a topic are not Confluent-framed Avro of a known schema.

    ``reason`` is a short machine-readable cause (``not-framed``, ``unknown-schema-id``,
    ``registry-unavailable``, ``bad-avro``); the pipeline routes such records to the
    dead-letter topic with it.
    """

    def __init__(self, message: str, *, reason: str, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.schema_id = schema_id


class EventEncodeError(CodecError):
    """An event could not be encoded (not valid for its schema, or schema not registered)."""


class SchemaNotRegisteredError(EventEncodeError):
    """Auto-registration is off and the topic's schema is not registered under its subject."""


class EventValidationError(CosmicError):
    """Untrusted event JSON is not a valid event; the HTTP layer answers 400 with ``to_dict()``.

    ``field`` is the dotted path of the offending field (``resource_request.walltime``; ``""``
    for the whole body), ``reason`` says what is wrong in words a client can act on, and
    ``index`` is the event's position in a batch (None for a single event).
    """

    def __init__(self, *, field: str, reason: str, index: int | None = None) -> None:
        self.field = field
        self.reason = reason
        self.index = index
        where = field or "event"
        if index is not None:
            where = f"event [{index}]" + (f" field {field}" if field else "")
        super().__init__(f"invalid event: {where}: {reason}")

    def to_dict(self) -> dict[str, object]:
        """The JSON body of the 400 answer (``index`` only for batch items)."""
        body: dict[str, object] = {"error": "invalid event", "field": self.field, "reason": self.reason}
        if self.index is not None:
            body["index"] = self.index
        return body


class RetriableError(CosmicError):
    """A transient failure (broker, registry or webhook unavailable): retry with backoff."""


class RejectedEvent(CosmicError):
    """An event that is not applied by design (invalid transition, unknown job, duplicate…).

    ``reason`` is a short machine-readable code; the event goes to the dead-letter topic.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DuplicateEvent(RejectedEvent):
    """An event that was already applied (same event_id): dropped and counted, not dead-lettered."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="duplicate")


class DeliveryFailed(RetriableError):
    """A notification channel failed transiently (connection refused, timeout, HTTP 5xx/429,
    SMTP 4xx): the delivery is retried with backoff. ``reason``: a short code (``timeout``,
    ``http-503`` …)."""

    def __init__(self, message: str, *, channel: str, status: int | None = None, reason: str = "failed") -> None:
        super().__init__(message)
        self.channel = channel
        self.status = status
        self.reason = reason


class DeliveryRejected(CosmicError):
    """A notification channel refused a delivery for good (HTTP 4xx, an invalid URL, SMTP 5xx):
    retrying cannot help, so the delivery is dead-lettered at once. ``reason``: a short code
    (``http-404``, ``forbidden-address`` …)."""

    def __init__(self, message: str, *, channel: str, status: int | None = None, reason: str = "rejected") -> None:
        super().__init__(message)
        self.channel = channel
        self.status = status
        self.reason = reason


class InvalidPreferences(CosmicError):
    """A notification-preferences update is not valid; ``field`` names the offending field."""

    def __init__(self, *, field: str, reason: str) -> None:
        super().__init__(f"invalid notification preferences: {field or 'body'}: {reason}")
        self.field = field
        self.reason = reason

    def to_dict(self) -> dict[str, object]:
        """The JSON body of the 400 answer."""
        return {"error": "invalid notification preferences", "field": self.field, "reason": self.reason}
