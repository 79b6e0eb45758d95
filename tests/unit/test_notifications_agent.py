"""Notification delivery without a broker: Faust's agent test context on the memory store,
a real aiohttp webhook receiver and a real SMTP sink (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import uuid
from email import message_from_bytes

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

import agents.notifications as notifications
import app.streams as streams
from agents.notifications import (
    PREFERENCE_UPDATES,
    apply_notification_preferences,
    deliver_notifications,
)
from app.delivery import SmtpTarget, send_email, send_webhook
from app.errors import DeliveryFailed, DeliveryRejected, InvalidPreferences
from app.main import app, codecs
from app.models import NotificationRead, NotificationSent, utc_now
from tables.notification_deliveries import notification_status
from tables.notification_preferences import notification_preferences, parse_preferences, preferences_of


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def memory_app(memory_registry, captured, monkeypatch):
    assert app.conf.store.scheme == "memory"
    app.finalize()
    app.flow_control.resume()
    # Three attempts, no real backoff sleeps, a short webhook timeout.
    monkeypatch.setattr(streams, "settings", dataclasses.replace(streams.settings, max_attempts=3))
    monkeypatch.setattr(streams, "backoff_delay", lambda attempt: 0.01)
    monkeypatch.setattr(notifications, "settings",
                        dataclasses.replace(notifications.settings, webhook_timeout_seconds=1.0, smtp_url=""))
    return captured


class Receiver:
    """A webhook receiver answering the statuses of ``plan`` in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.plan: list[int | str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"headers": dict(request.headers), "body": await request.json()})
        answer = self.plan.pop(0) if self.plan else 200
        if answer == "slow":
            await asyncio.sleep(3)
            answer = 200
        return web.Response(status=int(answer), text=f"answer {answer}")


@pytest.fixture
async def receiver():
    hook = Receiver()
    server = web.Application()
    server.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    await runner.cleanup()


class Sink:
    """aiosmtpd handler keeping every message; refuses recipients at refused.example."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, N802
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_sink():
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield sink, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


# -- helpers -----------------------------------------------------------------------------------
def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def _sent(user_id: str, *, nid: str | None = None, severity: str = "INFO") -> NotificationSent:
    nid = nid or str(uuid.uuid4())
    return NotificationSent(
        event_id=nid, event_type="NotificationSent", timestamp=utc_now(), correlation_id=nid, user_id=user_id,
        schema_version=1, notification_id=nid, channel="WEBSOCKET", severity=severity,
        title="Job job-1 completed", body="Job job-1 completed", job_id="job-1",
    )


def _read(sent: NotificationSent) -> NotificationRead:
    return NotificationRead(
        event_id=str(uuid.uuid4()), event_type="NotificationRead", timestamp=utc_now(),
        correlation_id=sent.correlation_id, user_id=sent.user_id, schema_version=1,
        notification_id=sent.notification_id, channel="WEBSOCKET", severity=sent.severity,
        title=sent.title, body=sent.body, job_id=sent.job_id,
    )


async def _put_event(agent, event) -> None:  # noqa: ANN001
    """Like the broker would: key user_id, the Kafka timestamp is the event's own."""
    value = codecs.for_topic("notifications").encode(event)
    await agent.put(value, key=event.user_id.encode(), timestamp=event.timestamp.timestamp())


async def _set_preferences(prefs_agent, user_id: str, body: dict | None) -> None:  # noqa: ANN001
    value = None if body is None else json.dumps(body).encode()
    await prefs_agent.put(value, key=user_id.encode())


def _deliveries(user_id: str) -> dict[str, dict]:
    entries = notification_status[user_id]["notifications"]
    return {e["notification_id"]: e["deliveries"] for e in entries}


# -- preferences -------------------------------------------------------------------------------
def test_preference_validation_names_the_field():
    ok = parse_preferences({"channels": ["WEBHOOK", "WEBSOCKET", "WEBHOOK"], "webhook_url": "https://x.example/h"})
    assert ok == {"channels": ["WEBHOOK", "WEBSOCKET"], "webhook_url": "https://x.example/h", "email": None}
    assert parse_preferences({"channels": []})["channels"] == []
    cases = [
        ({"channels": ["SMS"]}, "channels"),
        ({"channels": "WEBSOCKET"}, "channels"),
        ({}, "channels"),
        ({"channels": ["WEBHOOK"]}, "webhook_url"),
        ({"channels": ["WEBHOOK"], "webhook_url": "ftp://x.example/h"}, "webhook_url"),
        ({"channels": ["WEBHOOK"], "webhook_url": "http:///nohost"}, "webhook_url"),
        ({"channels": ["WEBHOOK"], "webhook_url": "http://x.example:99999/"}, "webhook_url"),
        ({"channels": ["EMAIL"]}, "email"),
        ({"channels": ["EMAIL"], "email": "not-an-address"}, "email"),
        ({"channels": ["EMAIL"], "email": "a@b.example\r\nBcc: x@y.example"}, "email"),
        ({"channels": ["WEBSOCKET"], "email": 42}, "email"),
        ({"channels": ["WEBSOCKET"], "sms": "+1"}, "sms"),
        (["WEBSOCKET"], ""),
    ]
    for body, field in cases:
        with pytest.raises(InvalidPreferences) as info:
            parse_preferences(body)
        assert info.value.field == field, body
        assert info.value.to_dict()["field"] == field


async def test_preference_updates_are_validated_applied_and_reset(memory_app):
    user = _user()
    assert preferences_of(user) == {"channels": ["WEBSOCKET"], "webhook_url": None, "email": None, "default": True}
    invalid_before = PREFERENCE_UPDATES["invalid"]
    async with apply_notification_preferences.test_context() as prefs:
        await _set_preferences(prefs, user, {"channels": ["WEBSOCKET", "EMAIL"], "email": "ann@example.org"})
        assert notification_preferences[user]["channels"] == ["WEBSOCKET", "EMAIL"]
        # Bad updates never replace good preferences.
        await _set_preferences(prefs, user, {"channels": ["PIGEON"]})
        await prefs.put(b"{not json", key=user.encode())
        await _set_preferences(prefs, user, {"channels": ["WEBHOOK"], "webhook_url": "javascript:alert(1)"})
        assert PREFERENCE_UPDATES["invalid"] == invalid_before + 3
        stored = preferences_of(user)
        assert stored["channels"] == ["WEBSOCKET", "EMAIL"] and stored["email"] == "ann@example.org"
        assert stored["default"] is False
        # A tombstone resets to the defaults.
        await _set_preferences(prefs, user, None)
        assert notification_preferences.get(user) is None
        assert preferences_of(user)["default"] is True


# -- delivery ----------------------------------------------------------------------------------
async def test_default_preferences_record_the_websocket_feed_once(memory_app):
    user = _user()
    sent = _sent(user)
    async with deliver_notifications.test_context() as agent:
        await _put_event(agent, sent)
        await _put_event(agent, sent)  # redelivered
    deliveries = _deliveries(user)[sent.notification_id]
    assert list(deliveries) == ["WEBSOCKET"]
    assert deliveries["WEBSOCKET"]["status"] == "feed" and deliveries["WEBSOCKET"]["attempts"] == 1
    assert memory_app["dead"] == []


async def test_routing_follows_preferences_and_delivers_once_per_channel(memory_app, receiver):
    user, other = _user(), _user()
    first, second = _sent(user), _sent(user)
    untouched = _sent(other)
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent:
        await _set_preferences(prefs, user, {"channels": ["WEBSOCKET", "WEBHOOK"], "webhook_url": receiver.url})
        await _put_event(agent, first)
        await _put_event(agent, first)  # the same NotificationSent again (a replay after a crash)
        await _put_event(agent, untouched)  # default preferences: no webhook
        await _put_event(agent, second)
        await _put_event(agent, first)
    keys = [r["headers"]["Idempotency-Key"] for r in receiver.requests]
    assert keys == [first.notification_id, second.notification_id]
    request = receiver.requests[0]
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Cosmic-Notification-Id"] == first.notification_id
    assert request["body"]["notification_id"] == first.notification_id
    assert request["body"]["event_type"] == "NotificationSent" and request["body"]["user_id"] == user
    deliveries = _deliveries(user)
    assert set(deliveries[first.notification_id]) == {"WEBSOCKET", "WEBHOOK"}
    assert deliveries[first.notification_id]["WEBHOOK"]["status"] == "delivered"
    assert list(_deliveries(other)[untouched.notification_id]) == ["WEBSOCKET"]
    assert memory_app["dead"] == []


async def test_webhook_500_then_200_is_retried_and_delivered_once(memory_app, receiver):
    user = _user()
    sent = _sent(user)
    receiver.plan = [500]
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent:
        await _set_preferences(prefs, user, {"channels": ["WEBSOCKET", "WEBHOOK"], "webhook_url": receiver.url})
        await _put_event(agent, sent)
        await _put_event(agent, sent)
    assert [r["headers"]["Idempotency-Key"] for r in receiver.requests] == [sent.notification_id] * 2
    webhook = _deliveries(user)[sent.notification_id]["WEBHOOK"]
    assert webhook["status"] == "delivered" and webhook["attempts"] == 2
    # The websocket feed was recorded on the first attempt and not repeated by the retry.
    assert _deliveries(user)[sent.notification_id]["WEBSOCKET"]["attempts"] == 1
    assert memory_app["dead"] == []


async def test_webhook_always_503_is_dead_lettered_after_max_attempts(memory_app, receiver):
    user = _user()
    sent = _sent(user)
    receiver.plan = [503] * 10
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent:
        await _set_preferences(prefs, user, {"channels": ["WEBHOOK"], "webhook_url": receiver.url})
        await _put_event(agent, sent)
    assert len(receiver.requests) == 3  # COSMIC_MAX_ATTEMPTS, patched to 3
    [(origin, reason, attempts)] = memory_app["dead"]
    assert reason == "retries-exhausted" and attempts == 3
    assert codecs.for_topic("notifications").decode(origin.value) == sent  # the original record
    assert origin.key == user.encode()
    webhook = _deliveries(user)[sent.notification_id]["WEBHOOK"]
    assert webhook["status"] == "failed" and webhook["attempts"] == 3 and "503" in webhook["error"]


async def test_webhook_timeout_and_connection_refused_are_retried(memory_app, receiver):
    user = _user()
    sent = _sent(user)
    receiver.plan = ["slow"]  # longer than the 1 s timeout, then 200
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent:
        await _set_preferences(prefs, user, {"channels": ["WEBHOOK"], "webhook_url": receiver.url})
        await _put_event(agent, sent)
    assert _deliveries(user)[sent.notification_id]["WEBHOOK"]["attempts"] == 2
    assert memory_app["dead"] == []
    with pytest.raises(DeliveryFailed, match="unreachable"):
        await send_webhook(url=f"http://127.0.0.1:{_free_port()}/hook", event=sent, timeout_s=2)


async def test_webhook_4xx_is_dead_lettered_without_retries(memory_app, receiver):
    user = _user()
    sent = _sent(user)
    receiver.plan = [404]
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent:
        await _set_preferences(prefs, user, {"channels": ["WEBSOCKET", "WEBHOOK"], "webhook_url": receiver.url})
        await _put_event(agent, sent)
    assert len(receiver.requests) == 1
    [(_origin, reason, attempts)] = memory_app["dead"]
    assert reason == "delivery-rejected" and attempts == 1
    deliveries = _deliveries(user)[sent.notification_id]
    assert deliveries["WEBHOOK"]["status"] == "rejected"
    assert deliveries["WEBSOCKET"]["status"] == "feed"  # the other channel still delivered


async def test_http_status_classification(receiver):
    sent = _sent(_user())
    for status, error in ((429, DeliveryFailed), (502, DeliveryFailed), (408, DeliveryFailed),
                          (400, DeliveryRejected), (410, DeliveryRejected), (301, DeliveryRejected)):
        receiver.plan = [status]
        with pytest.raises(error) as info:
            await send_webhook(url=receiver.url, event=sent, timeout_s=2)
        assert info.value.status == status and info.value.channel == "WEBHOOK"
    receiver.plan = [204]
    assert await send_webhook(url=receiver.url, event=sent, timeout_s=2) == 204


async def test_email_is_disabled_without_smtp_and_sent_once_with_it(memory_app, smtp_sink, monkeypatch):
    sink, smtp_url = smtp_sink
    user = _user()
    quiet, loud = _sent(user), _sent(user, severity="ERROR")
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent:
        await _set_preferences(prefs, user, {"channels": ["EMAIL"], "email": "ann@example.org"})
        await _put_event(agent, quiet)
        assert _deliveries(user)[quiet.notification_id]["EMAIL"]["status"] == "disabled"
        monkeypatch.setattr(notifications, "settings",
                            dataclasses.replace(notifications.settings, smtp_url=smtp_url, smtp_from="ops@cosmic.example"))
        await _put_event(agent, loud)
        await _put_event(agent, loud)  # redelivered: no second email
        await _put_event(agent, quiet)  # recorded as disabled before: not sent now either
    assert len(sink.messages) == 1
    recipients, content = sink.messages[0]
    message = message_from_bytes(content)
    assert recipients == ["ann@example.org"]
    assert message["From"] == "ops@cosmic.example" and message["Subject"] == "[ERROR] Job job-1 completed"
    assert message["Message-ID"] == f"<{loud.notification_id}@cosmic-horizons>"
    assert _deliveries(user)[loud.notification_id]["EMAIL"]["status"] == "delivered"
    assert memory_app["dead"] == []


async def test_smtp_errors_are_classified(smtp_sink):
    _sink, smtp_url = smtp_sink
    sent = _sent(_user())
    with pytest.raises(DeliveryRejected) as info:
        await send_email(smtp_url=smtp_url, sender="ops@cosmic.example", recipient="bob@refused.example",
                         event=sent, timeout_s=5)
    assert info.value.status == 550
    with pytest.raises(DeliveryFailed):
        await send_email(smtp_url=f"smtp://127.0.0.1:{_free_port()}", sender="ops@cosmic.example",
                         recipient="bob@example.org", event=sent, timeout_s=5)
    target = SmtpTarget.from_url("smtps://mailer:p%40ss@mail.example?starttls=1")
    assert (target.port, target.implicit_tls, target.starttls, target.password) == (465, True, False, "p@ss")


async def test_a_notification_read_marks_it_read(memory_app):
    user = _user()
    sent = _sent(user)
    async with deliver_notifications.test_context() as agent:
        await _put_event(agent, sent)
        assert notification_status[user]["notifications"][-1]["read"] is False
        await _put_event(agent, _read(sent))
    [entry] = notification_status[user]["notifications"]
    assert entry["notification_id"] == sent.notification_id and entry["read"] is True and entry["read_at"]
    assert memory_app["dead"] == []
