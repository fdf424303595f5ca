"""The reply path on RabbitMQ (:class:`~paota.core.replies.ReplyPath`): one server-named,
exclusive, auto-deleted queue per sending process, consumed without acks on a channel of the
connection pool; replies reach it through the default exchange, routing key = the queue's name,
published like any message (confirmed, ``mandatory``: a reply to a queue that is gone comes back
as unroutable, which the worker drops). The queue goes away with its connection, and the replies
iterator ends then (the senders waiting on it learn that their replies are lost)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from paota.brokers.amqp.connection import ConnectionPool, call_aiormq, close_quietly
from paota.brokers.amqp.errors import broker_errors
from paota.core.errors import BrokerError

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

__all__ = ["open_replies"]

logger = logging.getLogger("paota.brokers.amqp")


async def open_replies(
    pool: ConnectionPool, *, timeout_s: float
) -> tuple[str, AsyncIterator[bytes]]:
    """Declare this process's reply queue and consume it: its name and the replies."""
    loop = asyncio.get_running_loop()
    try:
        channel = await pool.open_channel(loop.time() + timeout_s)
    except TimeoutError as exc:
        raise BrokerError(
            f"cannot open a reply queue: no connection to RabbitMQ at {pool.shown_url} within "
            f"{timeout_s:g} s"
        ) from exc
    received: asyncio.Queue[bytes | None] = asyncio.Queue()
    channel.closing.add_done_callback(lambda _: received.put_nowait(None))

    async def on_message(message: DeliveredMessage) -> None:
        received.put_nowait(message.body)

    try:
        with broker_errors("declaring the reply queue"):
            declared = await call_aiormq(
                channel.queue_declare("", exclusive=True, auto_delete=True), timeout_s
            )
            queue = declared.queue
            if not isinstance(queue, str) or not queue:
                raise BrokerError("RabbitMQ did not name the reply queue it declared")
            await call_aiormq(channel.basic_consume(queue, on_message, no_ack=True), timeout_s)
    except BaseException:
        await close_quietly(channel)
        raise
    logger.debug("replies come to queue %r", queue)

    async def replies() -> AsyncIterator[bytes]:
        try:
            while (body := await received.get()) is not None:
                yield body
        finally:
            await close_quietly(channel)

    return queue, replies()
