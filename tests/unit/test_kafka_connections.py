"""app/worker/faust_internals/connections.py and producer_state.py: a Kafka connection whose
peer went away is closed when aiokafka drops it, so its pending requests fail (and are retried)
instead of waiting out the request timeout; the producer's state names what it waits for.

No broker: a local TCP server that accepts and then closes plays the broker that went away."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.conn import AIOKafkaConnection, AIOKafkaProtocol
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

import app.worker.main  # noqa: F401 - installs the patches
from app.worker.faust_internals import connections
from app.worker.faust_internals.producer_state import producer_state
from app.worker.health import PRODUCER_STALL_SECONDS, producer_check

NODE = 1


async def _client_with_a_connection_at_eof() -> tuple[AIOKafkaClient, "asyncio.Future[Any]", asyncio.Server]:
    """A client whose connection to node 1 has one request pending and whose peer closed the
    socket (end-of-file read), before the connection's reader task has run: the moment aiokafka's
    ``_get_conn`` can see it between the broker's death and the reader task."""
    peers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    conn = AIOKafkaConnection("127.0.0.1", port, request_timeout_ms=1_200_000)
    # aiokafka's connect() without its version lookup (nothing here speaks Kafka)
    conn._closed_fut = loop.create_future()
    reader = asyncio.StreamReader(loop=loop)
    protocol = AIOKafkaProtocol(conn._closed_fut, reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, "127.0.0.1", port)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    conn._reader, conn._writer, conn._protocol = reader, writer, protocol
    pending: asyncio.Future[Any] = loop.create_future()
    conn._requests.append((7, MetadataRequest([]).prepare({3: (0, 1)}), pending))
    for _ in range(200):
        if peers:
            break
        await asyncio.sleep(0.01)
    peers[0].close()  # the broker goes away
    for _ in range(200):
        if reader.at_eof():
            break
        await asyncio.sleep(0.01)
    assert not conn.connected()
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1")
    client._conns[(NODE, ConnectionGroup.DEFAULT)] = conn
    conn._read_task = conn._create_reader_task()  # scheduled, not run yet
    return client, pending, server


@pytest.fixture
def quiet_aiokafka(monkeypatch):  # noqa: ANN001, ANN201
    """aiokafka's logger off: a captured log record of ``_get_conn``'s error would hold its frame,
    and with it the dropped connection, alive (a worker's log handlers keep no records)."""
    monkeypatch.setattr(logging.getLogger("aiokafka"), "disabled", True)


async def test_aiokafka_alone_leaves_a_dropped_connections_pending_request_unanswered(quiet_aiokafka):  # noqa: ANN001
    """The defect the patch is for, shown on aiokafka's own ``_get_conn``."""
    client, pending, server = await _client_with_a_connection_at_eof()
    try:
        assert await connections._AIOKAFKA_GET_CONN(client, NODE) is None  # dropped; node 1 unknown
        gc.collect()
        await asyncio.sleep(0.1)  # the reader task ran: it had nothing left to close
        assert not pending.done()
    finally:
        pending.cancel()
        server.close()


async def test_a_dropped_broken_connection_fails_its_pending_request_at_once(quiet_aiokafka, caplog):  # noqa: ANN001
    client, pending, server = await _client_with_a_connection_at_eof()
    try:
        with caplog.at_level(logging.WARNING, logger=connections.__name__):
            assert await client._get_conn(NODE) is None
        assert "closed with 1 request(s) unanswered (MetadataRequest_v1)" in caplog.text
        assert (NODE, ConnectionGroup.DEFAULT) not in client._conns
        assert pending.done()
        with pytest.raises(KafkaConnectionError, match="closed"):
            pending.result()
        await asyncio.sleep(0.05)
    finally:
        server.close()


async def test_a_connected_connection_is_left_alone():
    class Live:
        _requests: list[Any] = []
        closed = False

        def connected(self) -> bool:
            return True

        def close(self, **kwargs: Any) -> None:
            self.closed = True

    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1")
    live = Live()
    client._conns[(NODE, ConnectionGroup.DEFAULT)] = live
    assert await client._get_conn(NODE) is live
    assert not live.closed


def test_a_producer_not_started_has_no_state_and_passes_the_health_check():
    class NotStarted:
        _producer = None

    state = producer_state(NotStarted())
    assert not state.started
    assert producer_check(state=state).ok


class _Batch:
    def __init__(self, age: float) -> None:
        self._ctime = time.monotonic() - age


class _Accumulator:
    def __init__(self, queued: list[_Batch], in_flight: list[_Batch]) -> None:
        self._batches = {"tp": queued} if queued else {}
        self._pending_batches = set(in_flight)


class _Sender:
    def __init__(self, task: "asyncio.Task[Any]") -> None:
        self.sender_task = task
        self._in_flight = {NODE}


class _Producer:
    def __init__(self, *, task: "asyncio.Task[Any]", queued: list[_Batch], in_flight: list[_Batch]) -> None:
        self._producer = type("AIOKafkaProducer", (), {})()
        self._producer._sender = _Sender(task)
        self._producer._message_accumulator = _Accumulator(queued, in_flight)
        self._producer.client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1")


async def test_a_batch_waiting_past_the_limit_fails_the_producer_check_with_the_state():
    sender = asyncio.create_task(asyncio.sleep(3600))
    try:
        fresh = producer_state(_Producer(task=sender, queued=[_Batch(0.5)], in_flight=[_Batch(1.0)]))
        assert fresh.started and fresh.sender_running
        assert (fresh.batches_queued, fresh.batches_in_flight) == (1, 1)
        assert 1.0 <= fresh.oldest_batch_seconds < 2.0
        assert producer_check(state=fresh).ok

        producer = _Producer(task=sender, queued=[], in_flight=[_Batch(PRODUCER_STALL_SECONDS + 5)])
        waiting = type("Conn", (), {"_requests": [(3, MetadataRequest([]).prepare({3: (0, 1)}), None)]})()
        producer._producer.client._conns[(NODE, ConnectionGroup.DEFAULT)] = waiting
        stuck = producer_state(producer)
        assert stuck.pending_requests == {"1/DEFAULT": ("MetadataRequest_v1",)}
        check = producer_check(state=stuck)
        assert not check.ok
        assert "unacknowledged" in check.error
        assert "in flight to nodes [1]" in check.detail and "MetadataRequest_v1" in check.detail
    finally:
        sender.cancel()


async def test_a_stopped_sender_fails_the_producer_check():
    async def fail() -> None:
        raise RuntimeError("sender routine died")

    sender = asyncio.create_task(fail())
    await asyncio.sleep(0)
    state = producer_state(_Producer(task=sender, queued=[], in_flight=[]))
    assert not state.sender_running
    check = producer_check(state=state)
    assert not check.ok
    assert "sender stopped" in check.error
    assert "sender routine died" in check.detail
