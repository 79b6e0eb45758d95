"""Table inspection over HTTP, for operators only (``cosmic tables|table`` online).

``GET /api/tables`` (names, keys held by this worker), ``GET /api/tables/{name}/keys/{key}``,
``GET /api/tables/{name}?prefix=&limit=`` (NDJSON of ``{"key", "value"}``). Every request
needs an operator JWT; Faust's own ``/table/`` views are off.
"""

from __future__ import annotations

import json
from typing import Any

from faust.web import Request, Response, View

from app.auth import AuthError, require_operator
from app.main import app, settings
from app.table_store import key_text

MAX_DUMP = 100_000


def _operator(view: View, request: Request) -> Response | None:
    try:
        require_operator(headers=request.headers, query=request.query, settings=settings)
    except AuthError as exc:
        return view.json({"error": str(exc)}, status=exc.status)
    return None


def _table(name: str) -> Any:
    return app.tables.get(name)


def _items(table: Any):  # noqa: ANN202
    for key, value in table.items():
        yield key, value


@app.page("/api/tables")
class TablesView(View):
    async def get(self, request: Request) -> Response:
        if (refused := _operator(self, request)) is not None:
            return refused
        return self.json(
            {
                "tables": [
                    {"name": name, "keys": sum(1 for _ in table.keys()), "partitions": table.partitions,
                     "changelog": table.changelog_topic.get_topic_name()}
                    for name, table in sorted(app.tables.items())
                ]
            }
        )


@app.page("/api/tables/{name}")
class TableDumpView(View):
    async def get(self, request: Request, name: str) -> Response:
        if (refused := _operator(self, request)) is not None:
            return refused
        table = _table(name)
        if table is None:
            return self.json({"error": f"unknown table {name!r}"}, status=404)
        prefix = request.query.get("prefix", "")
        try:
            limit = min(int(request.query.get("limit", MAX_DUMP)), MAX_DUMP)
        except ValueError:
            return self.json({"error": "limit must be an integer", "field": "limit"}, status=400)
        lines = []
        for key, value in _items(table):
            if key_text(_plain(key)).startswith(prefix):
                lines.append(json.dumps({"key": _plain(key), "value": value}, default=str))
                if len(lines) >= limit:
                    break
        return self.bytes("\n".join(lines).encode() + (b"\n" if lines else b""), content_type="application/x-ndjson")


@app.page("/api/tables/{name}/keys/{key}")
class TableKeyView(View):
    async def get(self, request: Request, name: str, key: str) -> Response:
        if (refused := _operator(self, request)) is not None:
            return refused
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
