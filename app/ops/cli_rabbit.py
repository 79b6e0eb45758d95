"""``cosmic rabbit``: the bridge's RabbitMQ queues and the ``job-dlq`` dead letters.

* ``status`` — every queue of the vhost: messages, consumers, arguments (management API,
  falling back to AMQP passive declares of the topology's queues).
* ``dlq peek [--limit N] [--json]`` — the first N dead letters, left in place.
* ``dlq redrive [--count N] [--dry-run]`` — move dead letters back to their original
  exchange and routing key (``x-original-*`` headers, else RabbitMQ's ``x-death``), with
  the retry count reset; each one is acked in ``job-dlq`` only after RabbitMQ confirmed the
  republished copy.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from app.core.errors import CosmicError
from app.core.settings import Settings
from app.worker.rabbit_topology import DLQ, JOB_EVENTS, all_queue_arguments, management_get

ERROR_HEADERS = ("x-error-reason", "x-error-class", "x-error-message", "x-original-queue",
                 "x-last-error-class", "x-last-error-message")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _management_queues(settings: Settings) -> list[dict] | None:
    return management_get(settings.rabbitmq_url, "")


def original_route(headers: dict[str, Any]) -> tuple[str, str] | None:
    """(exchange, routing key) a dead letter came from, or None when unknown."""
    key = headers.get("x-original-routing-key")
    exchange = headers.get("x-original-exchange")
    if key:
        return _plain(exchange or JOB_EVENTS), _plain(key)
    deaths = headers.get("x-death") or []
    if deaths:
        first = deaths[-1] if isinstance(deaths, list) else deaths  # oldest death is last
        keys = first.get("routing-keys") or []
        if keys:
            return _plain(first.get("exchange") or ""), _plain(keys[0])
    return None


async def _connect(settings: Settings):  # noqa: ANN202
    import aio_pika

    try:
        return await aio_pika.connect(settings.rabbitmq_url, timeout=10)
    except Exception as exc:  # noqa: BLE001
        raise CosmicError(f"RabbitMQ at {settings.rabbitmq_url_redacted} is unreachable: {type(exc).__name__}") from None


async def _status_amqp(settings: Settings) -> list[dict]:
    connection = await _connect(settings)
    rows = []
    try:
        for name, arguments in all_queue_arguments(queue_type=settings.rabbitmq_queue_type,
                                                   retry_delays=settings.retry_delays).items():
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                rows.append({"name": name, "messages": result.message_count,
                             "consumers": result.consumer_count, "arguments": arguments})
            except Exception:  # noqa: BLE001 - missing queue closes the channel
                rows.append({"name": name, "messages": None, "consumers": None, "arguments": "(missing)"})
    finally:
        await connection.close()
    return rows


async def _peek(settings: Settings, limit: int) -> list[dict]:
    connection = await _connect(settings)
    out = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(DLQ, passive=True)
        for _ in range(limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            out.append({
                "message_id": message.message_id, "type": message.type,
                "correlation_id": message.correlation_id,
                "route": original_route(dict(message.headers or {})),
                "headers": _plain(dict(message.headers or {})),
                "body": message.body.decode(errors="replace")[:2000],
            })
        # closing the channel without acking leaves every peeked message in job-dlq
    finally:
        await connection.close()
    return out


async def _redrive(settings: Settings, count: int | None, dry_run: bool) -> tuple[int, int]:
    import aio_pika

    connection = await _connect(settings)
    moved = skipped = 0
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(DLQ, passive=True)
        held = []
        while count is None or moved + skipped < count:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = dict(message.headers or {})
            route = original_route(headers)
            if route is None or dry_run:
                skipped += route is None
                moved += route is not None
                held.append(message)
                continue
            for name in ERROR_HEADERS + ("x-death", "x-original-routing-key", "x-original-exchange"):
                headers.pop(name, None)
            headers["x-retry-count"] = 0
            headers["x-redriven"] = True
            exchange_name, routing_key = route
            exchange = channel.default_exchange if exchange_name == "" else await channel.get_exchange(exchange_name, ensure=False)
            await exchange.publish(aio_pika.Message(
                body=message.body, headers=headers, content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message.message_id,
                correlation_id=message.correlation_id, type=message.type, timestamp=message.timestamp,
                app_id=message.app_id,
            ), routing_key=routing_key)
            await message.ack()
            moved += 1
        for message in held:
            await message.nack(requeue=True)
    finally:
        await connection.close()
    return moved, skipped


@click.group("rabbit", help="RabbitMQ: the bridge's queues and the job-dlq dead letters.")
def rabbit() -> None:
    pass


@rabbit.command("status", help="Queues of the vhost: messages, consumers, arguments.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue.")
def status(as_json: bool) -> None:
    settings = Settings.from_env()
    rows = _management_queues(settings)
    if rows is not None:
        rows = [{"name": q["name"], "messages": q.get("messages", 0), "consumers": q.get("consumers", 0),
                 "arguments": q.get("arguments", {})} for q in rows]
    else:
        try:
            rows = asyncio.run(_status_amqp(settings))
        except CosmicError as exc:
            _fail(str(exc))
    click.echo(f"RabbitMQ {settings.rabbitmq_url_redacted}")
    for row in sorted(rows, key=lambda r: r["name"]):
        if as_json:
            click.echo(json.dumps(row, sort_keys=True))
        else:
            args = " ".join(f"{k}={v}" for k, v in sorted(row["arguments"].items())) \
                if isinstance(row["arguments"], dict) else row["arguments"]
            click.echo(f"{row['name']:<40} messages={row['messages']} consumers={row['consumers']}  {args}")


@rabbit.group("dlq", help="The job-dlq dead letters.")
def dlq() -> None:
    pass


@dlq.command("peek", help="Show the first dead letters without removing them.")
@click.option("--limit", default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def peek(limit: int, as_json: bool) -> None:
    settings = Settings.from_env()
    try:
        items = asyncio.run(_peek(settings, limit))
    except CosmicError as exc:
        _fail(str(exc))
    for item in items:
        if as_json:
            click.echo(json.dumps(item, sort_keys=True))
        else:
            h = item["headers"]
            click.echo(f"{item['message_id']} {item['type']} route={item['route']} "
                       f"reason={h.get('x-error-reason', (h.get('x-death') or [{}])[0].get('reason', '?'))} "
                       f"error={h.get('x-error-class', '')}: {h.get('x-error-message', '')} "
                       f"retries={h.get('x-retry-count', 0)} queue={h.get('x-original-queue', '')}")
    click.echo(f"{len(items)} dead letter(s) shown", err=True)


@dlq.command("redrive", help="Republish dead letters to their original routing key.")
@click.option("--count", type=int, default=None, help="At most this many (default: all).")
@click.option("--dry-run", is_flag=True, help="Count what would move; change nothing.")
def redrive(count: int | None, dry_run: bool) -> None:
    settings = Settings.from_env()
    try:
        moved, skipped = asyncio.run(_redrive(settings, count, dry_run))
    except CosmicError as exc:
        _fail(str(exc))
    verb = "would redrive" if dry_run else "redriven"
    click.echo(f"{verb}: {moved}; left in job-dlq without a known route: {skipped}")


if __name__ == "__main__":
    rabbit()
