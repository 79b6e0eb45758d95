"""A broken Kafka connection is closed when aiokafka drops it (a producer that hung for good
after a broker restart).

``AIOKafkaClient._get_conn`` finds a connection whose socket reached end-of-file (the broker
went away) and deletes it from its table *without closing it*. The connection's reader task
would close it a moment later and fail its pending requests (which the sender then retries),
but it holds the connection only by a weak reference: once deleted, the connection is freed,
the reader task finds nothing to close, and the futures of its pending requests are never
resolved. A produce request among them waits out the producer's request timeout — Faust's
default is 20 minutes — while its broker stays "in flight" in aiokafka's sender, so nothing
more is sent to that broker and every ``flush()`` (Faust's offset commit) waits too. Seen in
``tests/reliability/test_kafka_faults.py`` (single broker SIGKILLed and restarted): twice in
four clean-clone runs the worker never produced again after the broker came back
(docs/profiles.md, 2026-12-07 fifth part).

Here the connection is closed before aiokafka drops it: its pending requests fail with
``KafkaConnectionError`` at once and are retried on a new connection.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.conn import CloseReason

logger = logging.getLogger(__name__)

_AIOKAFKA_GET_CONN = AIOKafkaClient._get_conn


async def _get_conn(self: AIOKafkaClient, node_id: Any, *, group: Any = ConnectionGroup.DEFAULT,
                    no_hint: bool = False) -> Any:
    conn = self._conns.get((node_id, group))
    if conn is not None and not conn.connected():
        pending = [type(request).__name__ for _, request, future in conn._requests if not future.done()]
        if pending:
            logger.warning("Kafka connection to node %s closed with %d request(s) unanswered (%s): they fail now "
                           "and are retried", node_id, len(pending), ", ".join(pending))
        conn.close(reason=CloseReason.CONNECTION_BROKEN)
    return await _AIOKAFKA_GET_CONN(self, node_id, group=group, no_hint=no_hint)


def install() -> None:
    """Replace ``AIOKafkaClient._get_conn`` (idempotent)."""
    AIOKafkaClient._get_conn = _get_conn  # type: ignore[method-assign]
