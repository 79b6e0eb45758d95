"""``GET /api/events/replay?topic=&start=&end=&job_id=&event_type=&user_id=&limit=&cursor=``.

Streams the decoded events of ``topic`` with ``start <= timestamp < end`` (ISO 8601) as
NDJSON, merged across partitions in timestamp order (see :mod:`app.ops.replay` for the line
types, the trailer and the cursor). Needs a JWT: operators replay any topic and any user's
events; a plain user's replay is restricted to events whose ``user_id`` is theirs (another
``user_id`` → 403).

400 ``{"error", "field", "reason"}`` for a missing or bad ``start``/``end``, ``end`` before
``start``, an unknown ``topic`` or ``event_type``, a bad ``limit`` or a cursor of another
replay; 503 when Kafka cannot be read. When ``start`` lies before the oldest retained
record, the ``X-Replay-Earliest-Available`` header and the trailer line's
``earliest_available`` give its time. An empty window is 200 with only the trailer line.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View

from app.core.auth import Principal
from app.core.timeutil import format_epoch_ms
from app.ops.replay import MAX_LIMIT, ReplayError, ReplayUnavailable, open_replay, parse_query
from app.web.openapi import query_param
from app.web.route import USER, endpoint, page
from app.worker.main import codecs, settings

logger = logging.getLogger(__name__)

EARLIEST_HEADER = "X-Replay-Earliest-Available"
#: Bytes of NDJSON gathered before one write to the client.
CHUNK_BYTES = 64 * 1024


@page("/api/events/replay")
class ReplayView(View):
    @endpoint(
        access=USER, tags=["events"], content_type="application/x-ndjson",
        summary="Replay a topic's events between two timestamps, in timestamp order (NDJSON stream)",
        description=(
            "Lines: {\"type\":\"event\",\"topic\",\"partition\",\"offset\",\"timestamp\",\"event\"}, "
            "{\"type\":\"error\",...,\"reason\"} for an undecodable record, and last either "
            "{\"type\":\"end\",\"events\"} or {\"type\":\"cursor\",\"events\",\"cursor\"} when `limit` events were "
            "sent and more remain (send `cursor` back with the same topic, window and filters). The window is "
            "[start, end). Plain users only get events whose user_id is theirs. When start is before the oldest "
            f"retained record, header {EARLIEST_HEADER} and the trailer's earliest_available give its time."
        ),
        parameters=[
            query_param("topic", "job-lifecycle, job-metrics, audit-trail, notifications or system-health",
                        required=True),
            query_param("start", "ISO 8601 date-time (inclusive)", required=True),
            query_param("end", "ISO 8601 date-time (exclusive), not before start", required=True),
            query_param("job_id", "only this job's events"),
            query_param("event_type", "only this event type (e.g. JobCompleted)"),
            query_param("user_id", "only this user's events (plain users: their own only)"),
            query_param("limit", f"at most this many events (1..{MAX_LIMIT:,}); the trailer carries a cursor",
                        kind="integer"),
            query_param("cursor", "the cursor of a previous trailer line, to resume"),
        ],
        responses={200: "NDJSON stream", 400: '{"error", "field", "reason"}', 403: "another user's events",
                   503: "Kafka could not be read"},
    )
    async def get(self, request: Request, *, principal: Principal) -> Response:
        try:
            query = parse_query(params=request.query, topic_prefix=settings.topic_prefix)
        except ReplayError as exc:
            return self.json(exc.to_dict(), status=400)
        if not principal.operator:
            if query.user_id is not None and query.user_id != principal.user_id:
                return self.json({"error": f"user {principal.user_id} may only replay their own events"},
                                 status=403)
            query = query.restricted_to(principal.user_id)
        replay = open_replay(settings=settings, query=query, codecs=codecs)
        try:
            await replay.open()
        except ReplayError as exc:
            return self.json(exc.to_dict(), status=400)
        except ReplayUnavailable as exc:
            return self.json({"error": "the topic could not be read", "reason": str(exc)}, status=503)
        try:
            headers = {"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"}
            if replay.before_retained:
                headers[EARLIEST_HEADER] = format_epoch_ms(replay.earliest_ms)  # type: ignore[arg-type]
            response = aiohttp_web.StreamResponse(status=200, headers=headers)
            await response.prepare(request)  # type: ignore[arg-type]
            chunk: list[bytes] = []
            size = 0
            try:
                async for line in replay.lines():
                    data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
                    chunk.append(data)
                    size += len(data)
                    if size >= CHUNK_BYTES:
                        await response.write(b"".join(chunk))
                        chunk, size = [], 0
            except ReplayUnavailable as exc:
                # headers are gone already: say so in-band; the missing trailer marks it incomplete
                logger.warning("replay of %s failed: %s", query.topic, exc)
                chunk.append(json.dumps({"type": "error", "reason": f"replay aborted: {exc}"}).encode() + b"\n")
            if chunk:
                await response.write(b"".join(chunk))
            await response.write_eof()
            return response  # type: ignore[return-value]
        finally:
            await replay.close()

