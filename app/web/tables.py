"""Table inspection over HTTP, for operators only (``cosmic tables|table`` online).

``GET /api/tables`` (names, keys held by this worker), ``GET /api/tables/{name}/keys/{key}``,
``GET /api/tables/{name}?prefix=&limit=`` (NDJSON of ``{"key", "value"}``, gathered from every
worker of the group: :mod:`app.web.gather`; a global table is answered locally, every worker
holds it whole). Every request needs an operator JWT; Faust's own ``/table/`` views are off.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from faust.web import Request, Response, View

from app.core.auth import Principal
from app.ops.table_store import key_text
from app.web.gather import MISSING_HEADER, PARTIAL_HEADER, Gather
from app.web.openapi import query_param
from app.web.route import OPERATOR, endpoint, page
from app.worker.main import app

MAX_DUMP = 100_000


def _table(name: str) -> Any:
    return app.tables.get(name)


def _items(table: Any):  # noqa: ANN202
    for key, value in table.items():
        yield key, value


@page("/api/tables")
class TablesView(View):
    @endpoint(access=OPERATOR, tags=["tables"],
              summary="The app's tables: name, keys held here, partitions, changelog")
    async def get(self, request: Request, *, principal: Principal) -> Response:
        return self.json(
            {
                "tables": [
                    {"name": name, "keys": sum(1 for _ in table.keys()), "partitions": table.partitions,
                     "changelog": table.changelog_topic.get_topic_name()}
                    for name, table in sorted(app.tables.items())
                ]
            }
        )


def dump_scope(match: Mapping[str, Any]) -> Any:
    """The table a dump gathers over: None (answered locally) for an unknown table, and for a
    global one, which every worker holds whole."""
    table = _table(match["name"])
    return None if table is None or table.is_global else table


def merge_dumps(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """The parts' lines in order, the first ``limit`` (each part sent its first ``limit``)."""
    return {"lines": sorted(line for part in parts for line in part["lines"])[:parts[0]["limit"]]}


def render_dump(*, web: View, body: dict[str, Any], partial: bool, missing: list[int]) -> Response:
    """NDJSON: the flags of a gathered answer travel as headers."""
    lines = body["lines"]
    return web.bytes("\n".join(lines).encode() + (b"\n" if lines else b""), content_type="application/x-ndjson",
                     headers={PARTIAL_HEADER: "true" if partial else "false",
                              MISSING_HEADER: ",".join(str(p) for p in missing)})


@page("/api/tables/{name}")
class TableDumpView(View):
    @endpoint(access=OPERATOR, ready=True, gather=Gather(scope=dump_scope, merge=merge_dumps, render=render_dump),
              tags=["tables"], summary="Dump a table as NDJSON of {key, value} (gathered from every worker)",
              description="Lines in order (of their JSON text), the first `limit`. A gathered answer's "
                          f"flags are headers: `{PARTIAL_HEADER}` (true/false) and `{MISSING_HEADER}`.",
              content_type="application/x-ndjson",
              parameters=[query_param("prefix", "only keys starting with this"),
                          query_param("limit", "at most this many lines (≤ 100,000)", kind="integer")],
              responses={200: "NDJSON lines", 400: "bad limit", 404: "unknown table"})
    async def get(self, request: Request, *, principal: Principal, name: str,
                  partitions: frozenset[int] | None) -> dict[str, Any] | Response:
        table = _table(name)
        if table is None:
            return self.json({"error": f"unknown table {name!r}"}, status=404)
        prefix = request.query.get("prefix", "")
        try:
            limit = min(int(request.query.get("limit", MAX_DUMP)), MAX_DUMP)
        except ValueError:
            return self.json({"error": "limit must be an integer", "field": "limit"}, status=400)
        # the store iterates the partitions this worker holds as active
        lines = sorted(json.dumps({"key": _plain(key), "value": value}, default=str) for key, value in _items(table)
                       if key_text(_plain(key)).startswith(prefix))
        return {"lines": lines[:max(limit, 0)], "limit": max(limit, 0)}


@page("/api/tables/{name}/keys/{key}")
class TableKeyView(View):
    @endpoint(access=OPERATOR, tags=["tables"], summary="One table value",
              responses={200: '{"key", "value"}', 404: "unknown table or key"})
    async def get(self, request: Request, *, principal: Principal, name: str, key: str) -> Response:
        table = _table(name)
        if table is None:
            return self.json({"error": f"unknown table {name!r}"}, status=404)
        for stored_key, value in _items(table):
            if key_text(_plain(stored_key)) == key:
                return self.json({"key": _plain(stored_key), "value": value})
        return self.json({"error": "key not found", "table": name, "key": key}, status=404)


def _plain(key: Any) -> Any:
    """Windowed keys come back as tuples; show them as JSON lists."""
    if isinstance(key, tuple):
        return [_plain(k) for k in key]
    return key
