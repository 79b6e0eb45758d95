"""The Faust floor of the pipeline section: a minimal Faust app, configured like the worker
(one raw-bytes agent, concurrency 1, acks=all, RocksDB store), that forwards every record
of a topic to another — with ``FLOOR_TABLE_WRITES=N``, it also writes N table keys per
record (a Faust table with a changelog, like each of the worker's state writes).

Run by ``bench.pipeline`` as ``python -m bench.faust_floor worker``; configured from the
environment (``FLOOR_*``) so nothing here touches the project's app.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ.get("FLOOR_APP_ID", "cosmic-faust-floor"),
    broker=os.environ.get("FLOOR_BROKER", "kafka://127.0.0.1:9092"),
    store=os.environ.get("FLOOR_STORE", "rocksdb://"),
    datadir=os.environ.get("FLOOR_DATADIR", "/tmp/cosmic-faust-floor"),
    topic_partitions=10,
    topic_replication_factor=int(os.environ.get("FLOOR_REPLICATION_FACTOR", "1")),
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    web_enabled=False,
)
source_topic = app.topic(os.environ.get("FLOOR_SOURCE", "floor-source"), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
sink_topic = app.topic(os.environ.get("FLOOR_SINK", "floor-sink"), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
TABLE_WRITES = int(os.environ.get("FLOOR_TABLE_WRITES", "0"))
offsets = app.Table("offsets", partitions=10, key_type=bytes, value_type=bytes)


@app.agent(source_topic, concurrency=1)
async def forward_records(stream):  # noqa: ANN001, ANN201
    async for event in stream.events():
        key = event.key or b"-"
        for n in range(TABLE_WRITES):
            offsets[key + b"/%d" % n] = b"%d" % event.message.offset
        await sink_topic.send(key=event.key, value=event.value)


if __name__ == "__main__":
    app.main()
