"""The live operations dashboard: ``GET /`` (the page) and ``GET /static/{name}`` (its script
and stylesheet), plain files from ``app/web/static/`` — nothing to build, no CDN.

The page is public and holds no data: it reads the operator JWT from the URL fragment
(``/#token=...``, which never reaches the server) or a small form, then talks to the API with
``Authorization: Bearer`` and to the websocket feed ``/ws`` (auth frame first), see
docs/dashboard.md. Every answer is ``Cache-Control: no-cache`` and carries a strict
Content-Security-Policy (scripts, styles and connections only from this origin).
"""

from __future__ import annotations

import re
from pathlib import Path

from faust.web import Request, Response, View

from app.web.route import endpoint, page, public

STATIC_DIR = Path(__file__).with_name("static")
PAGE = "dashboard.html"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
}
#: Asset names that may be served: no paths, no hidden files, only the known types.
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-]+\.(js|css)")

SECURITY_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def _read(name: str) -> str | None:
    """The text of static file ``name``, or None when there is no such file."""
    try:
        return (STATIC_DIR / name).read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _file_response(web: View, *, name: str) -> Response:
    text = _read(name)
    if text is None:
        return web.json({"error": "not found", "path": f"/static/{name}"}, status=404,
                        headers={"Cache-Control": "no-cache"})
    return web.text(text, content_type=CONTENT_TYPES[Path(name).suffix], headers=dict(SECURITY_HEADERS))


@page("/", name="dashboard_page")
@endpoint(access=public(reason="the dashboard page: static HTML without data (the operator JWT stays in the URL "
                               "fragment)"),
          tags=["dashboard"], summary="The live operations dashboard page (public; holds no data)",
          content_type="text/html")
async def dashboard_page(web: View, request: Request) -> Response:
    """The dashboard page itself (public: it contains no data)."""
    return _file_response(web, name=PAGE)


@page("/static/{name}", name="dashboard_asset")
@endpoint(access=public(reason="the dashboard's script and stylesheet: static files"), tags=["dashboard"],
          summary="The dashboard's script and stylesheet", content_type="text/plain",
          responses={200: "the file", 404: "no such asset"})
async def dashboard_asset(web: View, request: Request, name: str) -> Response:
    """``dashboard.js`` / ``dashboard.css`` (and any other .js/.css file of app/web/static/)."""
    if not _ASSET_NAME.fullmatch(name):
        return web.json({"error": "not found", "path": f"/static/{name}"}, status=404,
                        headers={"Cache-Control": "no-cache"})
    return _file_response(web, name=name)
