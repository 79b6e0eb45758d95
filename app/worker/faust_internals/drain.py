"""Faust's consumer hands each fetched record to its streams without four tasks per record.

``Consumer._drain_messages`` delivers every record with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's
``Service.wait_first`` wraps the callback, the suspend-flow wait and the service's stopped and
crashed waits in four tasks, waits for the first, and cancels the rest — about 23 µs of CPU
per record here (``python -m bench.hotpath`` cannot see it; a microbenchmark under uvloop:
22.7 µs against 0.3 µs for awaiting the callback itself), where the callback nearly always
finishes at once (it puts the record into its streams' queues, which have room). A worker
drains about three records per lifecycle event (the event, its audit record, its
notification share and the ``known_jobs`` changelog record its global table reads back).

:func:`_wait_first` (the consumer's ``wait_first`` for exactly that call: two coroutines, no
timeout) runs the callback's first step in place. If it finished, the record is delivered and
nothing else is created — what Faust's tasks would have found too (a callback whose first step
completes is done whatever the other waits say; the stopped/crashed check is kept). If it
suspended (a stream's queue is full), the rest of the callback runs in a task that continues
it exactly as ``await`` would (:class:`_Continue`) and Faust's own ``wait_first`` takes over
with it: the suspend-flow wait still cancels a delivery blocked in a rebalance.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any, Generator

from faust.transport.consumer import Consumer
from mode.services import WaitResults

_MODE_WAIT_FIRST = Consumer.wait_first


class _Continue:
    """Awaitable that continues ``coro``, whose first step already ran and yielded ``pending``:
    the futures it yields go to the awaiting task, and what that task sends or throws goes to
    ``coro`` — what ``await coro`` would have done from the start."""

    def __init__(self, coro: types.CoroutineType, pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, None, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                yield pending
            except BaseException as exc:  # noqa: BLE001 - e.g. the task's cancellation: to coro
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(None)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: types.CoroutineType, pending: Any) -> Any:
    return await _Continue(coro, pending)


async def _wait_first(self: Consumer, *coros: Any, timeout: Any = None) -> WaitResults:
    """mode's ``Service.wait_first``, with the callback's first step run in place (see the
    module docstring); any other call is mode's."""
    if len(coros) != 2 or timeout is not None or not all(isinstance(c, types.CoroutineType) for c in coros):
        return await _MODE_WAIT_FIRST(self, *coros, timeout=timeout)
    callback, other = coros
    try:
        pending = callback.send(None)
    except StopIteration as stop:
        other.close()  # never started: closing it is all it needs
        # One turn of the event loop per record, as Faust's tasks gave it (three): a rebalance
        # notified meanwhile (stop the flow, new generation) is seen by Faust's ``getmany``
        # before it hands over the next record of the fetch. Without it a whole fetch was
        # delivered at once, past a rebalance: records read before the recovery's seek moved the
        # read offset ahead, and the recovered changelog records were then dropped as already
        # read (recovery stalled ~90 s in one of two runs of the gathered-read failover test).
        await asyncio.sleep(0)
        if self._stopped.is_set() or self._crashed.is_set():
            return WaitResults([], [], True)
        return WaitResults([callback], [stop.value], False)
    except BaseException:
        other.close()
        raise
    return await _MODE_WAIT_FIRST(self, _finish(callback, pending), other)


def install() -> None:
    """Make Faust's consumers deliver records through :func:`_wait_first` (idempotent)."""
    Consumer.wait_first = _wait_first  # type: ignore[method-assign]
