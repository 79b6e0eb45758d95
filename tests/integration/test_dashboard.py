"""The live dashboard in real headless Chromium (Debian's ``chromium``, driven over the Chrome
DevTools Protocol by tests/integration/cdp.py).

1. Against a real worker: open ``/#token=<operator jwt>``, publish job lifecycles (one failure),
   GPU metrics samples and a system alert to Kafka, and watch them appear — rows with the
   status colours, the failure in "recent failures", the counts, the GPU heatmap, the alert.
   A screenshot is saved under the test's tmp_path (the path is printed).
2. The page's side of the websocket contract (docs/websocket.md) against an in-process /ws
   speaking it, where the test controls the connection: auth frame first, subscriptions, a
   dropped connection → "reconnecting" → resubscription with the last position per partition
   (``resume``) → the missed events shown; the API endpoints answering 404 → panels say
   "unavailable" while the live feed still works; close code 4001 → back to the token form.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from app.core.auth import mint_token
from app.core.models import JobMetricsSample, SystemAlert
from app.core.settings import Settings
from app.core.timeutil import utc_now
from app.core.validation import event_to_json
from app.ops.demo import lifecycle_events
from app.worker.publisher import EventPublisher

from cdp import Chromium, Page
from support.polling import wait_until_async

#: getComputedStyle colours of the status classes (app/web/static/dashboard.css)
COLOURS = {
    "QUEUED": "rgb(245, 197, 24)",
    "RUNNING": "rgb(30, 136, 229)",
    "COMPLETED": "rgb(46, 157, 79)",
    "FAILED": "rgb(217, 48, 37)",
}

ROWS_JS = """(() => {
  const out = {};
  for (const row of document.querySelectorAll('#jobs tr.job-row')) {
    const badge = row.querySelector('.status');
    out[row.dataset.jobId] = {status: badge.textContent, cls: badge.className,
                              bg: getComputedStyle(badge).backgroundColor};
  }
  return out;
})()"""
COUNTS_JS = """Object.fromEntries([...document.querySelectorAll('#counts .count')].map(
  t => [t.dataset.status, Number(t.querySelector('.n').textContent)]))"""
FAILURES_JS = "[...document.querySelectorAll('#failures li.failure')].map(li => li.textContent)"
STATE_JS = "document.querySelector('#connection')?.dataset.state"
#: the page as loaded: its title, or what was served instead (e.g. a JSON answer)
LOADED_JS = "document.readyState === 'complete' && (document.title || document.body?.innerText?.slice(0, 300))"


def _rows_match(expected: dict[str, str]):  # noqa: ANN202
    def check(rows: Any) -> bool:
        return bool(rows) and all(
            job in rows and rows[job]["status"] == status and f"status-{status}" in rows[job]["cls"]
            and rows[job]["bg"] == COLOURS[status]
            for job, status in expected.items()
        )

    return check


async def _console_is_clean(page: Page) -> None:
    """No script exception and no Content-Security-Policy violation was logged."""
    bad = [line for line in page.console if line.startswith("exception:") or "Content Security Policy" in line]
    assert not bad, "\n".join(bad)


async def test_dashboard_shows_live_jobs_failures_counts_heatmap_and_alerts(worker_factory, worker_env, uid,
                                                                              tmp_path: Path):
    worker = worker_factory()
    await asyncio.to_thread(worker.start)
    settings = Settings.from_env(environ=worker_env)
    token = mint_token(settings=settings, sub=f"ops-{uid}", role=settings.jwt_operator_role)

    async def worker_log() -> str:
        return f"worker log:\n{worker.log_tail(40)}"

    async with Chromium.launch(profile_dir=tmp_path / "chromium") as browser:
        page = await browser.open_page()
        await page.navigate(f"{worker.base_url}/#token={token}")
        title = await page.wait_for(LOADED_JS, timeout=60, what="the page loaded")
        assert title == "Cosmic Horizons — live dashboard", f"GET / served something else: {title!r}"
        await page.wait_for(STATE_JS, check=lambda s: s == "connected", timeout=90,
                            what="the dashboard connected to /ws", diagnostics=worker_log)
        await page.wait_for("cosmicDashboard.subscribed()", check=lambda c: c == ["jobs:all", "system:alerts"],
                            timeout=60, what="both channels subscribed", diagnostics=worker_log)
        # the token left the address bar (kept in sessionStorage only)
        assert "token" not in await page.evaluate("location.href")
        assert await page.evaluate("sessionStorage.getItem('cosmic.dashboard.token')") == token

        rng = random.Random(5)
        user = f"ann-{uid}"
        jobs = {f"dash-{uid}-{name}": name for name in ("done", "failed", "running", "queued")}
        ids = {name: job_id for job_id, name in jobs.items()}
        events = (
            lifecycle_events(job_id=ids["done"], user_id=user, rng=rng, outcome="COMPLETED")
            + lifecycle_events(job_id=ids["failed"], user_id=user, rng=rng, outcome="FAILED")
            + lifecycle_events(job_id=ids["running"], user_id=user, rng=rng, outcome="COMPLETED")[:3]
            + lifecycle_events(job_id=ids["queued"], user_id=user, rng=rng, outcome="COMPLETED")[:2]
        )
        nodes = {f"gpu-{uid[:6]}-a": (12.0, 87.0), f"gpu-{uid[:6]}-b": (50.0, 99.0)}
        samples = [
            JobMetricsSample(
                event_id=str(uuid.uuid4()), event_type="JobMetricsSample", timestamp=utc_now(),
                correlation_id=str(uuid.uuid4()), user_id=user, schema_version=1, job_id=ids["running"],
                node=node, cpu_pct=40.0, gpu_pct=pct, memory_gb=32.0, io_mb_s=10.0, execution_time_s=60.0,
                gpu_id=gpu_id,
            )
            for node, pcts in nodes.items() for gpu_id, pct in enumerate(pcts)
        ]
        alert_id = str(uuid.uuid4())
        alert = SystemAlert(
            event_id=str(uuid.uuid4()), event_type="SystemAlert", timestamp=utc_now(),
            correlation_id=str(uuid.uuid4()), user_id=None, schema_version=1, alert_id=alert_id,
            component=f"dash-{uid}", rule="gpu_saturated", severity="CRITICAL", state="FIRING",
            message=f"GPU saturated on gpu-{uid[:6]}-b", metrics={"gpu_pct": 99.0}, job_id=ids["running"],
        )
        publisher = EventPublisher(settings=settings)
        await publisher.start()
        try:
            await publisher.publish_many(events)
            await publisher.publish_many(samples)
            await _check_jobs_failures_counts_heatmap(page=page, ids=ids, nodes=nodes, diagnostics=worker_log)
            # the lifecycle events also came through the feed (not only the polled job list)
            await page.wait_for("Object.keys(cosmicDashboard.positions()['jobs:all'] || {}).length", timeout=30,
                                what="positions of jobs:all events", diagnostics=worker_log)
            # the feed is live by now: an alert must arrive through system:alerts
            await publisher.publish(alert)
        finally:
            await publisher.stop()
        alert_js = f"""(() => {{ const li = document.querySelector('#alerts li[data-alert-id="{alert_id}"]');
          return li ? li.className + ' | ' + li.textContent : null; }})()"""
        shown = await page.wait_for(alert_js, timeout=60, what="the system alert", diagnostics=worker_log)
        assert "severity-CRITICAL" in shown and "GPU saturated" in shown, shown
        assert await page.evaluate(STATE_JS) == "connected"
        await _console_is_clean(page)

        screenshot = tmp_path / "dashboard.png"
        screenshot.write_bytes(await page.screenshot())
        print(f"dashboard screenshot: {screenshot}")
        assert screenshot.stat().st_size > 10_000


async def _check_jobs_failures_counts_heatmap(*, page: Page, ids: dict[str, str], nodes: dict[str, tuple],
                                              diagnostics) -> None:  # noqa: ANN001
    # live job rows with the status classes and colours
    await page.wait_for(ROWS_JS, timeout=90, what="the four job rows with their status colours",
                        check=_rows_match({ids["done"]: "COMPLETED", ids["failed"]: "FAILED",
                                           ids["running"]: "RUNNING", ids["queued"]: "QUEUED"}),
                        diagnostics=diagnostics)
    # the failure, with its error code and message
    failures = await page.wait_for(FAILURES_JS, timeout=30, what="the failure in recent failures",
                                   check=lambda items: any(ids["failed"] in i for i in items or []))
    assert any("OOM" in i and "node ran out of memory" in i for i in failures), failures
    # counts by status (the worker's topics are this test's own: exact numbers)
    expected_counts = {"SUBMITTED": 0, "QUEUED": 1, "RUNNING": 1, "COMPLETED": 1, "FAILED": 1, "CANCELLED": 0}
    await page.wait_for(COUNTS_JS, timeout=60, what=f"counts {expected_counts}",
                        check=lambda c: c == expected_counts, diagnostics=diagnostics)
    tile = await page.evaluate(
        "getComputedStyle(document.querySelector('#counts .count[data-status=\"FAILED\"]')).backgroundColor")
    assert tile == COLOURS["FAILED"]
    # the GPU heatmap: node rows x gpu columns with the sampled percentages
    heat_js = """Object.fromEntries([...document.querySelectorAll('#heatmap tr[data-node]')].map(tr =>
      [tr.dataset.node, Object.fromEntries([...tr.querySelectorAll('td[data-gpu]')].map(
        td => [td.dataset.gpu, Number(td.dataset.pct)]))]))"""
    wanted = {node: {str(i): pct for i, pct in enumerate(pcts)} for node, pcts in nodes.items()}
    await page.wait_for(heat_js, timeout=60, what=f"heatmap cells {wanted}",
                        check=lambda h: all(h.get(n) == cells for n, cells in wanted.items()),
                        diagnostics=diagnostics)


# ------------------------------------------------------------------------------------------
# The page's side of the websocket contract, against an in-process /ws the test controls.


class ContractHub:
    """/ws per docs/websocket.md for one token, plus the real dashboard views; /api/* → 404
    but for the paths of ``answers`` (path → JSON body; the query string is recorded)."""

    topic = "job-lifecycle"

    def __init__(self, *, token: str, answers: dict[str, Any] | None = None) -> None:
        self.token = token
        self.answers = answers or {}
        self.queries: dict[str, list[str]] = {}
        self.accepting = True
        self.connections: list[dict] = []  # {"ws", "frames", "channels"}
        self.log: dict[str, list[dict]] = {}  # channel -> event frames, in order
        self.offsets: dict[int, int] = {}

    def application(self) -> web.Application:
        from app.worker.main import app as faust_app
        import app.web.dashboard  # noqa: F401 - registers the views

        views = faust_app.web.views
        server = web.Application()
        server.router.add_get("/ws", self.websocket)
        page, asset = views["/"], views["/static/{name}"]

        async def serve_page(request: web.Request) -> web.StreamResponse:
            return await page(request)

        async def serve_asset(request: web.Request) -> web.StreamResponse:
            return await asset(request)

        async def serve_answer(request: web.Request) -> web.StreamResponse:
            self.queries.setdefault(request.path, []).append(request.query_string)
            return web.json_response(self.answers[request.path])

        server.router.add_get("/", serve_page)
        server.router.add_get("/static/{name}", serve_asset)
        for path in self.answers:
            server.router.add_get(path, serve_answer)
        return server

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.json_response({"error": "restarting"}, status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = {"ws": ws, "frames": [], "channels": set()}
        self.connections.append(connection)
        first = await ws.receive()
        frame = json.loads(first.data) if first.type == WSMsgType.TEXT else {}
        connection["frames"].append(frame)
        if frame != {"type": "auth", "token": self.token}:
            await ws.close(code=4001, message=b"authentication failed")
            return ws
        await ws.send_json({"type": "welcome", "user_id": "ops", "operator": True})
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            connection["frames"].append(frame)
            if frame.get("type") == "subscribe":
                channel = frame["channel"]
                await ws.send_json({"type": "subscribed", "channel": channel})
                if "resume" in frame:
                    seen = {p["partition"]: p["offset"] for p in frame["resume"]}
                    missed = [f for f in self.log.get(channel, [])
                              if f["position"]["offset"] > seen.get(f["position"]["partition"], -1)]
                    for f in missed:
                        await ws.send_json(f)
                    await ws.send_json({"type": "recovered", "channel": channel, "count": len(missed)})
                connection["channels"].add(channel)
            elif frame.get("type") == "ping":
                await ws.send_json({"type": "pong", "id": frame.get("id")})
        return ws

    async def publish(self, *, channel: str, partition: int, event: dict) -> None:
        offset = self.offsets.get(partition, -1) + 1
        self.offsets[partition] = offset
        frame = {"type": "event", "channel": channel,
                 "position": {"topic": self.topic, "partition": partition, "offset": offset},
                 "timestamp": event["timestamp"], "event": event}
        self.log.setdefault(channel, []).append(frame)
        for connection in self.connections:
            if channel in connection["channels"] and not connection["ws"].closed:
                await connection["ws"].send_json(frame)

    def subscribes(self, index: int) -> dict[str, dict]:
        return {f["channel"]: f for f in self.connections[index]["frames"] if f.get("type") == "subscribe"}


async def test_dashboard_resumes_after_a_dropped_connection_and_survives_missing_endpoints(tmp_path: Path):
    token = f"header.payload-{uuid.uuid4().hex}.signature"
    hub = ContractHub(token=token)
    runner = web.AppRunner(hub.application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    rng = random.Random(3)
    a = [event_to_json(e) for e in lifecycle_events(job_id="job-a", user_id="ann", rng=rng, outcome="COMPLETED")]
    b = [event_to_json(e) for e in lifecycle_events(job_id="job-b", user_id="bob", rng=rng, outcome="COMPLETED")]
    c = [event_to_json(e) for e in lifecycle_events(job_id="job-c", user_id="cyd", rng=rng, outcome="FAILED")]
    try:
        async with Chromium.launch(profile_dir=tmp_path / "chromium") as browser:
            page = await browser.open_page()
            await page.navigate(f"{base}/#token={token}")
            assert await page.wait_for(LOADED_JS, timeout=60, what="loaded") == "Cosmic Horizons — live dashboard"
            await page.wait_for(STATE_JS, check=lambda s: s == "connected", timeout=60, what="connected")
            await page.wait_for("document.querySelectorAll('#counts-source.unavailable').length", timeout=30,
                                what="counts marked unavailable")
            # auth frame first, then both channels, nothing to resume yet
            assert hub.connections[0]["frames"][0] == {"type": "auth", "token": token}
            await page.wait_for("1", check=lambda _: len(hub.subscribes(0)) == 2, timeout=30, what="2 subscribes")
            assert hub.subscribes(0) == {"jobs:all": {"type": "subscribe", "channel": "jobs:all"},
                                         "system:alerts": {"type": "subscribe", "channel": "system:alerts"}}

            for event in a[:2]:  # job-a: submitted, queued on partition 0 (offsets 0, 1)
                await hub.publish(channel="jobs:all", partition=0, event=event)
            for event in b[:3]:  # job-b: up to running on partition 1 (offsets 0..2)
                await hub.publish(channel="jobs:all", partition=1, event=event)
            await page.wait_for(ROWS_JS, timeout=30, what="job-a queued, job-b running",
                                check=_rows_match({"job-a": "QUEUED", "job-b": "RUNNING"}))
            # /api/stats, /api/jobs, /api/metrics/gpus answer 404 here: "unavailable", counts from the feed
            sources = await page.evaluate(
                "[...document.querySelectorAll('.source.unavailable')].map(s => s.id + ': ' + s.textContent)")
            assert {s.split(":")[0] for s in sources} >= {"counts-source", "jobs-source", "heatmap-source"}, sources
            assert all("unavailable (404)" in s for s in sources), sources
            counts = await page.evaluate(COUNTS_JS)
            assert counts["QUEUED"] == 1 and counts["RUNNING"] == 1, counts

            # the connection drops; while the server refuses, events happen
            hub.accepting = False
            await hub.connections[0]["ws"].close(code=1011, message=b"gone")
            await page.wait_for(STATE_JS, check=lambda s: s == "reconnecting", timeout=30, what="reconnecting")
            for event in a[2:]:  # job-a runs and completes: partition 0 offsets 2, 3
                await hub.publish(channel="jobs:all", partition=0, event=event)
            for event in c:  # job-c fails: partition 2 (never seen before the drop)
                await hub.publish(channel="jobs:all", partition=2, event=event)
            hub.accepting = True

            # reconnects by itself, resumes from the last position seen per partition
            await page.wait_for(STATE_JS, check=lambda s: s == "connected" and len(hub.connections) >= 2,
                                timeout=60, what="reconnected")
            await page.wait_for("1", check=lambda _: "jobs:all" in hub.subscribes(-1), timeout=30,
                                what="resubscribed")
            resume = sorted(hub.subscribes(-1)["jobs:all"]["resume"], key=lambda p: p["partition"])
            assert resume == [{"topic": "job-lifecycle", "partition": 0, "offset": 1},
                              {"topic": "job-lifecycle", "partition": 1, "offset": 2}]
            assert "resume" not in hub.subscribes(-1)["system:alerts"]
            await page.wait_for(ROWS_JS, timeout=30, what="the missed events applied",
                                check=_rows_match({"job-a": "COMPLETED", "job-b": "RUNNING", "job-c": "FAILED"}))
            await page.wait_for(FAILURES_JS, timeout=30, what="job-c in recent failures",
                                check=lambda items: any("job-c" in i and "OOM" in i for i in items or []))
            counts = await page.evaluate(COUNTS_JS)
            assert (counts["COMPLETED"], counts["RUNNING"], counts["FAILED"]) == (1, 1, 1), counts
            await _console_is_clean(page)
            (tmp_path / "dashboard-resumed.png").write_bytes(await page.screenshot())
            print(f"dashboard screenshot: {tmp_path / 'dashboard-resumed.png'}")

            # a refused token (close 4001): back to the token form, the token forgotten
            await hub.connections[-1]["ws"].close(code=4001, message=b"token expired")
            await page.wait_for(STATE_JS, check=lambda s: s == "unauthorised", timeout=30, what="unauthorised")
            assert await page.evaluate("document.querySelector('#token-panel').hidden") is False
            assert await page.evaluate("sessionStorage.getItem('cosmic.dashboard.token')") is None
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------------
# The main job's own demo fills every panel.

PANELS_JS = """(() => ({
  heat_cells: document.querySelectorAll('#heatmap td[data-gpu]').length,
  job_rows: document.querySelectorAll('#jobs tr.job-row').length,
  counted: [...document.querySelectorAll('#counts .count .n')].reduce((n, t) => n + Number(t.textContent), 0),
  alert_rules: [...document.querySelectorAll('#alerts li[data-alert-id] .meta')].map(m => m.textContent),
  failures: document.querySelectorAll('#failures li.failure').length,
}))()"""


def _panels_filled(panels: dict | None) -> bool:
    if not panels:
        return False
    rules = " ".join(panels["alert_rules"])
    return (panels["heat_cells"] > 0 and panels["job_rows"] > 0 and panels["counted"] > 0
            and panels["failures"] > 0 and "runtime_anomaly" in rules and "dlq_growth" in rules)


async def test_the_main_jobs_own_demo_fills_every_panel_within_a_minute_or_two(worker_env, tmp_path: Path):
    """`cosmic run` as ./scripts/run.sh runs it; its printed dashboard address in real Chromium:
    the GPU heatmap has cells, the jobs table rows, the counts numbers, recent failures a
    failure, and the alerts show a runtime anomaly and the dead-letter alert — all from the
    demo of the run itself."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from app.core.settings import PROJECT_ROOT

    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.ops.cli", "run"], env=worker_env, cwd=PROJECT_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def run_log() -> str:
        return "cosmic run output:\n" + log.read_text(errors="replace")[-4000:]

    try:

        async def printed() -> re.Match | None:
            found = re.search(r"live dashboard\s+(http://\S+#token=\S+)", log.read_text(errors="replace"))
            assert found or proc.poll() is None, await run_log()
            return found

        found = await wait_until_async(printed, timeout=240, what="the live dashboard URL", diagnostics=run_log)
        async with Chromium.launch(profile_dir=tmp_path / "chromium") as browser:
            page = await browser.open_page()
            await page.navigate(found.group(1))
            await page.wait_for(STATE_JS, check=lambda s: s == "connected", timeout=90,
                                what="the dashboard connected to /ws", diagnostics=run_log)
            panels = await page.wait_for(PANELS_JS, check=_panels_filled, timeout=150,
                                         what="heatmap cells, job rows, counts, a failure and both demo alerts",
                                         diagnostics=run_log)
            assert panels["heat_cells"] >= 4, panels
            screenshot = tmp_path / "demo-dashboard.png"
            screenshot.write_bytes(await page.screenshot())
            print(f"dashboard screenshot: {screenshot}")
            await _console_is_clean(page)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


async def test_the_dashboard_asks_for_gathered_answers_and_says_when_one_was_partial(tmp_path: Path):
    token = f"header.payload-{uuid.uuid4().hex}.signature"
    counts = {status: 1 for status in ("SUBMITTED", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")}
    hub = ContractHub(token=token, answers={
        "/api/stats": {"jobs": {"by_status": counts, "total": 6}, "dlq": {}, "dlq_total": 0,
                       "partial": True, "missing_partitions": [3, 7]},
        "/api/jobs": {"jobs": [], "count": 0, "next_cursor": None, "partial": False, "missing_partitions": []},
        "/api/metrics/gpus": {"gpus": [], "partitions": [], "partial": True, "missing_partitions": [12]},
    })
    runner = web.AppRunner(hub.application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        async with Chromium.launch(profile_dir=tmp_path / "chromium") as browser:
            page = await browser.open_page()
            await page.navigate(f"{base}/#token={token}")
            await page.wait_for(STATE_JS, check=lambda s: s == "connected", timeout=60, what="connected")
            notes = await page.wait_for(
                "[...document.querySelectorAll('.source.unavailable')].map(s => s.id + ': ' + s.textContent)",
                check=lambda found: len(found or []) == 2, timeout=30, what="two panels flagged partial")
            assert sorted(notes) == ["counts-source: — partial: partitions 3, 7 did not answer",
                                     "heatmap-source: — partial: partitions 12 did not answer"], notes
            assert await page.evaluate("document.querySelector('#jobs-source').textContent") == ""
            shown = await page.evaluate(COUNTS_JS)
            assert all(shown[status] == 1 for status in counts), shown  # the figures that did answer
            assert {q for qs in hub.queries.values() for q in qs} == {"allow_partial=true"}
    finally:
        await runner.cleanup()
