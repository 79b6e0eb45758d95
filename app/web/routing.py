"""Table reads routed to the worker that owns the key, with a clear 503 while not ready.

Faust's ``table_route`` raises (→ 500) while the worker has no partition assignment yet
or is rebalancing; callers of our API get ``503 {"error": "not ready", ...}`` instead,
with ``Retry-After``. Routes declare owner routing and readiness with
:func:`app.web.route.endpoint`, which calls these.
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable

from faust.types import TableT
from faust.web import Request, Response, View

from app.worker.faust_internals.topic_metadata import knows_partitions
from app.worker.main import app

Handler = Callable[..., Awaitable[Response]]


async def fetch_from_owner(*, table: TableT, key: str, request: Request, path: str) -> tuple[int, Any] | None:
    """GET ``path`` from the worker owning ``key`` of ``table`` with the caller's
    Authorization header: (status, JSON body); None when this worker is the owner (read the
    table locally). Raises KeyError while the owner is not known (answer 503)."""
    topic = table.changelog_topic.get_topic_name()
    if not await knows_partitions(producer=app.producer, topic=topic):
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


def to_owner(*, table: TableT, match_info: str) -> Callable[[Handler], Handler]:
    """Like ``app.table_route`` (the request goes to the worker owning the key in path
    parameter ``match_info``), but 503 while the changelog topic's partitions are not known.
    Call it once the worker is ready (:func:`worker_ready`)."""

    def decorator(handler: Handler) -> Handler:
        routed = app.table_route(table=table, match_info=match_info)(handler)

        @functools.wraps(handler)
        async def view(web: View, request: Request, **kwargs: Any) -> Response:
            if not await knows_partitions(producer=app.producer, topic=table.changelog_topic.get_topic_name()):
                return not_ready(web, "the topic's partitions are not known yet")
            return await routed(web, request, **kwargs)

        return view

    return decorator
