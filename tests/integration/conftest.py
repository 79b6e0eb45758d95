"""Every integration test runs against the real local stack, and leaves no topics behind."""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest


@pytest.fixture(autouse=True)
def _real_stack(stack, uid):  # noqa: ANN001
    yield stack
    _delete_topics_of(bootstrap=stack.kafka_bootstrap, uid=uid)


def _delete_topics_of(*, bootstrap: str, uid: str) -> None:
    """Delete the test's topics (names containing its uid): a broker that keeps every test's
    partitions runs out of open files over a long session."""

    async def delete() -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if uid in t]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(delete())
        except Exception as exc:  # noqa: BLE001 - cleanup must not fail the test
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"delete-topics-{uid}")
    thread.start()
    thread.join(60)
    if errors:
        warnings.warn(f"could not delete the topics of {uid}: {errors[0]!r}", stacklevel=1)
