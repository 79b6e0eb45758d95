"""What a record costs the Kafka client, handed over one ``send`` at a time or appended to a
record batch per partition: ``python -m bench.producer_batches [--records N] [--partitions N]``.

An aiokafka producer configured like the worker's (acks=all, idempotent, linger 5 ms) writes
``--records`` records of 200 bytes to a fresh topic on ``COSMIC_KAFKA_BOOTSTRAP``, 500 at a time
(one batch's worth), every acknowledgement awaited before the next 500, two ways, alternating
for ``--rounds`` rounds:

* ``send``: one ``send`` per record (a future, the partitioner, the accumulator) — how every
  record of a batch went out before 2026-12-07;
* ``send_batch``: the 500 grouped per partition, each group appended to one ``create_batch()``
  builder and handed over with ``send_batch`` — how a batch's changelog records go out now
  (:func:`app.worker.faust_internals.changelog.send_records`).

Prints the client's CPU per record (``time.process_time``) and records/s for each. The topic is
deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

CHUNK = 500


async def _run(*, records: int, partitions: int, rounds: int) -> dict[str, list[float]]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from app.core.settings import Settings
    from app.ops.topic_admin import wait_until_served

    bootstrap = Settings.from_env().kafka_bootstrap
    topic = f"bench-producer-batches-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    await wait_until_served(admin=admin, bootstrap=bootstrap, names=[topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=True)
    value = b"v" * 200
    results: dict[str, list[float]] = {}

    async def one_send_each(start: int) -> None:
        futures = [await producer.send(topic, value, key=b"k%d" % i, partition=i % partitions)
                   for i in range(start, start + CHUNK)]
        await asyncio.gather(*futures)

    async def a_batch_per_partition(start: int) -> None:
        futures = []
        for partition in range(partitions):
            builder = producer.create_batch()
            for i in range(start + partition, start + CHUNK, partitions):
                if builder.append(key=b"k%d" % i, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = producer.create_batch()
                    builder.append(key=b"k%d" % i, value=value, timestamp=None)
            futures.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*futures)

    try:
        await producer.start()
        await producer.send_and_wait(topic, b"warm-up", partition=0)
        for _ in range(rounds):
            for name, way in (("send", one_send_each), ("send_batch", a_batch_per_partition)):
                cpu, wall = time.process_time(), time.perf_counter()
                for start in range(0, records, CHUNK):
                    await way(start)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                results.setdefault(f"{name}_cpu_us_per_record", []).append(round(cpu / records * 1e6, 1))
                results.setdefault(f"{name}_records_per_s", []).append(round(records / wall))
    finally:
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_batches", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=40_000, help="records per way and round (default 40,000)")
    parser.add_argument("--partitions", type=int, default=10, help="partitions of the topic (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    args = parser.parse_args(argv)
    records = max(CHUNK, args.records // CHUNK * CHUNK)
    for key, values in asyncio.run(_run(records=records, partitions=args.partitions, rounds=args.rounds)).items():
        print(f"{key}: {' / '.join(f'{v:,}' for v in values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
