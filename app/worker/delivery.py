"""Sending one notification on one channel: webhooks (HTTP POST) and email (SMTP).

Each sender either returns (delivered), raises :class:`~app.core.errors.DeliveryFailed` (a
:class:`~app.core.errors.RetriableError`: connection refused or reset, timeout, HTTP 5xx, 408,
425 or 429, SMTP 4xx, a dropped SMTP connection) or :class:`~app.core.errors.DeliveryRejected`
(retrying cannot help: HTTP 3xx/4xx, a URL aiohttp cannot use, SMTP 5xx such as an unknown
recipient or failed authentication). No library exception escapes.

A webhook POST carries the event as JSON (:func:`app.core.validation.event_to_json`) with
``Content-Type: application/json``, ``X-Cosmic-Notification-Id`` and ``Idempotency-Key``
(both the notification id: a receiver that sees the same key twice should ignore the
second POST) and ``X-Cosmic-Signature`` (:mod:`app.core.webhook_signing`). Redirects are not
followed; every POST goes through the worker's one :class:`WebhookClient`, which connects
only to addresses :mod:`app.core.net_guard` allows. An email carries ``Message-ID`` derived from the
notification id, for the same reason.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp

from app.core.errors import DeliveryFailed, DeliveryRejected
from app.core.models import NotificationEvent
from app.core.net_guard import ForbiddenAddress, GuardedResolver, check_literal
from app.core.settings import Settings, redact_url
from app.core.validation import event_to_json
from app.core.webhook_signing import SIGNATURE_HEADER

USER_AGENT = "cosmic-horizons-events/notifications"
#: HTTP answers that mean "try again later".
RETRIABLE_HTTP = frozenset({408, 425, 429})
#: How much of a receiver's answer is kept in error messages.
_BODY_EXCERPT = 200


def webhook_headers(*, notification_id: str, signature: str | None = None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Cosmic-Notification-Id": notification_id,
        "Idempotency-Key": notification_id,
        "User-Agent": USER_AGENT,
    }
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return headers


def webhook_body(event: NotificationEvent) -> bytes:
    """The bytes a webhook POST carries (and its signature covers)."""
    return json.dumps(event_to_json(event), separators=(",", ":")).encode()


class WebhookClient:
    """The worker's one HTTP session for webhooks: connection limits and timeouts from
    settings, connections reused, and only to addresses :mod:`app.core.net_guard` allows (checked
    again at connect time, on the addresses actually connected to)."""

    def __init__(self, *, settings: Settings) -> None:
        self.allowed = settings.webhook_networks
        self._timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds,
                                              connect=settings.webhook_connect_timeout_seconds)
        self._limits = (settings.webhook_max_connections, settings.webhook_max_connections_per_host)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            limit, per_host = self._limits
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=per_host,
                                             resolver=GuardedResolver(allowed=self.allowed))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, *, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body`` to ``url``; the 2xx status on success (see the module doc for errors)."""
        channel = "WEBHOOK"
        where = redact_url(url)
        timeout_s = self._timeout.total
        try:
            check_literal(urlsplit(url).hostname or "", allowed=self.allowed)
            async with self._open().post(url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                if 200 <= status < 300:
                    return status
                excerpt = (await response.text(errors="replace"))[:_BODY_EXCERPT]
        except ForbiddenAddress as exc:
            raise DeliveryRejected(f"webhook {where} refused: {exc}", channel=channel, reason="forbidden-address") from exc
        except asyncio.TimeoutError as exc:
            raise DeliveryFailed(f"webhook {where} did not answer within {timeout_s:g} s", channel=channel,
                                 reason="timeout") from exc
        except aiohttp.InvalidURL as exc:
            raise DeliveryRejected(f"webhook URL {where} is not usable: {exc}", channel=channel,
                                   reason="invalid-url") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenAddress):
                raise DeliveryRejected(f"webhook {where} refused: {exc.os_error}", channel=channel,
                                       reason="forbidden-address") from exc
            raise DeliveryFailed(f"webhook {where} unreachable: {type(exc).__name__}: {exc}", channel=channel,
                                 reason="unreachable") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryFailed(f"webhook {where} unreachable: {type(exc).__name__}: {exc}", channel=channel,
                                 reason="unreachable") from exc
        message = f"webhook {where} answered {status}: {excerpt!r}"
        if status >= 500 or status in RETRIABLE_HTTP:
            raise DeliveryFailed(message, channel=channel, status=status, reason=f"http-{status}")
        raise DeliveryRejected(message, channel=channel, status=status, reason=f"http-{status}")


@dataclass(frozen=True, kw_only=True)
class SmtpTarget:
    """Where and how to reach the SMTP server (parsed from ``COSMIC_SMTP_URL``)."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> "SmtpTarget":
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise DeliveryRejected(f"SMTP URL {redact_url(url)} must be smtp://host[:port] or smtps://host[:port]",
                                   channel="EMAIL")
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["0"])[-1].lower() in ("1", "true", "yes", "on")
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname, port=parts.port or (465 if implicit else 25), implicit_tls=implicit,
            starttls=starttls and not implicit,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def email_message(*, event: NotificationEvent, sender: str, recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[{event.severity}] {event.title}"
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(event.timestamp.timestamp(), usegmt=True)
    message["Message-ID"] = f"<{event.notification_id}@cosmic-horizons>"
    message["X-Cosmic-Notification-Id"] = event.notification_id
    lines = [event.body]
    if event.job_id:
        lines += ["", f"Job: {event.job_id}"]
    message.set_content("\n".join(lines) + "\n")
    return message


def _send_email_blocking(*, target: SmtpTarget, message: EmailMessage, timeout_s: float) -> None:
    smtp_class: Any = smtplib.SMTP_SSL if target.implicit_tls else smtplib.SMTP
    kwargs: dict[str, Any] = {"timeout": timeout_s}
    if target.implicit_tls:
        kwargs["context"] = ssl.create_default_context()
    with smtp_class(target.host, target.port, **kwargs) as smtp:
        if target.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if target.username:
            smtp.login(target.username, target.password or "")
        smtp.send_message(message)


async def send_email(
    *, smtp_url: str, sender: str, recipient: str, event: NotificationEvent, timeout_s: float
) -> None:
    """Send ``event`` as an email through ``smtp_url`` (smtplib, in a thread)."""
    channel = "EMAIL"
    target = SmtpTarget.from_url(smtp_url)
    where = f"{target.host}:{target.port}"
    message = email_message(event=event, sender=sender, recipient=recipient)
    try:
        await asyncio.to_thread(_send_email_blocking, target=target, message=message, timeout_s=timeout_s)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        error = DeliveryFailed if codes and all(400 <= c < 500 for c in codes) else DeliveryRejected
        raise error(f"SMTP {where} refused {recipient}: {exc.recipients}", channel=channel,
                    status=codes[0] if codes else None, reason="smtp-recipient-refused") from exc
    except smtplib.SMTPResponseException as exc:  # sender refused, data error, auth failed, …
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        error = DeliveryFailed if 400 <= exc.smtp_code < 500 else DeliveryRejected
        raise error(f"SMTP {where} answered {exc.smtp_code}: {text}", channel=channel, status=exc.smtp_code,
                    reason=f"smtp-{exc.smtp_code}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryRejected(f"SMTP {where}: {exc}", channel=channel, reason="smtp-not-supported") from exc
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, disconnected, TLS
        raise DeliveryFailed(f"SMTP {where} unavailable: {type(exc).__name__}: {exc}", channel=channel,
                             reason="smtp-unavailable") from exc
