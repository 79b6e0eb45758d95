"""``GET /api/stats`` (operator JWT): job counts by status and dead-letter topic sizes.

``{"jobs": {"by_status": {status: n}, "total": n, "partitions": [...]}, "dlq": {topic: records},
"dlq_total": n, "partial", "missing_partitions"}``. Counts come from ``job_counts`` (one value
per job-lifecycle partition), gathered from every worker of the group (:mod:`app.web.gather`):
each counts the partitions it holds, the counts add, ``partitions`` lists those counted. A dead-letter topic's size is its end offset minus its beginning offset,
summed over its partitions (records retained now); a topic missing on the broker counts 0.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from app.core.auth import Principal
from app.core.errors import CosmicError
from app.core.models import JOB_STATUSES
from app.core.settings import Settings
from app.core.topic_specs import spec_by_name, unprefixed
from app.ops.dlq import dlq_topics
from app.web.gather import Gather
from app.web.route import OPERATOR, endpoint, page
from app.worker.health import HealthReporter
from app.worker.main import settings
from tables.job_counts import job_counts


class StatsUnavailable(CosmicError):
    """Kafka did not answer the offset requests."""


async def dlq_sizes(*, settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Records retained in each dead-letter topic (unprefixed name → count): one metadata, one
    beginning-offsets and one end-offsets request, on the health reporter's long-lived consumer
    (a consumer of its own when no reporter runs)."""
    reporter = HealthReporter.current
    own: AIOKafkaConsumer | None = None
    try:
        if reporter is not None:
            consumer = await asyncio.wait_for(reporter.offsets_consumer(), timeout)
        else:
            own = consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                              enable_auto_commit=False)
            await asyncio.wait_for(consumer.start(), timeout)
        existing = await asyncio.wait_for(consumer.topics(), timeout)
        names = {topic: unprefixed(topic=topic, prefix=settings.topic_prefix)
                 for topic in dlq_topics(settings=settings)}
        # the spec's partitions (consumer.topics() does not fill the consumer's own metadata)
        tps = [TopicPartition(topic, p) for topic, name in names.items() if topic in existing
               for p in range(spec_by_name(name).partitions)]
        begins = await asyncio.wait_for(consumer.beginning_offsets(tps), timeout) if tps else {}
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout) if tps else {}
        sizes = {name: 0 for name in names.values()}
        for tp in tps:
            sizes[names[tp.topic]] += ends[tp] - begins[tp]
        return sizes
    except (KafkaError, asyncio.TimeoutError, OSError) as exc:
        if reporter is not None:
            await reporter.reset_kafka()
        raise StatsUnavailable(f"cannot read the dead-letter topics' offsets: {exc!r}") from exc
    finally:
        if own is not None:
            await own.stop()


def job_status_counts(*, partitions: frozenset[int] | None = None) -> tuple[dict[str, int], list[int]]:
    """(status → jobs, job-lifecycle partitions counted) from this worker's job_counts, of
    ``partitions`` only if given."""
    totals = {status: 0 for status in JOB_STATUSES}
    counted = []
    for key, value in job_counts.items():
        if not value or (partitions is not None and int(key) not in partitions):
            continue
        counted.append(int(key))
        for status, count in value.get("counts", {}).items():
            totals[status] = totals.get(status, 0) + count
    return totals, sorted(counted)


async def merge_stats(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any] | Response:
    """Counts of every part added; the dead-letter sizes read once, by the gathering worker."""
    by_status: dict[str, int] = {status: 0 for status in JOB_STATUSES}
    partitions: list[int] = []
    for part in parts:
        partitions.extend(part["partitions"])
        for status, count in part["by_status"].items():
            by_status[status] = by_status.get(status, 0) + count
    try:
        dlq = await dlq_sizes(settings=settings)
    except StatsUnavailable as exc:
        return web.json({"error": "Kafka could not be read", "reason": str(exc)}, status=503)
    return {"jobs": {"by_status": by_status, "total": sum(by_status.values()), "partitions": sorted(partitions)},
            "dlq": dlq, "dlq_total": sum(dlq.values())}


@page("/api/stats")
class StatsView(View):
    @endpoint(access=OPERATOR, ready=True, gather=Gather(scope=job_counts, merge=merge_stats), tags=["stats"],
              summary="Job counts by status (gathered from every worker) and dead-letter topic sizes",
              responses={200: '{"jobs": {"by_status", "total", "partitions"}, "dlq": {topic: records}, "dlq_total", '
                              '"partial", "missing_partitions"}',
                         503: "worker not ready, a worker's part missing, or Kafka could not be read"})
    async def get(self, request: Request, *, principal: Principal, partitions: frozenset[int] | None) -> dict[str, Any]:
        by_status, counted = job_status_counts(partitions=partitions)
        return {"by_status": by_status, "partitions": counted}
