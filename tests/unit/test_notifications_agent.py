"""Notifications without a broker: the deciding agent in Faust's test context on the memory
store (RabbitMQ replaced by a recording bridge), the delivery workers' handler against a real
aiohttp webhook receiver and a real SMTP sink (aiosmtpd) on 127.0.0.1, and the outcomes agent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from email import message_from_bytes

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

import agents.notifications as notifications
import app.worker.streams as streams
from agents.notifications import (
    OUTCOME_UPDATES,
    PREFERENCE_UPDATES,
    apply_notification_preferences,
    deliver_notifications,
    record_notification_outcomes,
)
from app.core.errors import DeliveryFailed, DeliveryRejected, InvalidPreferences
from app.core.models import NotificationRead, NotificationSent
from app.core.settings import Settings
from app.core.timeutil import utc_now
from app.core.webhook_signing import SIGNATURE_HEADER, user_secret, verify
from app.ops.worker_process import free_port
from app.worker.delivery import SmtpTarget, WebhookClient, send_email, webhook_body, webhook_headers
from app.worker.main import app, codecs
from app.worker.notification_delivery import NotificationDelivery
from app.worker.rabbit_bridge import RabbitBridge
from support.rabbit import RecordingBridge
from tables.notification_deliveries import OUTCOMES_PER_USER, notification_outcomes, notification_status
from tables.notification_preferences import notification_preferences, parse_preferences, preferences_of


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def memory_app_patches(monkeypatch):
    """Retries back off 10 ms; no SMTP server configured."""
    monkeypatch.setattr(streams, "backoff_delay", lambda attempt: 0.01)
    monkeypatch.setattr(notifications, "settings", dataclasses.replace(notifications.settings, smtp_url=""))


@pytest.fixture
def bridge(monkeypatch):
    fake = RecordingBridge()
    monkeypatch.setattr(RabbitBridge, "current", fake)
    return fake


class FakeMessage:
    def __init__(self, *, retries: int = 0) -> None:
        self.headers = {"x-retry-count": retries} if retries else {}


class OutcomeProducer:
    """The app's producer as the delivery workers use it: outcomes are kept."""

    def __init__(self) -> None:
        self.outcomes: list[dict] = []

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001, PLR0913
        assert topic.endswith("notification-outcomes") and key == json.loads(value)["user_id"].encode()
        self.outcomes.append(json.loads(value))


class FakeApp:
    def __init__(self) -> None:
        self.producer = OutcomeProducer()


SECRET_SETTINGS = dict(jwt_secret="unit-test-secret", webhook_timeout_seconds=1.0,
                       webhook_allowed_networks="127.0.0.0/8")


@pytest.fixture
async def delivery():
    service = NotificationDelivery(faust_app=FakeApp(), settings=Settings(**SECRET_SETTINGS))
    yield service
    await service.webhooks.close()


class Receiver:
    """A webhook receiver answering the statuses of ``plan`` in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.plan: list[int | str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append({"headers": dict(request.headers), "body": json.loads(raw), "raw": raw})
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


@pytest.fixture
def smtp_sink():
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
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


# -- deciding: the agent publishes one delivery message per channel ---------------------------------
async def test_default_preferences_record_the_websocket_feed_once(memory_app, bridge):
    user = _user()
    sent = _sent(user)
    async with deliver_notifications.test_context() as agent:
        await _put_event(agent, sent)
        await _put_event(agent, sent)  # redelivered
    deliveries = _deliveries(user)[sent.notification_id]
    assert list(deliveries) == ["WEBSOCKET"]
    assert deliveries["WEBSOCKET"]["status"] == "feed" and deliveries["WEBSOCKET"]["attempts"] == 1
    assert bridge.published == [] and memory_app["dead"] == []


async def test_an_entry_is_copied_before_it_is_changed_never_changed_where_it_is_stored(memory_app, bridge):
    user = _user()
    sent, other = _sent(user), _sent(user)
    async with deliver_notifications.test_context() as agent:
        await _put_event(agent, sent)
        await _put_event(agent, other)
    stored = notification_status[user]["notifications"]
    before = json.dumps(stored)
    entries = notifications._load_entries(user)
    entry = notifications._status_entry(entries, _read(sent))
    entry["read"] = True
    entry["deliveries"]["EMAIL"] = {"status": "pending"}
    assert json.dumps(notification_status[user]["notifications"]) == before  # the stored value is untouched
    assert entries[0] is entry and entries[1] is stored[1]  # only the changed entry was copied


async def test_routing_follows_preferences_and_queues_once_per_channel(memory_app, bridge, monkeypatch):
    user, other = _user(), _user()
    first, second = _sent(user), _sent(user)
    untouched = _sent(other)
    hook = "https://hooks.example.org/cosmic"
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent, \
            record_notification_outcomes.test_context() as outcomes:
        await _set_preferences(prefs, user, {"channels": ["WEBSOCKET", "WEBHOOK"], "webhook_url": hook,
                                             "signing_salt": "a" * 32})
        await _put_event(agent, first)
        await _put_event(agent, first)  # redelivered while this process lives: not again
        assert [b["notification_id"] for b in bridge.bodies()] == [first.notification_id]
        # Pending without an outcome, handled again after a crash (a process that did not
        # publish it): published again.
        monkeypatch.setattr(notifications, "_queued", notifications._Queued())
        await _put_event(agent, first)
        assert [b["notification_id"] for b in bridge.bodies()] == [first.notification_id] * 2
        await outcomes.put(json.dumps({"notification_id": first.notification_id, "channel": "WEBHOOK",
                                       "user_id": user, "status": "delivered", "attempts": 1, "at": 1,
                                       "http_status": 200}).encode(), key=user.encode())
        monkeypatch.setattr(notifications, "_queued", notifications._Queued())
        await _put_event(agent, first)  # an outcome is known: not again
        await _put_event(agent, untouched)  # default preferences: no webhook
        await _put_event(agent, second)
    assert [(exchange, key) for exchange, key, _ in bridge.published] == [("", "notification-delivery")] * 3
    assert [m.properties.message_id for _, _, m in bridge.published] == [f"{first.notification_id}:WEBHOOK"] * 2 + [
        f"{second.notification_id}:WEBHOOK"]
    body = bridge.bodies()[-1]
    assert body["target"] == hook and body["signing_salt"] == "a" * 32 and body["user_id"] == user
    assert body["channel"] == "WEBHOOK" and body["event"]["notification_id"] == second.notification_id
    assert bridge.published[-1][2].properties.delivery_mode == 2  # persistent
    deliveries = _deliveries(user)
    assert set(deliveries[first.notification_id]) == {"WEBSOCKET", "WEBHOOK"}
    assert deliveries[second.notification_id]["WEBHOOK"]["status"] == "pending"
    assert list(_deliveries(other)[untouched.notification_id]) == ["WEBSOCKET"]
    assert memory_app["dead"] == []


async def test_email_is_disabled_without_smtp_and_queued_with_it(memory_app, bridge, monkeypatch):
    user = _user()
    quiet, loud = _sent(user), _sent(user, severity="ERROR")
    async with apply_notification_preferences.test_context() as prefs, \
            deliver_notifications.test_context() as agent:
        await _set_preferences(prefs, user, {"channels": ["EMAIL"], "email": "ann@example.org"})
        await _put_event(agent, quiet)
        assert _deliveries(user)[quiet.notification_id]["EMAIL"]["status"] == "disabled"
        monkeypatch.setattr(notifications, "settings",
                            dataclasses.replace(notifications.settings, smtp_url="smtp://127.0.0.1:25"))
        await _put_event(agent, loud)
        await _put_event(agent, quiet)  # recorded as disabled before: not queued now either
    assert [(b["channel"], b["target"]) for b in bridge.bodies()] == [("EMAIL", "ann@example.org")]
    assert _deliveries(user)[loud.notification_id]["EMAIL"]["status"] == "pending"


async def test_preference_updates_keep_the_signing_salt_until_rotated(memory_app):
    user = _user()
    async with apply_notification_preferences.test_context() as prefs:
        await _set_preferences(prefs, user, {"channels": ["WEBHOOK"], "webhook_url": "https://h.example/x",
                                             "signing_salt": "b" * 32})
        await _set_preferences(prefs, user, {"channels": ["WEBSOCKET", "WEBHOOK"], "webhook_url": "https://h.example/y"})
        assert notification_preferences[user]["signing_salt"] == "b" * 32
        await _set_preferences(prefs, user, {"channels": ["WEBHOOK"], "webhook_url": "https://h.example/y",
                                             "signing_salt": "c" * 32})
        assert notification_preferences[user]["signing_salt"] == "c" * 32
        before = PREFERENCE_UPDATES["invalid"]
        await _set_preferences(prefs, user, {"channels": ["WEBSOCKET"], "signing_salt": 7})
        assert PREFERENCE_UPDATES["invalid"] == before + 1 and notification_preferences[user]["signing_salt"] == "c" * 32


# -- delivering: the delivery workers' handler ----------------------------------------------------------
def _body(sent: NotificationSent, *, url: str, salt: str | None = "d" * 32, channel: str = "WEBHOOK") -> dict:
    from app.core.validation import event_to_json

    return {"notification_id": sent.notification_id, "channel": channel, "user_id": sent.user_id, "target": url,
            "signing_salt": salt, "queued_at": 0, "event": event_to_json(sent)}


async def test_a_delivery_is_signed_and_its_outcome_reported(delivery, receiver):
    sent = _sent(_user())
    await delivery.deliver(_body(sent, url=receiver.url), FakeMessage())
    [request] = receiver.requests
    headers = request["headers"]
    assert headers["Idempotency-Key"] == headers["X-Cosmic-Notification-Id"] == sent.notification_id
    assert headers["Content-Type"] == "application/json" and request["body"]["notification_id"] == sent.notification_id
    from app.core.webhook_signing import master_key

    secret = user_secret(key=master_key(delivery.settings), user_id=sent.user_id, salt="d" * 32)
    assert verify(secret=secret, body=request["raw"], header=headers[SIGNATURE_HEADER])
    assert not verify(secret=secret, body=request["raw"] + b" ", header=headers[SIGNATURE_HEADER])
    [outcome] = delivery.faust_app.producer.outcomes
    assert (outcome["status"], outcome["attempts"], outcome["http_status"]) == ("delivered", 1, 200)
    # The verification example receivers are given (docs/notifications.md) accepts it too.
    verify_example = _documented_verifier()
    assert verify_example(secret, request["raw"], headers[SIGNATURE_HEADER])
    assert not verify_example(secret, request["raw"].replace(b"job-1", b"job-2"), headers[SIGNATURE_HEADER])
    assert not verify_example("whsec_" + "0" * 64, request["raw"], headers[SIGNATURE_HEADER])


def _documented_verifier():  # noqa: ANN202
    """``verify_cosmic_signature`` from the python block of docs/notifications.md (at most 10 lines)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify_cosmic_signature" in b]
    assert len(block.strip().splitlines()) <= 10, "the example must stay short"
    namespace: dict = {}
    exec(compile(block, "docs/notifications.md", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify_cosmic_signature"]


async def test_transient_failures_report_retrying_and_raise(delivery, receiver):
    sent = _sent(_user())
    receiver.plan = [503, "slow"]
    with pytest.raises(DeliveryFailed, match="503") as info:
        await delivery.deliver(_body(sent, url=receiver.url), FakeMessage())
    assert info.value.reason == "http-503"
    with pytest.raises(DeliveryFailed, match="did not answer"):
        await delivery.deliver(_body(sent, url=receiver.url), FakeMessage(retries=1))
    await delivery.deliver(_body(sent, url=receiver.url), FakeMessage(retries=2))
    statuses = [(o["status"], o["attempts"], o["reason"]) for o in delivery.faust_app.producer.outcomes]
    assert statuses == [("retrying", 1, "http-503"), ("retrying", 2, "timeout"), ("delivered", 3, None)]
    with pytest.raises(DeliveryFailed, match="unreachable"):
        await delivery.deliver(_body(sent, url=f"http://127.0.0.1:{free_port()}/hook"), FakeMessage())


async def test_refusals_and_dead_letters_report_failed(delivery, receiver):
    sent = _sent(_user())
    receiver.plan = [404]
    with pytest.raises(DeliveryRejected) as info:
        await delivery.deliver(_body(sent, url=receiver.url), FakeMessage())
    assert info.value.reason == "http-404"
    assert delivery.faust_app.producer.outcomes == []  # reported by the dead-letter hook
    await delivery._dead_lettered(_body(sent, url=receiver.url), FakeMessage(), "http-404", info.value)
    await delivery._dead_lettered(_body(sent, url=receiver.url), FakeMessage(retries=6), "retries-exhausted",
                                  DeliveryFailed("webhook x did not answer", channel="WEBHOOK", reason="timeout"))
    failed = [(o["status"], o["attempts"], o["reason"]) for o in delivery.faust_app.producer.outcomes]
    assert failed == [("failed", 1, "http-404"), ("failed", 7, "retries-exhausted (timeout)")]


async def test_internal_addresses_are_refused_at_connect_time(receiver):
    closed = NotificationDelivery(faust_app=FakeApp(), settings=Settings(jwt_secret="s"))
    sent = _sent(_user())
    try:
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost"),
                    receiver.url.replace("127.0.0.1", "[::ffff:127.0.0.1]")):
            with pytest.raises(DeliveryRejected) as info:
                await closed.deliver(_body(sent, url=url), FakeMessage())
            assert info.value.reason == "forbidden-address", url
    finally:
        await closed.webhooks.close()
    assert receiver.requests == []


async def test_http_status_classification(receiver):
    client = WebhookClient(settings=Settings(**SECRET_SETTINGS))
    sent = _sent(_user())
    body, headers = webhook_body(sent), webhook_headers(notification_id=sent.notification_id)
    try:
        for status, error in ((429, DeliveryFailed), (502, DeliveryFailed), (408, DeliveryFailed),
                              (400, DeliveryRejected), (410, DeliveryRejected), (301, DeliveryRejected)):
            receiver.plan = [status]
            with pytest.raises(error) as info:
                await client.post(url=receiver.url, body=body, headers=headers)
            assert info.value.status == status and info.value.channel == "WEBHOOK"
        receiver.plan = [204]
        assert await client.post(url=receiver.url, body=body, headers=headers) == 204
    finally:
        await client.close()


async def test_email_delivery_sends_once_per_message(smtp_sink):
    sink, smtp_url = smtp_sink
    service = NotificationDelivery(faust_app=FakeApp(), settings=Settings(smtp_url=smtp_url,
                                                                          smtp_from="ops@cosmic.example"))
    loud = _sent(_user(), severity="ERROR")
    await service.deliver(_body(loud, url="ann@example.org", channel="EMAIL"), FakeMessage())
    recipients, content = sink.messages[0]
    message = message_from_bytes(content)
    assert recipients == ["ann@example.org"] and len(sink.messages) == 1
    assert message["From"] == "ops@cosmic.example" and message["Subject"] == "[ERROR] Job job-1 completed"
    assert message["Message-ID"] == f"<{loud.notification_id}@cosmic-horizons>"
    assert service.faust_app.producer.outcomes[0]["status"] == "delivered"
    with pytest.raises(DeliveryRejected) as info:
        await service.deliver({"channel": "SMS"}, FakeMessage())
    assert info.value.reason == "malformed"


# -- outcomes -----------------------------------------------------------------------------------------
async def test_outcomes_never_go_backwards_and_are_bounded(memory_app):
    user = _user()

    def outcome(nid: str, status: str, attempts: int) -> bytes:
        return json.dumps({"notification_id": nid, "channel": "WEBHOOK", "user_id": user, "status": status,
                           "attempts": attempts, "at": attempts}).encode()

    async with record_notification_outcomes.test_context() as agent:
        for status, attempts in (("retrying", 1), ("retrying", 2), ("retrying", 1), ("delivered", 3),
                                 ("retrying", 4)):
            await agent.put(outcome("n1", status, attempts), key=user.encode())
        stale = OUTCOME_UPDATES["stale"]
        await agent.put(b"{not json", key=user.encode())
        for i in range(OUTCOMES_PER_USER + 5):
            await agent.put(outcome(f"m{i}", "delivered", 1), key=user.encode())
        assert OUTCOME_UPDATES["stale"] == stale
    stored = notification_outcomes[user]["outcomes"]
    assert len(stored) == OUTCOMES_PER_USER and "m0:WEBHOOK" not in stored
    assert f"m{OUTCOMES_PER_USER + 4}:WEBHOOK" in stored


async def test_smtp_errors_are_classified(smtp_sink):
    _sink, smtp_url = smtp_sink
    sent = _sent(_user())
    with pytest.raises(DeliveryRejected) as info:
        await send_email(smtp_url=smtp_url, sender="ops@cosmic.example", recipient="bob@refused.example",
                         event=sent, timeout_s=5)
    assert info.value.status == 550
    with pytest.raises(DeliveryFailed):
        await send_email(smtp_url=f"smtp://127.0.0.1:{free_port()}", sender="ops@cosmic.example",
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
