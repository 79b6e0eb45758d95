"""Structured logs: the event being handled (correlation_id, job_id, event_id) on every line
logged while an agent handles it, as text or as one JSON object per line (``COSMIC_LOG_FORMAT``).

:func:`event_context` binds the event in context variables (set per event by
:func:`app.worker.streams.handle_one`; each agent runs in its own task, so contexts never mix);
:class:`EventContextFilter` copies them onto every log record; :func:`logging_config` is the
``logging.config.dictConfig`` dictionary Faust's worker installs at start-up (the app's
``logging_config`` setting, see :mod:`app.worker.main`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from datetime import datetime, timezone
from typing import Any, Iterator

correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)

CONTEXT_FIELDS = ("correlation_id", "job_id", "event_id")
TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"


@contextlib.contextmanager
def event_context(*, correlation_id: str | None, job_id: str | None, event_id: str | None = None) -> Iterator[None]:
    """Bind an event to the log lines written inside the block."""
    tokens = (correlation_id_var.set(correlation_id), job_id_var.set(job_id), event_id_var.set(event_id))
    try:
        yield
    finally:
        event_id_var.reset(tokens[2])
        job_id_var.reset(tokens[1])
        correlation_id_var.reset(tokens[0])


def event_context_of(event: Any) -> contextlib.AbstractContextManager[None]:
    """:func:`event_context` for a decoded event, a record or its JSON form (job_id when the
    event has one)."""
    if isinstance(event, dict):
        return event_context(correlation_id=event.get("correlation_id"), job_id=event.get("job_id"),
                             event_id=event.get("event_id"))
    return event_context(correlation_id=getattr(event, "correlation_id", None),
                         job_id=getattr(event, "job_id", None), event_id=getattr(event, "event_id", None))


class EventContextFilter(logging.Filter):
    """Adds ``correlation_id``, ``job_id`` and ``event_id`` (None outside an event) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = correlation_id_var.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        if getattr(record, "event_id", None) is None:
            record.event_id = event_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, correlation_id, job_id, event_id
    (null outside an event), and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            data[name] = getattr(record, name, None)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """Faust's usual line, plus ``[correlation_id=… job_id=…]`` on lines about an event."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or TEXT_FORMAT, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        bound = [f"{name}={getattr(record, name)}" for name in ("correlation_id", "job_id")
                 if getattr(record, name, None)]
        return f"{line} [{' '.join(bound)}]" if bound else line


def logging_config(*, log_format: str, log_level: str) -> dict[str, Any]:
    """The worker's ``dictConfig``: one stdout handler with the event filter and the format."""
    formatter = "app.worker.logging_setup.JsonFormatter" if log_format == "json" else "app.worker.logging_setup.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"event_context": {"()": "app.worker.logging_setup.EventContextFilter"}},
        "formatters": {"cosmic": {"()": formatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "cosmic",
                "filters": ["event_context"],
            }
        },
        "root": {"level": log_level.upper(), "handlers": ["default"]},
    }
