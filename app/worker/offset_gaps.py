"""Reading the records of a partition between two offsets, for an agent that found a gap.

A gap is a run of offsets an agent never saw although later ones reached it: records Faust
committed past without delivering them (see ``tables/agent_cursors.py``). They are read
here with a plain aiokafka consumer (no group, nothing committed) and handed back in offset
order; the agent handles them before the record that revealed the gap. Offsets with no
record (transaction markers, retention) are simply absent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from app.core.errors import CosmicError

logger = logging.getLogger(__name__)


class GapReadError(CosmicError):
    """The records of a gap could not be read from Kafka."""


async def read_range(
    *, bootstrap: str, topic: str, partition: int, first: int, last: int, timeout: float = 60.0
) -> list[Any]:
    """Records of ``topic[partition]`` with ``first <= offset <= last``, in offset order."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    records: list[Any] = []
    try:
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, first)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            end = (await consumer.end_offsets([tp]))[tp]
            position = await consumer.position(tp)
            if position > last or position >= end:
                break
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
            for record in batch.get(tp, []):
                if record.offset > last:
                    return records
                records.append(record)
        else:
            raise GapReadError(f"reading {topic}[{partition}] {first}..{last} took over {timeout:.0f} s")
    except KafkaError as exc:
        raise GapReadError(f"reading {topic}[{partition}] {first}..{last}: {exc!r}") from exc
    finally:
        await consumer.stop()
    return records
