"""app/faust_fixes.py: Faust's producer-buffer flush must drain the buffer completely before
offsets are committed (Faust's own gives up after 0.1 s without progress)."""

from __future__ import annotations

import asyncio

import app.main  # noqa: F401 - applies the fixes
from faust.transport.producer import ProducerBuffer

from app import faust_fixes


class SlowBuffer:
    """Stands in for a ProducerBuffer whose messages leave slowly (one per 0.15 s)."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.calls = 0

    @property
    def size(self) -> int:
        return self.pending

    async def flush_atmost(self, max_messages):  # noqa: ANN001
        # Faust's behaviour: no message sent within 0.1 s -> return, buffer not empty.
        self.calls += 1
        await asyncio.sleep(0.1)
        return 0

    async def drain_slowly(self) -> None:
        while self.pending:
            await asyncio.sleep(0.15)
            self.pending -= 1


async def test_flush_waits_until_the_buffer_is_empty():
    assert ProducerBuffer.flush is faust_fixes._flush_completely
    buffer = SlowBuffer(pending=4)
    drainer = asyncio.ensure_future(buffer.drain_slowly())
    await faust_fixes._flush_completely(buffer)  # type: ignore[arg-type]
    assert buffer.size == 0 and buffer.calls > 1
    await drainer


async def test_flush_of_an_empty_buffer_returns_at_once():
    buffer = SlowBuffer(pending=0)
    buffer.flush_atmost = lambda max_messages: asyncio.sleep(0, result=0)  # type: ignore[method-assign]
    await asyncio.wait_for(faust_fixes._flush_completely(buffer), timeout=1)  # type: ignore[arg-type]
