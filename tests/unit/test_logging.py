"""Structured logs (app.worker.logging_setup): the event's correlation_id and job_id on every line
logged while it is handled, as JSON or text."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import random

import pytest

from app.core.errors import RejectedEvent
from app.ops.demo import lifecycle_events
from app.worker.logging_setup import EventContextFilter, JsonFormatter, TextFormatter, event_context, logging_config
from app.worker.main import codecs
from app.worker.streams import Origin, handle_one


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(EventContextFilter())
    logger = logging.getLogger(f"test-logging-{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_lines_carry_the_bound_event_and_nulls_outside_it():
    logger, out = _logger(JsonFormatter())
    with event_context(correlation_id="corr-1", job_id="job-1", event_id="ev-1"):
        logger.info("applied %s", "JobQueued")
    logger.warning("idle")
    inside, outside = [json.loads(line) for line in out.getvalue().splitlines()]
    assert inside["message"] == "applied JobQueued" and inside["level"] == "INFO"
    assert (inside["correlation_id"], inside["job_id"], inside["event_id"]) == ("corr-1", "job-1", "ev-1")
    assert (outside["correlation_id"], outside["job_id"]) == (None, None)


def test_json_lines_keep_exceptions():
    logger, out = _logger(JsonFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        with event_context(correlation_id="c", job_id=None):
            logger.exception("handler failed")
    line = json.loads(out.getvalue())
    assert "ValueError: boom" in line["exception"] and line["correlation_id"] == "c" and line["job_id"] is None


def test_text_lines_name_the_event_only_when_there_is_one():
    logger, out = _logger(TextFormatter())
    with event_context(correlation_id="corr-2", job_id="job-2"):
        logger.info("about an event")
    logger.info("not about an event")
    about, plain = out.getvalue().splitlines()
    assert about.endswith("about an event [correlation_id=corr-2 job_id=job-2]")
    assert plain.endswith("not about an event")


async def test_contexts_of_concurrent_agents_do_not_mix():
    logger, out = _logger(JsonFormatter())

    async def agent(name: str) -> None:
        with event_context(correlation_id=f"c-{name}", job_id=f"j-{name}"):
            for _ in range(3):
                await asyncio.sleep(0)
                logger.info(name)

    await asyncio.gather(agent("a"), agent("b"))
    for line in map(json.loads, out.getvalue().splitlines()):
        assert line["correlation_id"] == f"c-{line['message']}" and line["job_id"] == f"j-{line['message']}"


async def test_handle_one_binds_the_event_while_its_handler_and_dead_letter_log(memory_registry, captured, caplog):
    event = lifecycle_events(job_id="job-ctx", user_id="u", rng=random.Random(2), outcome="COMPLETED")[1]
    origin = Origin(topic="job-lifecycle", partition=0, offset=7, timestamp_ms=1, key=b"job-ctx",
                    value=codecs.for_topic("job-lifecycle").encode(event))
    seen = []
    caplog.handler.addFilter(EventContextFilter())

    async def handler(ev, org):  # noqa: ANN001
        logging.getLogger("agents.test").warning("handling")
        seen.append(1)
        raise RejectedEvent("no such job", reason="unknown-job")

    with caplog.at_level(logging.WARNING):
        assert await handle_one(topic="job-lifecycle", origin=origin, handler=handler) is False
        logging.getLogger("agents.test").warning("after")
    records = {r.getMessage(): r for r in caplog.records}
    assert (records["handling"].correlation_id, records["handling"].job_id) == (event.correlation_id, "job-ctx")
    assert records["after"].correlation_id is None and records["after"].job_id is None
    assert seen == [1] and captured["dead"][0][1] == "unknown-job"


@pytest.mark.parametrize("log_format, formatter", [("json", "JsonFormatter"), ("text", "TextFormatter")])
def test_worker_logging_config_installs_the_filter_and_format(log_format, formatter):
    config = logging_config(log_format=log_format, log_level="info")
    assert config["formatters"]["cosmic"]["()"].endswith(formatter)
    assert config["handlers"]["default"]["filters"] == ["event_context"]
    assert config["root"]["level"] == "INFO"
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(config)
        handler = root.handlers[-1]
        assert isinstance(handler.formatter, JsonFormatter if log_format == "json" else TextFormatter)
        assert any(isinstance(f, EventContextFilter) for f in handler.filters)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
