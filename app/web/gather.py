"""Scatter-gather of the reads that span partitions (``GET /api/jobs``, ``/api/stats``, …).

A route declared with ``gather=Gather(scope=table, merge=...)`` (:func:`app.web.route.endpoint`)
is answered for every partition of ``scope``'s changelog topic, whichever worker of the group
receives it:

1. the handler computes this worker's *part* for the partitions it holds (a validation error
   it returns is the answer: nothing is asked of the others);
2. every other member, as the group's current assignment names them
   (``app.router.table_metadata``), is asked for its partitions' part, concurrently, through
   Faust's one shared HTTP client session, with the caller's ``Authorization`` header and
   :data:`PART_HEADER` naming the partitions it must answer for. Each request is bounded by
   ``COSMIC_GATHER_TIMEOUT_SECONDS``;
3. a request carrying :data:`PART_HEADER` is a part: answered locally only (no fan-out
   loops), and only if the worker holds exactly the partitions named (503 otherwise: the
   assignment moved);
4. ``merge`` combines the parts into the answer, which carries ``"partial": false`` and
   ``"missing_partitions": []``.

A partition no part answered for (a member that did not answer in time, refused, or was
rebalancing) makes the answer ``503 {"error": "incomplete answer", "missing_partitions"}``
with ``Retry-After``; with ``?allow_partial=true`` it is the merge of the parts that did
answer, with ``"partial": true`` and the missing partitions listed (NDJSON answers carry the
same in the :data:`PARTIAL_HEADER` and :data:`MISSING_HEADER` headers). ``?local=true`` asks
nobody: this worker's own partitions only, flagged the same way (a diagnostic: what does this
worker hold). Access is checked
before any of this, by the route guard; every part checks the forwarded token again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import aiohttp
from faust.types import TableT
from faust.web import Request, Response, View
from yarl import URL

from app.core.errors import CosmicError
from app.worker.main import app

logger = logging.getLogger(__name__)

#: Marks a request as one part of a gather; its value lists the partitions to answer for.
PART_HEADER = "X-Cosmic-Gather-Part"
#: On NDJSON answers (no JSON body to carry the flags): ``true`` / ``false``, and the list.
PARTIAL_HEADER = "X-Cosmic-Partial"
MISSING_HEADER = "X-Cosmic-Missing-Partitions"
RETRY_AFTER = "1"

Handler = Callable[..., Awaitable[Any]]
Merge = Callable[..., "dict[str, Any] | Response | Awaitable[dict[str, Any] | Response]"]


class PartUnavailable(CosmicError):
    """A member's part could not be had: no answer in time, a refusal, or an unreadable body."""


@dataclass(frozen=True, kw_only=True)
class Gather:
    """How a route's answer is gathered across the group.

    ``scope``: the table whose changelog partitions the parts cover (copartitioned with the
    data read), or a function of the path parameters giving it (None: answered locally, e.g.
    a global table every worker holds whole). ``merge(web=, parts=[...], request=)``: the
    answer from the parts' bodies (a dict, or a Response such as a 404; may be a coroutine). ``render(web=, body=,
    partial=, missing=)``: the Response of a merged body (default: JSON with the flags)."""

    scope: TableT | Callable[[Mapping[str, Any]], TableT | None]
    merge: Merge
    render: Callable[..., Response] | None = None

    def table(self, match: Mapping[str, Any]) -> TableT | None:
        if callable(self.scope) and not hasattr(self.scope, "changelog_topic"):
            return self.scope(match)
        return self.scope  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class Part:
    """One member's answer for its partitions."""

    member: str
    partitions: frozenset[int]
    body: dict[str, Any]


# -- the group, as this worker sees it (patched by the unit tests) --------------------------------
def own_url() -> str:
    """This worker's canonical URL, as the group's assignment names it."""
    return str(app.conf.canonical_url)


def held_partitions(*, topic: str) -> frozenset[int]:
    """The partitions of ``topic`` this worker holds as active (not standby)."""
    try:
        actives = app.assignor.assigned_actives()
    except Exception:  # noqa: BLE001 - no assignment yet: none held
        return frozenset()
    return frozenset(tp.partition for tp in actives if tp.topic == topic)


def group_assignment(*, table: TableT) -> dict[str, frozenset[int]]:
    """Member URL → the partitions of ``table``'s changelog it holds as active."""
    topic = table.changelog_topic.get_topic_name()
    return {url: frozenset(topics.get(topic, ())) for url, topics in app.router.table_metadata(table.name).items()}


async def fetch_part(*, url: URL, headers: Mapping[str, str], timeout: float) -> tuple[int, Any]:
    """GET ``url`` with Faust's shared client session: (status, JSON body). Raises
    :class:`PartUnavailable` without an answer in ``timeout`` seconds or without a JSON body."""
    try:
        async with app.http_client.get(url, headers=dict(headers),
                                       timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise PartUnavailable(f"{url.origin()}: {exc!r}") from exc


# -- the answer -----------------------------------------------------------------------------------
def _same_member(a: str, b: str) -> bool:
    ua, ub = URL(a), URL(b)
    return (ua.host, ua.port) == (ub.host, ub.port)


def parse_partitions(value: str) -> frozenset[int]:
    """:data:`PART_HEADER`'s comma-separated partitions; ValueError when malformed."""
    text = value.strip()
    if not text:
        return frozenset()
    found = frozenset(int(p) for p in text.split(","))
    if any(p < 0 for p in found):
        raise ValueError(f"negative partition in {value!r}")
    return found


def format_partitions(partitions: frozenset[int] | set[int]) -> str:
    return ",".join(str(p) for p in sorted(partitions))


def _flag(request: Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def wants_partial(request: Request) -> bool:
    """``?allow_partial=true``: a flagged partial answer rather than 503."""
    return _flag(request, "allow_partial")


def default_render(*, web: View, body: dict[str, Any], partial: bool, missing: list[int]) -> Response:
    return web.json({**body, "partial": partial, "missing_partitions": missing})


async def _remote_part(*, member: str, partitions: frozenset[int], request: Request,
                       timeout: float) -> Part | None:
    headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
    headers[PART_HEADER] = format_partitions(partitions)
    try:
        status, body = await fetch_part(url=URL(member).join(request.rel_url), headers=headers, timeout=timeout)
    except PartUnavailable as exc:
        logger.warning("gather %s: no part from %s (partitions %s): %s", request.path, member,
                       format_partitions(partitions), exc)
        return None
    answered = body.get("partitions") if isinstance(body, dict) else None
    if status != 200 or answered is None or not isinstance(body.get("part"), dict) \
            or frozenset(answered) != partitions:
        logger.warning("gather %s: %s refused its part (partitions %s): %s %s", request.path, member,
                       format_partitions(partitions), status, str(body)[:200])
        return None
    return Part(member=member, partitions=partitions, body=body["part"])


async def answer(*, web: View, request: Request, gather: Gather, handler: Handler, kwargs: dict[str, Any],
                 timeout: float) -> Response:
    """The route's answer, gathered (see the module docstring); call it once access is checked."""
    table = gather.table(kwargs)
    if table is None:
        return await _local_only(web=web, request=request, gather=gather, handler=handler, kwargs=kwargs)
    topic = table.changelog_topic.get_topic_name()
    held = held_partitions(topic=topic)
    if PART_HEADER in request.headers:
        return await _answer_part(web=web, request=request, handler=handler, kwargs=kwargs, held=held)
    local = await handler(web, request, partitions=held, **kwargs)
    if not isinstance(local, dict):
        return local  # a validation error: nothing to ask the others
    local_only = _flag(request, "local")
    others = {} if local_only else {
        member: partitions - held for member, partitions in group_assignment(table=table).items()
        if not _same_member(member, own_url()) and partitions - held}
    remote = await asyncio.gather(*(
        _remote_part(member=member, partitions=partitions, request=request, timeout=timeout)
        for member, partitions in sorted(others.items())
    ))
    parts = [Part(member=own_url(), partitions=held, body=local)] + [p for p in remote if p is not None]
    covered = frozenset().union(*(p.partitions for p in parts))
    missing = sorted(frozenset(range(table.partitions or app.conf.topic_partitions)) - covered)
    if missing and not (local_only or wants_partial(request)):
        return web.json({"error": "incomplete answer",
                         "reason": "some partitions' workers did not answer (rebalancing, or not in "
                                   f"{timeout:g} s); retry, or pass allow_partial=true",
                         "missing_partitions": missing}, status=503, headers={"Retry-After": RETRY_AFTER})
    merged = await _merged(gather=gather, web=web, parts=[p.body for p in parts], request=request)
    if not isinstance(merged, dict):
        return merged
    return (gather.render or default_render)(web=web, body=merged, partial=bool(missing), missing=missing)


async def _merged(*, gather: Gather, web: View, parts: list[dict[str, Any]], request: Request) -> Any:
    merged = gather.merge(web=web, parts=parts, request=request)
    return await merged if inspect.isawaitable(merged) else merged


async def _answer_part(*, web: View, request: Request, handler: Handler, kwargs: dict[str, Any],
                       held: frozenset[int]) -> Response:
    try:
        wanted = parse_partitions(request.headers[PART_HEADER])
    except ValueError:
        return web.json({"error": f"bad {PART_HEADER} header"}, status=400)
    if wanted != held:
        return web.json({"error": "not ready", "reason": f"this worker holds partitions "
                                                         f"[{format_partitions(held)}], not those asked for"},
                        status=503, headers={"Retry-After": RETRY_AFTER})
    body = await handler(web, request, partitions=held, **kwargs)
    if not isinstance(body, dict):
        return body
    return web.json({"partitions": sorted(held), "part": body})


async def _local_only(*, web: View, request: Request, gather: Gather, handler: Handler,
                      kwargs: dict[str, Any]) -> Response:
    body = await handler(web, request, partitions=None, **kwargs)
    if not isinstance(body, dict):
        return body
    merged = await _merged(gather=gather, web=web, parts=[body], request=request)
    if not isinstance(merged, dict):
        return merged
    return (gather.render or default_render)(web=web, body=merged, partial=False, missing=[])
