"""Table reads routed to the worker that owns the key, with a clear 503 while not ready.

Faust's ``table_route`` raises (→ 500) while the worker has no partition assignment yet
or is rebalancing; callers of our API get ``503 {"error": "not ready", ...}`` instead,
with ``Retry-After``.
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable

from faust.types import TableT
from faust.web import Request, Response, View

from app.main import app

Handler = Callable[..., Awaitable[Response]]


async def fetch_from_owner(*, table: TableT, key: str, request: Request, path: str) -> tuple[int, Any] | None:
    """GET ``path`` from the worker owning ``key`` of ``table`` with the caller's
    Authorization header: (status, JSON body); None when this worker is the owner (read the
    table locally). Raises KeyError while the owner is not known (answer 503)."""
    topic = table.changelog_topic.get_topic_name()
    if not await _knows_partitions(topic):
        raise KeyError(f"the partitions of {topic} are not known yet")
    owner = app.router.key_store(table.name, key)
    if (owner.host, owner.port) == (app.conf.canonical_url.host, app.conf.canonical_url.port):
        return None
    headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
    async with app.http_client.get(owner.with_path(path), headers=headers) as response:
        return response.status, await response.json(content_type=None)


def worker_ready() -> tuple[bool, str]:
    """Whether this worker can answer table reads now, and why not."""
    if not app.tables.recovery.completed.is_set():
        return False, "tables are recovering"
    if app.rebalancing:
        return False, "the consumer group is rebalancing"
    return True, ""


def not_ready(web: View, reason: str) -> Response:
    return web.json({"error": "not ready", "reason": reason}, status=503, headers={"Retry-After": "1"})


async def _knows_partitions(topic: str) -> bool:
    """Make sure the producer's metadata lists ``topic`` (Faust hashes the key with it to find
    the owner; aiokafka only fetches metadata of topics it was asked about)."""
    producer = getattr(app.producer, "_producer", None)  # the aiokafka producer, once started
    if producer is None:
        return False
    if producer._metadata.partitions_for_topic(topic) is not None:
        return True
    try:
        await producer.client._wait_on_metadata(topic)
    except Exception:  # noqa: BLE001 - unknown yet: the caller answers 503
        return False
    return producer._metadata.partitions_for_topic(topic) is not None


def owner_routed(*, table: TableT, match_info: str) -> Callable[[Handler], Handler]:
    """Like ``app.table_route`` but answers 503 while the worker is not ready."""

    def decorator(handler: Handler) -> Handler:
        routed = app.table_route(table=table, match_info=match_info)(handler)

        @functools.wraps(handler)
        async def view(web: View, request: Request, **kwargs: Any) -> Response:
            ready, reason = worker_ready()
            if not ready:
                return not_ready(web, reason)
            if not await _knows_partitions(table.changelog_topic.get_topic_name()):
                return not_ready(web, "the topic's partitions are not known yet")
            return await routed(web, request, **kwargs)

        return view

    return decorator
