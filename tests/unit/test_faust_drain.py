"""app/worker/faust_internals/drain.py: Faust's consumer delivers a record whose delivery completes
at once without creating tasks; a delivery that blocks still runs to its end, or is cancelled by
the suspend-flow wait as in Faust; errors propagate; other calls are mode's own."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from faust.transport.consumer import Consumer
from mode import Service
from mode.utils.locks import Event

import app.worker.main  # noqa: F401 - installs the patches
from app.worker.faust_internals import drain


class Drainer(Service):
    """Stands in for Faust's consumer: a mode service whose wait_first is the patched one."""

    wait_first = drain._wait_first


def test_the_worker_s_consumer_delivers_through_the_fast_path():
    assert Consumer.wait_first is drain._wait_first


async def test_a_delivery_that_completes_at_once_creates_no_task_and_closes_the_other_wait(monkeypatch):
    service, flow = Drainer(), Event()
    delivered: list[int] = []

    async def deliver(value: int) -> int:
        delivered.append(value)
        return value * 2

    created = []
    real = asyncio.ensure_future
    monkeypatch.setattr(asyncio, "ensure_future", lambda *a, **k: created.append(a) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be an error
        results = await service.wait_first(deliver(21), flow.wait())
        gc.collect()
    assert delivered == [21]
    assert results.results == [42] and results.stopped is False
    assert created == []


async def test_a_delivery_that_blocks_runs_to_its_end_in_a_task():
    service, flow, room = Drainer(), Event(), asyncio.Event()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("first step")
        await room.wait()  # a full stream queue
        await asyncio.sleep(0)
        steps.append("delivered")
        return "done"

    waiting = asyncio.ensure_future(service.wait_first(deliver(), flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["first step"] and not waiting.done()
    room.set()
    results = await asyncio.wait_for(waiting, 1)
    assert steps == ["first step", "delivered"]
    assert results.results == ["done"] and results.stopped is False


async def test_a_blocked_delivery_is_cancelled_when_the_flow_is_suspended():
    service, flow = Drainer(), Event()
    seen: list[str] = []

    async def deliver() -> None:
        try:
            await asyncio.Event().wait()  # never gets room
        except asyncio.CancelledError:
            seen.append("cancelled inside the delivery")
            raise

    waiting = asyncio.ensure_future(service.wait_first(deliver(), flow.wait()))
    await asyncio.sleep(0.01)
    flow.set()  # a rebalance suspends the flow
    results = await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert seen == ["cancelled inside the delivery"]
    assert results.stopped is False and results.results == [True]  # the suspend-flow wait won


async def test_a_failing_delivery_raises_before_or_after_it_blocked():
    service, flow, room = Drainer(), Event(), asyncio.Event()

    async def fails_at_once() -> None:
        raise ValueError("bad record")

    async def fails_later() -> None:
        await room.wait()
        raise KeyError("later")

    with pytest.raises(ValueError, match="bad record"):
        await service.wait_first(fails_at_once(), flow.wait())
    waiting = asyncio.ensure_future(service.wait_first(fails_later(), flow.wait()))
    await asyncio.sleep(0.01)
    room.set()
    with pytest.raises(KeyError, match="later"):
        await asyncio.wait_for(waiting, 1)


async def test_a_stopped_service_reports_stopped_as_mode_does():
    service, flow = Drainer(), Event()

    async def deliver() -> int:
        return 1

    service._stopped.set()
    results = await service.wait_first(deliver(), flow.wait())
    assert results.stopped is True and results.done == []


async def test_other_calls_are_mode_s_own():
    service = Drainer()

    async def one() -> int:
        return 7

    assert (await service.wait_first(one())).results == [7]
    assert (await service.wait_first(one(), asyncio.sleep(5), timeout=1)).results == [7]


async def test_each_delivery_gives_the_event_loop_a_turn_so_a_rebalance_is_seen_between_records():
    """Faust's getmany checks the flow between records: work scheduled meanwhile (a rebalance
    stopping the flow) must run before the next record is handed over."""
    service, flow = Drainer(), Event()
    delivered: list[int] = []
    ran_between: list[int] = []

    async def deliver(value: int) -> None:
        delivered.append(value)

    asyncio.get_running_loop().call_soon(lambda: ran_between.append(len(delivered)))
    await service.wait_first(deliver(1), flow.wait())
    await service.wait_first(deliver(2), flow.wait())
    assert ran_between == [1]  # ran after the first delivery, before the second
