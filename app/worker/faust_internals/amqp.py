"""Publishing many messages on an aiormq confirm channel at once, written against aiormq 7.2.4
(:data:`app.worker.faust_internals.PINNED`, checked when a worker starts).

aiormq's ``Channel.basic_publish`` does per message: an ``asyncio.timeout``, the channel's lock,
a frame marshalled and queued for the writer task on its own, a confirmation future; the
bridge added a task (a bounded wait) and a semaphore slot. 353–360 µs of CPU per message here,
about 2,300 messages/s on an idle event loop (docs/profiles.md, "the bridge's floor").
:func:`publish_batch` does what ``basic_publish`` does before its wait, for a list of messages
under one lock hold, and queues all their frames as one write: the same frames, delivery tags
and confirmation bookkeeping (``confirmations``, ``message_id_delivery_tag`` for returned
messages), so aiormq's frame readers resolve each message's future exactly as for its own
publishes (an ack, a returned message, a nack, or the channel's close).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Sequence

import aiormq
from aiormq import spec
from aiormq.abc import ChannelFrame
from pamqp.header import ContentHeader

def _forget(channel: Any, message_id: str, delivery_tag: int, _: asyncio.Future) -> None:
    if channel.message_id_delivery_tag.get(message_id) == delivery_tag:
        channel.message_id_delivery_tag.pop(message_id)


async def publish_batch(
    channel: aiormq.abc.AbstractChannel,
    messages: Sequence[tuple[str, str, bytes, spec.Basic.Properties]],
    *, mandatory: bool = True,
) -> list[asyncio.Future]:
    """Queue ``(exchange, routing_key, body, properties)`` publishes on the confirm ``channel``
    in order, as one write; return each one's confirmation future (a ``Basic.Ack``, a returned
    ``DeliveredMessage`` when ``mandatory`` and unroutable, or an exception). Every message needs a
    ``message_id`` (returns are matched by it)."""
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    if not channel.publisher_confirms:
        raise ValueError("publish_batch needs a channel with publisher confirms")
    frames: list[Any] = []
    for exchange, routing_key, body, properties in messages:
        if not properties.message_id:
            raise ValueError("publish_batch: every message needs a message_id")
        frames.append(spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory))
        frames.append(ContentHeader(properties=properties, body_size=len(body)))
        frames.extend(channel._split_body(body))
    # Marshalled before any delivery tag is taken: a message that does not marshal raises here,
    # with the channel's tags still matching what the broker counted.
    payload = ChannelFrame.marshall(frames=frames, channel_number=channel.number)
    futures: list[asyncio.Future] = []
    async with channel.lock:
        # Queued first: cancelled while the queue is full, nothing is sent and no tag is taken.
        # Once ``put`` returns, the tags are taken with no await in between, so the frame reader
        # cannot see an ack before its future is registered (aiormq's own publish registers,
        # then queues, under the same lock).
        await channel.write_queue.put(payload)
        for _exchange, _routing_key, _body, properties in messages:
            channel.delivery_tag += 1
            delivery_tag = channel.delivery_tag
            confirmation = channel.create_future()
            channel.confirmations[delivery_tag] = confirmation
            channel.message_id_delivery_tag[properties.message_id] = delivery_tag
            confirmation.add_done_callback(partial(_forget, channel, properties.message_id, delivery_tag))
            futures.append(confirmation)
    return futures
