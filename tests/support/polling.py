"""Bounded polling: the one way tests wait for something to happen.

``wait_until(check, timeout=..., what=...)`` calls ``check()`` every ``interval`` seconds until
``accept(value)`` holds (by default: the value is truthy) and returns that value. After
``timeout`` seconds it raises an AssertionError naming ``what`` and the last value seen (plus
``diagnostics()``, e.g. a worker's log tail), or, with ``fail=False``, returns the last value so
that the test's own assertion reports it. ``check`` is called at least once; the deadline is
looked at after each call. Exceptions of the types in ``ignore``
count as "not yet" (e.g. OSError while a worker restarts); any other exception propagates
(a check may raise to stop waiting early, e.g. when the process it waits for died).

``wait_until_async`` is the same for async tests: ``check`` (and ``diagnostics``) may return
an awaitable; run blocking checks through ``asyncio.to_thread`` inside ``check``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable

__all__ = ["wait_until", "wait_until_async"]

_MAX_REPR = 1500


class _Poll:
    """The bookkeeping shared by the sync and async loops."""

    def __init__(self, *, timeout: float, what: str, accept: Callable[[Any], bool],
                 ignore: tuple[type[BaseException], ...], describe: Callable[[Any], str] | None) -> None:
        self.timeout = timeout
        self.what = what
        self.accept = accept
        self.ignore = ignore
        self.describe = describe
        self.deadline = time.monotonic() + timeout
        self.last: Any = None
        self.error: BaseException | None = None

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def message(self, extra: str) -> str:
        if self.describe is not None:
            last = self.describe(self.last)
        else:
            last = repr(self.last)
            if len(last) > _MAX_REPR:
                last = last[:_MAX_REPR] + f"... ({len(last)} characters)"
        text = f"timed out after {self.timeout:g} s waiting for {self.what}; last value: {last}"
        if self.error is not None:
            text += f"; last error: {self.error!r}"
        return f"{text}\n{extra}" if extra else text


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5,
               accept: Callable[[Any], bool] = bool, fail: bool = True,
               ignore: tuple[type[BaseException], ...] = (), describe: Callable[[Any], str] | None = None,
               diagnostics: Callable[[], str] | None = None) -> Any:
    """Poll ``check()`` until ``accept`` takes its value; that value (see the module docstring)."""
    poll = _Poll(timeout=timeout, what=what, accept=accept, ignore=ignore, describe=describe)
    while True:
        try:
            value = check()
        except ignore as exc:
            poll.error = exc
        else:
            poll.last = value
            if accept(value):
                return value
        if poll.expired():
            break
        time.sleep(interval)
    if not fail:
        return poll.last
    raise AssertionError(poll.message(diagnostics() if diagnostics else ""))


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def wait_until_async(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5,
                           accept: Callable[[Any], bool] = bool, fail: bool = True,
                           ignore: tuple[type[BaseException], ...] = (),
                           describe: Callable[[Any], str] | None = None,
                           diagnostics: Callable[[], Any] | None = None) -> Any:
    """:func:`wait_until` for async tests: ``check`` and ``diagnostics`` may be coroutines."""
    poll = _Poll(timeout=timeout, what=what, accept=accept, ignore=ignore, describe=describe)
    while True:
        try:
            value = await _resolve(check())
        except ignore as exc:
            poll.error = exc
        else:
            poll.last = value
            if accept(value):
                return value
        if poll.expired():
            break
        await asyncio.sleep(interval)
    if not fail:
        return poll.last
    raise AssertionError(poll.message(await _resolve(diagnostics()) if diagnostics else ""))
