"""Whether the producer's metadata lists a topic, fetching it if not: owner routing needs it
before Faust hashes a key (aiokafka only fetches metadata of topics it was asked about, and
neither Faust nor aiokafka has a public call for it)."""

from __future__ import annotations

from faust.types import ProducerT


async def knows_partitions(*, producer: ProducerT, topic: str) -> bool:
    """Make sure the metadata of Faust's ``producer`` lists ``topic``; False while it cannot
    (producer not started, or the broker does not know the topic yet)."""
    client = getattr(producer, "_producer", None)  # the aiokafka producer, once started
    if client is None:
        return False
    if client._metadata.partitions_for_topic(topic) is not None:
        return True
    try:
        await client.client._wait_on_metadata(topic)
    except Exception:  # noqa: BLE001 - unknown yet: the caller answers 503
        return False
    return client._metadata.partitions_for_topic(topic) is not None
