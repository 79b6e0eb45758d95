"""Delete a test's Kafka topics at teardown (shared by the integration and reliability suites)."""

from __future__ import annotations

import asyncio
import threading
import warnings


def delete_topics_of(*, bootstrap: str, uid: str) -> None:
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
