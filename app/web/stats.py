"""``GET /api/stats`` (operator JWT): job counts by status and dead-letter topic sizes.

``{"jobs": {"by_status": {status: n}, "total": n, "partitions": [...]}, "dlq": {topic: records},
"dlq_total": n}``. Counts come from ``job_counts`` (one value per job-lifecycle partition; the
sum over the partitions this worker holds — all of them with one worker, listed in
``partitions``). A dead-letter topic's size is its end offset minus its beginning offset,
summed over its partitions (records retained now); a topic missing on the broker counts 0.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from app.core.auth import Principal
from app.core.errors import CosmicError
from app.core.models import JOB_STATUSES
from app.core.settings import Settings
from app.core.topic_specs import spec_by_name, unprefixed
from app.ops.dlq import dlq_topics
from app.web.route import OPERATOR, endpoint, page
from app.worker.main import settings
from tables.job_counts import job_counts


class StatsUnavailable(CosmicError):
    """Kafka did not answer the offset requests."""


async def dlq_sizes(*, settings: Settings, timeout: float = 30.0) -> dict[str, int]:
    """Records retained in each dead-letter topic (unprefixed name → count)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        existing = await asyncio.wait_for(consumer.topics(), timeout)
        sizes: dict[str, int] = {}
        for topic in dlq_topics(settings=settings):
            name = unprefixed(topic=topic, prefix=settings.topic_prefix)
            if topic not in existing:
                sizes[name] = 0
                continue
            # the spec's partitions (consumer.topics() does not fill the consumer's own metadata)
            tps = [TopicPartition(topic, p) for p in range(spec_by_name(name).partitions)]
            begins = await asyncio.wait_for(consumer.beginning_offsets(tps), timeout)
            ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
            sizes[name] = sum(ends[tp] - begins[tp] for tp in tps)
        return sizes
    except (KafkaError, asyncio.TimeoutError, OSError) as exc:
        raise StatsUnavailable(f"cannot read the dead-letter topics' offsets: {exc!r}") from exc
    finally:
        await consumer.stop()


def job_status_counts() -> tuple[dict[str, int], list[int]]:
    """(status → jobs, job-lifecycle partitions counted) from this worker's job_counts."""
    totals = {status: 0 for status in JOB_STATUSES}
    partitions = []
    for key, value in job_counts.items():
        if not value:
            continue
        partitions.append(int(key))
        for status, count in value.get("counts", {}).items():
            totals[status] = totals.get(status, 0) + count
    return totals, sorted(partitions)


@page("/api/stats")
class StatsView(View):
    @endpoint(access=OPERATOR, ready=True, tags=["stats"], summary="Job counts by status and dead-letter topic sizes",
              responses={200: '{"jobs": {"by_status", "total", "partitions"}, "dlq": {topic: records}, "dlq_total"}',
                         503: "worker not ready, or Kafka could not be read"})
    async def get(self, request: Request, *, principal: Principal) -> Response:
        by_status, partitions = job_status_counts()
        try:
            dlq = await dlq_sizes(settings=settings)
        except StatsUnavailable as exc:
            return self.json({"error": "Kafka could not be read", "reason": str(exc)}, status=503)
        return self.json({
            "jobs": {"by_status": by_status, "total": sum(by_status.values()), "partitions": partitions},
            "dlq": dlq,
            "dlq_total": sum(dlq.values()),
        })

