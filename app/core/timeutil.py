"""Time helpers, pure (no Faust, no I/O): now, datetimes ↔ epoch milliseconds, and the one
text format of times.

Every time the service writes as text (the JSON API, replay lines, error messages) is
ISO 8601 UTC with milliseconds and ``Z``, e.g. ``2024-05-01T12:00:00.007Z``:
:func:`format_timestamp` formats a datetime, :func:`format_epoch_ms` epoch milliseconds (the
same text; ``tests/unit/test_codec.py`` checks they agree). Event timestamps are
``timestamp-millis``: :func:`utc_now` is truncated to the millisecond, :func:`utc_ms` and
:func:`from_epoch_ms` convert without loss at that precision.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

_ISO_SECONDS = "%Y-%m-%dT%H:%M:%S."
_SECONDS_CACHED = 4096
_second_texts: dict[int, str] = {}


def utc_now() -> datetime:
    """Now, in UTC, truncated to the millisecond (what ``timestamp-millis`` carries)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def now_ms() -> int:
    """Now, in epoch milliseconds (wall clock)."""
    return int(time.time() * 1000)


def utc_ms(moment: datetime) -> int:
    """``moment`` in epoch milliseconds (a naive datetime is local time, as ``datetime.timestamp``)."""
    return int(moment.timestamp() * 1000)


def from_epoch_ms(*, ms: int) -> datetime:
    """Epoch milliseconds → an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def as_utc(*, moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (naive means UTC)."""
    moment = as_utc(moment=moment)
    return moment.strftime(_ISO_SECONDS) + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """The text :func:`format_timestamp` writes → the aware UTC datetime it names."""
    return datetime.fromisoformat(text)


def format_epoch_ms(ms: int) -> str:
    """Epoch milliseconds → ISO 8601 UTC with milliseconds and ``Z`` (as the JSON API writes
    times). Formatted seconds are cached: a replay formats runs of nearby times."""
    second, milli = divmod(ms, 1000)
    text = _second_texts.get(second)
    if text is None:
        if len(_second_texts) >= _SECONDS_CACHED:
            _second_texts.clear()
        text = datetime.fromtimestamp(second, tz=timezone.utc).strftime(_ISO_SECONDS)
        _second_texts[second] = text
    return f"{text}{milli:03d}Z"
