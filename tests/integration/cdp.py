"""A tiny Chrome DevTools Protocol client for the browser tests: real headless Chromium
(Debian's ``chromium``) driven over its DevTools websocket with the ``websockets`` library.

Usage::

    async with Chromium.launch(profile_dir=tmp_path / "chromium") as browser:
        page = await browser.open_page()
        await page.navigate("http://127.0.0.1:6066/")
        value = await page.evaluate("document.title")
        png = await page.screenshot()
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect

from support.polling import wait_until, wait_until_async


class CdpError(Exception):
    """Chromium could not start, or a DevTools command failed."""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise CdpError("no chromium binary on PATH: run scripts/bootstrap.sh (apt-get install -y chromium)")


class Page:
    """One page target: commands, and the console messages / exceptions it logged."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    self._on_event(message.get("method", ""), message.get("params", {}))
        except Exception as exc:  # noqa: BLE001 - the connection died: fail every waiting command
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError(f"DevTools connection lost: {exc!r}"))

    def _on_event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"exception: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".rstrip())

    async def send(self, method: str, timeout: float = 60.0, **params: Any) -> dict:
        """Run one DevTools command; its ``result``, or CdpError with the protocol error."""
        command_id = next(self._ids)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self._ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        try:
            message = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(command_id, None)
        if "error" in message:
            raise CdpError(f"{method} failed: {message['error']}")
        return message.get("result", {})

    async def enable(self) -> None:
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")

    async def navigate(self, url: str) -> None:
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigating to {url} failed: {result['errorText']}")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises are awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(f"evaluate failed: {details.get('exception', {}).get('description') or details}")
        return result.get("result", {}).get("value")

    async def wait_for(
        self, expression: str, *, timeout: float, what: str,
        check: Callable[[Any], bool] = bool, diagnostics: Callable[[], Awaitable[str]] | None = None,
    ) -> Any:
        """Poll ``expression`` until ``check(value)``; AssertionError with the last value and
        the page's console after ``timeout`` seconds."""

        async def console() -> str:
            extra = await diagnostics() if diagnostics else ""
            return "page console:\n" + ("\n".join(self.console[-30:]) or "(nothing logged)") + f"\n{extra}"

        return await wait_until_async(lambda: self.evaluate(expression), timeout=timeout, interval=0.25, what=what,
                                      accept=check, diagnostics=console)

    async def screenshot(self) -> bytes:
        result = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()


class Chromium:
    """A headless Chromium process with an isolated profile; killed on exit."""

    def __init__(self, *, profile_dir: Path, window: tuple[int, int] = (1400, 1100)) -> None:
        self.profile_dir = profile_dir
        self.window = window
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._pages: list[Page] = []

    @classmethod
    def launch(cls, *, profile_dir: Path) -> "Chromium":
        return cls(profile_dir=profile_dir)

    async def __aenter__(self) -> "Chromium":
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for page in self._pages:
            try:
                # leave the page first: its websockets close cleanly instead of being cut off
                await page.send("Page.navigate", timeout=10, url="about:blank")
            except Exception:  # noqa: BLE001 - best effort
                pass
            try:
                await page.close()
            except Exception:  # noqa: BLE001 - the browser is killed next anyway
                pass
        self.stop()

    def start(self, *, timeout: float = 60.0) -> None:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.profile_dir.parent / "chromium.log", "ab")
        try:
            self.proc = subprocess.Popen(
                [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--remote-debugging-port=0", f"--user-data-dir={self.profile_dir}",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--mute-audio", f"--window-size={self.window[0]},{self.window[1]}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        port_file = self.profile_dir / "DevToolsActivePort"

        def port() -> int:
            if self.proc.poll() is not None:
                raise CdpError(f"chromium exited with {self.proc.returncode}:\n{self.log_tail()}")
            return int(port_file.read_text().splitlines()[0])

        found = wait_until(port, timeout=timeout, interval=0.1, what="the DevTools port", fail=False,
                           ignore=(FileNotFoundError, IndexError, ValueError))
        if found:
            self.port = found
            return
        self.stop()
        raise CdpError(f"chromium did not open its DevTools port in {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.profile_dir.parent / "chromium.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _targets(self) -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as response:
            return json.loads(response.read())

    async def open_page(self) -> Page:
        """The browser's first page tab, connected and with Page/Runtime/Log events enabled."""

        async def page_targets() -> list[dict]:
            return [t for t in await asyncio.to_thread(self._targets) if t.get("type") == "page"]

        pages = await wait_until_async(page_targets, timeout=30, interval=0.2, what="a page target", fail=False)
        if not pages:
            raise CdpError("chromium has no page target")
        ws = await connect(pages[0]["webSocketDebuggerUrl"], max_size=None, ping_interval=None)
        page = Page(ws)
        self._pages.append(page)
        await page.enable()
        return page

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # its own session (start_new_session): the group holds the renderer/zygote children too
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
