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


def worker_ready() -> tuple[bool, str]:
    """Whether this worker can answer table reads now, and why not."""
    if not app.tables.recovery.completed.is_set():
        return False, "tables are recovering"
    if app.rebalancing:
        return False, "the consumer group is rebalancing"
    return True, ""


def not_ready(web: View, reason: str) -> Response:
    return web.json({"error": "not ready", "reason": reason}, status=503, headers={"Retry-After": "1"})


def owner_routed(*, table: TableT, match_info: str) -> Callable[[Handler], Handler]:
    """Like ``app.table_route`` but answers 503 while the worker is not ready."""

    def decorator(handler: Handler) -> Handler:
        routed = app.table_route(table=table, match_info=match_info)(handler)

        @functools.wraps(handler)
        async def view(web: View, request: Request, **kwargs: Any) -> Response:
            ready, reason = worker_ready()
            if not ready:
                return not_ready(web, reason)
            return await routed(web, request, **kwargs)

        return view

    return decorator
