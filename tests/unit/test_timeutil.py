"""app.core.timeutil: the one place of the service's time conversions and its ISO 8601 format."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

from app.core.timeutil import as_utc, format_epoch_ms, format_timestamp, from_epoch_ms, now_ms, utc_ms, utc_now


def test_format_is_iso_utc_with_milliseconds_and_z():
    assert format_epoch_ms(1714564800007) == "2024-05-01T12:00:00.007Z"
    assert format_timestamp(datetime(2024, 5, 1, 12, 0, 0, 7000, tzinfo=timezone.utc)) == "2024-05-01T12:00:00.007Z"
    assert format_timestamp(datetime(2024, 5, 1, 12, 0, 0, 7999)) == "2024-05-01T12:00:00.007Z"  # naive = UTC
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2024, 5, 1, 14, 0, 0, tzinfo=plus_two)) == "2024-05-01T12:00:00.000Z"


def test_epoch_ms_round_trips_and_both_formats_agree():
    rng = random.Random(5)
    for _ in range(2000):
        ms = rng.randrange(0, 4_102_444_800_000)
        moment = from_epoch_ms(ms=ms)
        assert moment.tzinfo is timezone.utc
        # utc_ms keeps its historical int(timestamp() * 1000): the float product can land just
        # below a whole millisecond, so it may read one millisecond early.
        assert ms - 1 <= utc_ms(moment) <= ms
        assert format_timestamp(moment) == format_epoch_ms(ms)


def test_now_helpers():
    before = int(time.time() * 1000)
    now = now_ms()
    assert before <= now <= int(time.time() * 1000)
    moment = utc_now()
    assert moment.tzinfo is not None and moment.microsecond % 1000 == 0
    assert abs(utc_ms(moment) - now) < 60_000


def test_as_utc():
    naive = datetime(2024, 5, 1, 12, 0)
    assert as_utc(moment=naive) == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    other = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(moment=other).tzinfo is timezone.utc and as_utc(moment=other) == other

