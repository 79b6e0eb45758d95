"""Job queries; every one needs a JWT (``Authorization: Bearer``, see :mod:`app.core.auth`).

* ``GET /api/jobs/{job_id}``: the job's current state from ``job_state``, answered by the
  worker that owns the key.
* ``GET /api/jobs/{job_id}/events?limit=``: the job's history read from ``job-lifecycle``
  (only the key's partition; every retained event of the job, in timestamp order), as
  ``{"job_id", "count", "events": [{"topic", "partition", "offset", "timestamp", "event"}],
  "errors": [...]}``.
* ``GET /api/jobs?status=&user_id=&limit=&cursor=``: jobs from ``job_state`` ordered by
  job_id, ``limit`` (1..1000, default 100) per page; ``next_cursor`` (null on the last page)
  gives the next page with the same filters. Gathered from every worker of the group
  (:mod:`app.web.gather`): each answers its first ``limit + 1`` jobs after the cursor from the
  ``job_state`` partitions it holds, and the page is the first ``limit`` of their union.

Operators see every job. A plain user sees only their own jobs: the list is restricted to
``user_id`` = the token's ``sub`` (another ``user_id`` → 403), and another user's job
answers 404 like an unknown one (its existence is not revealed). 404 for an unknown job;
503 with ``Retry-After`` while the worker recovers or rebalances (checked before the token,
so ``cosmic worker`` readiness probes can tell a ready worker by its 401/404).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Iterable

from faust.web import Request, Response, View

from app.core.auth import Principal
from app.core.models import JOB_STATUSES
from app.core.timeutil import now_ms
from app.core.topic_specs import JOB_LIFECYCLE
from app.ops.replay import ReplayError, ReplayQuery, ReplayUnavailable, open_replay
from app.web.gather import Gather
from app.web.openapi import query_param
from app.web.route import USER, Owner, endpoint, page
from app.worker.main import codecs, settings
from tables.job_state import job_state

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_HISTORY = 10_000
#: Internal fields of a job_state value that the list leaves out.
_INTERNAL = ("history", "parked", "offset")
_JOB_RESPONSES = {404: "unknown job (or another user's)"}


def visible_state(*, principal: Principal, job_id: str) -> dict[str, Any] | None:
    """The job's state if it exists and the caller may see it (operator or its user)."""
    state = job_state.get(job_id)
    if state is None or (not principal.operator and state.get("user_id") != principal.user_id):
        return None
    return state


def _not_found(web: View, job_id: str) -> Response:
    return web.json({"error": "job not found", "job_id": job_id}, status=404)


@page("/api/jobs/{job_id}")
@endpoint(access=USER, ready=True, owner=Owner(table=job_state, key="job_id"), tags=["jobs"],
          summary="A job's current state (from job_state, on the owning worker)",
          responses={200: "the job_state value", **_JOB_RESPONSES})
async def get_job(web: View, request: Request, *, principal: Principal, job_id: str) -> Response:
    state = visible_state(principal=principal, job_id=job_id)
    if state is None:
        return _not_found(web, job_id)
    return web.json(state)


@page("/api/jobs/{job_id}/events")
@endpoint(access=USER, ready=True, owner=Owner(table=job_state, key="job_id"), tags=["jobs"],
          summary="A job's event history, read from job-lifecycle",
          parameters=[query_param("limit", f"at most this many events (1..{MAX_HISTORY}, default {MAX_HISTORY})",
                                  kind="integer")],
          responses={200: '{"job_id", "count", "truncated", "events": [{"topic", "partition", "offset", '
                          '"timestamp", "event"}], "errors"}', 400: "bad limit", **_JOB_RESPONSES})
async def get_job_events(web: View, request: Request, *, principal: Principal, job_id: str) -> Response:
    if visible_state(principal=principal, job_id=job_id) is None:
        return _not_found(web, job_id)
    raw_limit = request.query.get("limit", str(MAX_HISTORY))
    limit = int(raw_limit) if raw_limit.isdigit() else 0
    if not 1 <= limit <= MAX_HISTORY:
        return web.json({"error": "invalid limit", "field": "limit",
                         "reason": f"must be an integer from 1 to {MAX_HISTORY}, got {raw_limit!r}"}, status=400)
    query = ReplayQuery(topic=JOB_LIFECYCLE, start_ms=0, end_ms=now_ms() + 2 * 3600 * 1000,
                        job_id=job_id, limit=limit)
    events: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    truncated = False
    try:
        async with open_replay(settings=settings, query=query, codecs=codecs) as replay:
            async for line in replay.lines():
                if line["type"] == "event":
                    events.append({k: v for k, v in line.items() if k != "type"})
                elif line["type"] == "error":
                    errors.append({k: v for k, v in line.items() if k != "type"})
                elif line["type"] == "cursor":
                    truncated = True
    except ReplayError as exc:
        return web.json(exc.to_dict(), status=400)
    except ReplayUnavailable as exc:
        return web.json({"error": "job-lifecycle could not be read", "reason": str(exc)}, status=503)
    return web.json({"job_id": job_id, "count": len(events), "truncated": truncated, "events": events,
                     "errors": errors})


def _digest(status: str | None, user_id: str | None) -> str:
    return json.dumps([status, user_id])


def encode_page_cursor(*, after: str, status: str | None, user_id: str | None) -> str:
    raw = json.dumps({"after": after, "f": _digest(status, user_id)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_cursor(*, cursor: str, status: str | None, user_id: str | None) -> str:
    """The job_id the page starts after; ValueError when the cursor is not for these filters."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after, digest = data["after"], data["f"]
    except (binascii.Error, ValueError, TypeError, KeyError, RecursionError):
        raise ValueError("not a cursor returned by GET /api/jobs") from None
    if digest != _digest(status, user_id) or not isinstance(after, str):
        raise ValueError("the cursor belongs to other filters (status, user_id)")
    return after


def page_part(*, states: Iterable[tuple[str, dict[str, Any] | None]], after: str, status: str | None,
              user_id: str | None, limit: int) -> list[dict[str, Any]]:
    """One worker's part of a page: its first ``limit + 1`` jobs after ``after`` by job_id
    that match the filters (the one beyond the page tells the merge there is a next page)."""
    matching = sorted(
        (job_id, state) for job_id, state in states
        if state is not None and job_id > after
        and (status is None or state.get("status") == status)
        and (user_id is None or state.get("user_id") == user_id)
    )
    return [{k: v for k, v in state.items() if k not in _INTERNAL} for _, state in matching[:limit + 1]]


def merge_job_pages(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """One page from the members' pages: each holds its first ``limit + 1`` jobs after the
    cursor, so the first ``limit`` of their union by job_id are the page's, and there is a
    next page exactly when the union has more."""
    limit = parts[0]["limit"]
    filters = parts[0]["filters"]
    matching = sorted((job for part in parts for job in part["jobs"]), key=lambda job: job["job_id"])
    page = matching[:limit]
    next_cursor = (encode_page_cursor(after=page[-1]["job_id"], status=filters["status"], user_id=filters["user_id"])
                   if len(matching) > limit else None)
    return {"jobs": page, "count": len(page), "next_cursor": next_cursor, "filters": filters}


@page("/api/jobs")
class JobListView(View):
    @endpoint(access=USER, ready=True, gather=Gather(scope=job_state, merge=merge_job_pages), tags=["jobs"],
              summary="List jobs by status and user (paged by job_id, gathered from every worker)",
              description="Plain users get only their own jobs (user_id forced to the token's sub).",
              parameters=[query_param("status", ", ".join(JOB_STATUSES)),
                          query_param("user_id", "only this user's jobs"),
                          query_param("limit", f"page size 1..{MAX_PAGE} (default {DEFAULT_PAGE})", kind="integer"),
                          query_param("cursor", "next_cursor of the previous page")],
              responses={200: '{"jobs": [...], "count", "next_cursor", "filters", "partial", "missing_partitions"}',
                         400: "bad status, limit or cursor", 403: "a plain user asking for another user's jobs"})
    async def get(self, request: Request, *, principal: Principal,
                  partitions: frozenset[int] | None) -> dict[str, Any] | Response:
        status = request.query.get("status") or None
        if status is not None and status not in JOB_STATUSES:
            return self.json({"error": "invalid status", "field": "status",
                              "reason": f"must be one of {', '.join(JOB_STATUSES)}, got {status!r}"}, status=400)
        user_id = request.query.get("user_id") or None
        if not principal.operator:
            if user_id is not None and user_id != principal.user_id:
                return self.json({"error": f"user {principal.user_id} may only list their own jobs"}, status=403)
            user_id = principal.user_id
        raw_limit = request.query.get("limit", str(DEFAULT_PAGE))
        limit = int(raw_limit) if raw_limit.isdigit() else 0
        if not 1 <= limit <= MAX_PAGE:
            return self.json({"error": "invalid limit", "field": "limit",
                              "reason": f"must be an integer from 1 to {MAX_PAGE}, got {raw_limit!r}"}, status=400)
        after = ""
        if request.query.get("cursor"):
            try:
                after = decode_page_cursor(cursor=request.query["cursor"], status=status, user_id=user_id)
            except ValueError as exc:
                return self.json({"error": "invalid cursor", "field": "cursor", "reason": str(exc)}, status=400)
        # this worker's partitions of job_state (the store iterates the partitions held as active)
        jobs = page_part(states=job_state.items(), after=after, status=status, user_id=user_id, limit=limit)
        return {"jobs": jobs, "limit": limit, "filters": {"status": status, "user_id": user_id}}
