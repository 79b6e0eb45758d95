"""Producer buffer flush gives up (a Faust defect that would lose data).

Faust commits offsets after ``producer.flush()``, which first drains Faust's own buffer of
pending sends (changelog records of writes made outside a batch go there).
``ProducerBuffer.flush`` stops as soon as no message left the buffer for 0.1 s — on a busy
two-core machine that happens — so offsets could be committed while changelog records were
still in the buffer, and a SIGKILL then lost them. Here the flush drains the buffer
completely (waiting as long as Kafka needs; a warning every 10 s) and lets the message being
handed over reach the Kafka client before returning.
"""

from __future__ import annotations

import asyncio
import logging
import time

from faust.transport.producer import ProducerBuffer

logger = logging.getLogger(__name__)

_ORIGINAL_FLUSH = ProducerBuffer.flush


async def _flush_completely(self: ProducerBuffer) -> None:
    """Drain the buffer: every pending message handed to the Kafka client."""
    started = time.monotonic()
    warned = started
    while True:
        await self.flush_atmost(None)
        if not self.size:
            break
        now = time.monotonic()
        if now - warned >= 10:
            warned = now
            logger.warning("producer buffer: %d message(s) still waiting after %.0f s (Kafka slow or "
                           "unavailable); offsets are not committed meanwhile", self.size, now - started)
        await asyncio.sleep(0.05)
    for _ in range(3):  # the message taken last is appended to the Kafka client's batch
        await asyncio.sleep(0)


def install() -> None:
    """Replace ``ProducerBuffer.flush`` (idempotent)."""
    ProducerBuffer.flush = _flush_completely  # type: ignore[method-assign]
