"""The dashboard page and its assets, served by the real views of app/web/dashboard.py over
HTTP (aiohttp on 127.0.0.1): public, no data, proper content types, no caching."""

from __future__ import annotations

import re

import aiohttp
import pytest
from aiohttp import web

from app.web.dashboard import STATIC_DIR


@pytest.fixture
async def base_url():
    from app.worker.main import app as faust_app
    from app.web.dashboard import dashboard_asset, dashboard_page

    # The view classes themselves (not ``web.views["/"]``: in a test session that mounted
    # Faust's own blueprints first, that path may hold Faust's index page).
    server = web.Application()
    for path, view_class in (("/", dashboard_page), ("/static/{name}", dashboard_asset)):
        view = view_class(faust_app, faust_app.web)

        async def handler(request: web.Request, view=view) -> web.StreamResponse:  # noqa: ANN001
            return await view(request)

        server.router.add_get(path, handler)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


async def test_the_page_and_its_assets_are_served_without_a_token(base_url):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
            page = await response.text()
        assert page == (STATIC_DIR / "dashboard.html").read_text()
        # everything it loads comes from this server: no CDN, nothing to build
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sorted(assets) == ["/static/dashboard.css", "/static/dashboard.js"]
        assert "http://" not in page and "https://" not in page
        for path, content_type in (("/static/dashboard.js", "text/javascript; charset=utf-8"),
                                   ("/static/dashboard.css", "text/css; charset=utf-8")):
            async with http.get(f"{base_url}{path}") as response:
                assert response.status == 200, path
                assert response.headers["Content-Type"] == content_type
                assert response.headers["Cache-Control"] == "no-cache"
                body = await response.text()
            assert body == (STATIC_DIR / path.rsplit("/", 1)[1]).read_text()
            assert "http://" not in body and "https://" not in body, f"{path} loads something from elsewhere"


async def test_the_page_holds_no_data_and_reads_the_token_from_the_fragment_only(base_url):
    script = (STATIC_DIR / "dashboard.js").read_text()
    # the token comes from the URL fragment (never sent to the server) or the form, goes to
    # sessionStorage, the websocket's first frame and the Authorization header — never a query string
    assert "location.hash" in script and "sessionStorage" in script
    assert '{ type: "auth", token: state.token }' in script
    assert '"Authorization": "Bearer " + state.token' in script
    assert "location.search" not in script.replace("window.location.pathname + window.location.search", "")
    assert "?token=" not in script and "access_token" not in script
    assert ".innerHTML" not in script, "data must go into the DOM as text only"
    async with aiohttp.ClientSession() as http:
        # a token in the query string is neither needed nor used: the same public page
        async with http.get(f"{base_url}/?token=abc") as response:
            assert response.status == 200
            assert "abc" not in await response.text()
        async with http.get(f"{base_url}/") as response:
            page = await response.text()
    assert "job_id" not in page and "user_id" not in page


@pytest.mark.parametrize("name", ["missing.js", "dashboard.html", ".hidden.js", "..%2Fdashboard.py",
                                  "dashboard.py", "x.png"])
async def test_only_existing_js_and_css_assets_are_served(base_url, name):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/static/{name}") as response:
            assert response.status == 404, name
            assert (await response.json())["error"] == "not found"
