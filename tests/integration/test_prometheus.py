"""GET /metrics of a real worker after events went through it: Prometheus text that parses,
with every family of app/worker/observability.py; and, with COSMIC_LOG_FORMAT=json, the worker's log
lines about an event are JSON carrying its correlation_id and job_id."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
import uuid

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from app.core.validation import event_to_json
from app.ops.demo import lifecycle_events
from support.polling import wait_until_async
from support.rabbit import vhost  # noqa: F401 - fixture

FAMILIES = (
    "cosmic_events_consumed", "cosmic_events_produced", "cosmic_processing_seconds", "cosmic_publish_seconds",
    "cosmic_idempotency_hits", "cosmic_dlq_events", "cosmic_consumer_lag", "cosmic_seconds_since_commit",
    "cosmic_rabbitmq_confirms", "cosmic_rabbitmq_nacks", "cosmic_rabbitmq_connected",
    "cosmic_websocket_connections", "cosmic_websocket_dropped_slow_clients",
)


def _scrape(base_url: str) -> tuple[str, dict]:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    return content_type, {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict, sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    family = families.get(name)
    if family is None:
        return 0.0
    return sum(s.value for s in family.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


async def _post(session: aiohttp.ClientSession, url: str, events: list[dict], *, bearer: str) -> None:
    async with session.post(url, json=events, headers={"Authorization": f"Bearer {bearer}"}) as response:
        assert response.status == 202, await response.text()


async def test_metrics_has_every_family_and_json_logs_carry_the_event(worker_factory, vhost, uid):  # noqa: F811
    worker = await asyncio.to_thread(worker_factory(
        COSMIC_RABBITMQ_URL=vhost.url, COSMIC_LOG_FORMAT="json", COSMIC_HEALTH_INTERVAL_SECONDS="1").start)
    job_id, orphan = f"job-{uid}", f"orphan-{uid}"
    events = [event_to_json(e) for e in
              lifecycle_events(job_id=job_id, user_id="ursula", rng=random.Random(5), outcome="COMPLETED")]
    # A job never submitted: dead-lettered (unknown-job) with its own correlation id.
    stray = event_to_json(lifecycle_events(job_id=orphan, user_id="ursula", rng=random.Random(6),
                                           outcome="COMPLETED")[1])
    stray["correlation_id"] = orphan_corr = f"corr-{uuid.uuid4()}"
    publisher = worker.publisher_token()
    async with aiohttp.ClientSession() as session:
        await _post(session, f"{worker.base_url}/api/events", events, bearer=publisher)
        await _post(session, f"{worker.base_url}/api/events", [events[1]], bearer=publisher)  # a redelivery: duplicate
        await _post(session, f"{worker.base_url}/api/events", [stray], bearer=publisher)

    def settled(families: dict) -> bool:
        # job-lifecycle has one reader (its agent also makes the RabbitMQ copies): each record once
        return (_value(families, "cosmic_events_consumed_total", topic="job-lifecycle") >= len(events) + 2
                and _value(families, "cosmic_events_produced_total", topic="audit-trail") >= len(events)
                and _value(families, "cosmic_idempotency_hits_total", agent="track_job_lifecycle") >= 1
                and _value(families, "cosmic_dlq_events_total", topic="job-lifecycle", reason="unknown-job") >= 1
                and _value(families, "cosmic_duplicates_dropped_total", topic="job-lifecycle") >= 1
                and _value(families, "cosmic_rabbitmq_confirms_total", exchange="job.events") >= len(events)
                and _value(families, "cosmic_consumer_lag") == 0 and bool(families["cosmic_consumer_lag"].samples))

    content_type, families = await wait_until_async(lambda: asyncio.to_thread(_scrape, worker.base_url), timeout=120,
                                                    interval=1.0, what="settled /metrics",
                                                    accept=lambda scraped: settled(scraped[1]), fail=False)
    assert content_type.startswith("text/plain")
    missing = [name for name in FAMILIES if name not in families]
    assert not missing, f"families missing from /metrics: {missing}"
    empty = [name for name in FAMILIES if not families[name].samples]
    assert not empty, f"families without samples: {empty}"
    assert settled(families), {n: [(s.name, s.labels, s.value) for s in families[n].samples] for n in FAMILIES}
    assert _value(families, "cosmic_processing_seconds_count", agent="track_job_lifecycle") >= len(events) + 2
    assert _value(families, "cosmic_publish_seconds_count", topic="audit-trail") >= len(events)
    assert _value(families, "cosmic_rabbitmq_connected") == 1.0
    lag_topics = {s.labels["topic"] for s in families["cosmic_consumer_lag"].samples}
    assert {"job-lifecycle", "system-health"} <= lag_topics, lag_topics
    print(f"\n/metrics: {sum(len(f.samples) for f in families.values())} samples in {len(families)} families")

    # JSON logs: every line mentioning the orphan job is JSON with its correlation_id and job_id.
    lines = worker.log_path.read_text(errors="replace").splitlines()
    about = [line for line in lines if orphan in line]
    assert about, worker.log_tail()
    parsed = [json.loads(line) for line in about]
    for record in parsed:
        assert (record["correlation_id"], record["job_id"]) == (orphan_corr, orphan), record
    assert any("dead-lettered" in r["message"] for r in parsed) or any("unknown-job" in r["message"] for r in parsed)
    ours = [json.loads(line) for line in lines if line.startswith("{") and f'"job_id": "{job_id}"' in line]
    assert all(r["correlation_id"] == events[0]["correlation_id"] for r in ours)
